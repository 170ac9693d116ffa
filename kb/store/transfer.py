"""Move a store to another database (`kb migrate-store --to postgresql://…`): every table, ids kept, all or nothing.

What moves is everything that is state (kb.store.base.TRANSFER_TABLES): pages and the raw cache, articles with
their ids (so `/article/N` links and near-duplicate groups stay valid), sections and their markup, boilerplate
sets, the change and crawl logs, users with their password hashes, sessions, API tokens (hashes, revoked state,
last use), the audit log, sign-in attempts, the query log and FAQ records (articles of kind "faq"). What does not
move is derived: the search index, which the caller rebuilds on the target (`kb reindex`).

The source is read inside one transaction (a consistent snapshot: on SQLite, writers wait until it ends) and the
target is written inside one, checked by counting every table before it commits: a failure leaves the target as
it was. Only the interface's migration methods are used, so any Store can be the source or the target.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from kb.errors import KBError
from kb.store.base import TRANSFER_TABLES, Store

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def shown_url(url: str) -> str:
    """`url` safe to print: its password (in the user part or a `password=` parameter) replaced by ***."""
    from kb.store.postgres_pool import redact

    parts = urlsplit(redact(url))
    if not parts.query:
        return parts.geturl()
    query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return parts._replace(query=urlencode(query, safe="*")).geturl()


def describe(counts: dict[str, int]) -> str:
    """"articles 12, users 2" for the tables that hold rows, in TRANSFER_TABLES order."""
    return ", ".join(f"{t} {counts[t]}" for t in TRANSFER_TABLES if counts.get(t))


def copy_store(source: Store, target: Store, *, force: bool = False, progress: Progress | None = None,
               batch: int = 1000) -> dict[str, int]:
    """Copy every row of `source` into `target`; rows per table as counted on the target before it commits.

    Refuses (KBError, nothing written) a target that holds data unless `force`, which replaces it.
    """
    with source.transaction(), target.transaction():
        counts = source.transfer_counts()
        found = {t: n for t, n in target.transfer_counts().items() if n}
        if found and not force:
            raise KBError(f"The target already holds data ({describe(found)}); nothing was copied.",
                          "Migrate into an empty database, or pass --force to replace what it holds.")
        if found:
            log.warning("Replacing what the target held: %s.", describe(found))
            target.clear_for_import()
        total, done = sum(counts.values()), 0
        for table in TRANSFER_TABLES:
            for rows in source.export_rows(table, batch=batch):
                target.import_rows(table, rows)
                done += len(rows)
                if progress is not None:
                    progress(done, total)
        target.finish_import()
        copied = target.transfer_counts()
        if copied != counts:
            wrong = {t: (counts[t], copied.get(t)) for t in counts if copied.get(t) != counts[t]}
            raise KBError(f"The copy does not match the source (table: source rows, copied rows): {wrong}; "
                          "nothing was kept.", "Run the migration again; if it persists, report it.")
    return copied


def migrate_data_dir(store_path: Path, url: str, *, force: bool = False,
                     progress: Progress | None = None) -> dict[str, int]:
    """Copy the data directory's SQLite store at `store_path` into the PostgreSQL database at `url`."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise KBError(f"--to must be a postgresql:// URL, not {shown_url(url)!r}.",
                      "Pass postgresql://USER:PASS@HOST:PORT/DB of an empty database that USER owns.")
    if not Path(store_path).is_file():
        raise KBError(f"There is no SQLite store to migrate at {store_path}.",
                      "Pass the data directory that holds kb.sqlite3 with --data-dir (or KB_DATA_DIR).")
    from kb.store import open_store

    with open_store(store_path) as source, open_store(url) as target:
        copied = copy_store(source, target, force=force, progress=progress)
    log.info("Migrated %s to %s: %s.", store_path, shown_url(url), describe(copied) or "nothing to copy")
    return copied
