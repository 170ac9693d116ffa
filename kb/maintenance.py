"""Operations without downtime: consistency check and repair, statistics, online backup and restore.

The store is the source of truth, so a backup is the store (copied with SQLite's online
backup API while crawls and searches go on) plus the small hand-written files of the data
directory (sources.toml, kb.toml, vocabulary overrides: every top-level *.toml). The index
is left out on purpose: it is rebuilt from the store, and its table of contents is a pickle
that must never be loaded from an untrusted archive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kb import __version__
from kb.clock import utc_iso
from kb.config import data_paths
from kb.errors import IndexDamaged, KBError
from kb.lock import lock_status, writer_lock
from kb.store import Store, open_store
from kb.store.sqlite_files import backup_file, integrity, readable, restore_file

log = logging.getLogger(__name__)

BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
STORE_NAME = "kb.sqlite3"
#: /healthz reuses a replica probe this long: it is public and polled, and each probe opens fresh connections.
REPLICA_PROBE_TTL = 5.0


# -- check and repair ----------------------------------------------------------------------------

def check(store: Store, index_root: Path, repair: bool = False) -> dict[str, Any]:
    """Read the index as searches do, then compare it with the store; `repair` fixes what differs.

    `damaged` lists what cannot be read in the generation CURRENT names (kb.search.check, thorough):
    a damaged index counts as none. Repair rebuilds a missing or damaged index from the store and
    otherwise indexes exactly what differs, through `kb.index` (the only writer). The caller holds
    the writer lock. On a PostgresStore the live search generation is compared instead (`_check_postgres`).
    """
    from kb import index
    from kb.schema import named_generation
    from kb.search.check import current_generation

    url = _search_database(store)
    if url is not None:
        return _check_postgres(store, url, repair)
    in_store, duplicates = _store_hashes(store)
    named = named_generation(index_root)
    damaged = _damage(named)
    generation = current_generation(index_root) if not damaged else None
    in_index = index.indexed_hashes(index_root) if generation is not None else {}
    missing = sorted(set(in_store) - set(in_index))
    orphaned = sorted(set(in_index) - set(in_store))
    stale = sorted(i for i in set(in_store) & set(in_index) if in_index[i] != in_store[i])
    result: dict[str, Any] = {
        "generation": named.name if named else None,
        "damaged": damaged,
        "store_articles": len(in_store) + duplicates,
        "store_duplicates": duplicates,  # listed in their primary's document, none of their own
        "index_documents": len(in_index),
        "missing": missing,
        "orphaned": orphaned,
        "stale": stale,
        "ok": not (damaged or missing or orphaned or stale) and (generation is not None or not in_store),
        "repaired": False,
    }
    if repair and not result["ok"]:
        if generation is None:
            index.rebuild(store, index_root, force=bool(damaged))  # a damaged index is not worth guarding
        else:
            index.reindex_ids(store, index_root, upsert=set(missing) | set(stale), delete=set(orphaned))
        after = check(store, index_root)
        result["repaired"] = after["ok"]
        result["after"] = {k: after[k] for k in ("generation", "damaged", "index_documents", "missing", "orphaned",
                                                 "stale")}
        log.info("Index repaired: %d missing, %d orphaned, %d stale fixed.", len(missing), len(orphaned), len(stale),
                 extra={"missing": len(missing), "orphaned": len(orphaned), "stale": len(stale)})
    return result


def _search_database(store: Store) -> str | None:
    """The database URL of a PostgresStore, whose search index is a generation in that database; else None."""
    if store.path is not None:
        return None
    from kb.store.postgres import PostgresStore

    return store.url if isinstance(store, PostgresStore) else None


def _store_hashes(store: Store) -> tuple[dict[int, str], int]:
    """Primary article id -> the document hash the indexer stores (covering its near-duplicates); duplicates."""
    from kb.schema import document_hash

    in_store = store.read_hashes()  # as read, boilerplate stripped: the hash the indexer stored
    primaries = store.primary_ids()
    groups = store.group_sources(primaries)
    duplicates = len(in_store) - len(primaries)
    return {i: document_hash(in_store[i], groups.get(i, [])) for i in primaries if i in in_store}, duplicates


def _check_postgres(store: Store, url: str, repair: bool) -> dict[str, Any]:
    """`check` on PostgreSQL: the store against the live search generation by content hash; repair as on Whoosh.

    As on Whoosh, the generation is first read as searches read it (`_postgres_damage`): a damaged one counts
    as none, since hashes alone miss a dropped postings or statistics table.
    """
    from kb.search import pg_build
    from kb.store.postgres_search import generation_facts

    in_store, duplicates = _store_hashes(store)
    try:
        facts = generation_facts(url)
    except IndexDamaged as exc:  # the document table itself is gone: nothing of it can be compared
        facts, damaged = None, [exc.message]
    else:
        damaged = _postgres_damage(store, url) if facts is not None else []
    in_index = pg_build.indexed_hashes(url) if facts is not None and not damaged else {}
    missing = sorted(set(in_store) - set(in_index))
    orphaned = sorted(set(in_index) - set(in_store))
    stale = sorted(i for i in set(in_store) & set(in_index) if in_index[i] != in_store[i])
    result: dict[str, Any] = {
        "generation": f"postgresql:{facts['generation']}" if facts else None,
        "damaged": damaged,
        "store_articles": len(in_store) + duplicates,
        "store_duplicates": duplicates,
        "index_documents": len(in_index),
        "missing": missing,
        "orphaned": orphaned,
        "stale": stale,
        "ok": not (damaged or missing or orphaned or stale) and (facts is not None or not in_store),
        "repaired": False,
    }
    if repair and not result["ok"]:
        if facts is None or damaged:
            pg_build.rebuild(store, url, force=bool(damaged))  # a damaged generation is not worth guarding
        else:  # exactly what differs, in place, as on Whoosh
            pg_build.reindex_ids(store, url, upsert=set(missing) | set(stale), delete=set(orphaned))
        after = _check_postgres(store, url, repair=False)
        result["repaired"] = after["ok"]
        result["after"] = {k: after[k] for k in ("generation", "damaged", "index_documents", "missing", "orphaned",
                                                 "stale")}
        log.info("Search generation rebuilt: %d missing, %d orphaned, %d stale fixed.", len(missing), len(orphaned),
                 len(stale), extra={"missing": len(missing), "orphaned": len(orphaned), "stale": len(stale)})
    return result


def _postgres_damage(store: Store, url: str) -> list[str]:
    """What searches cannot read in the live PostgreSQL generation, found by searching it on the primary as a
    reader would: per audience scope (public alone, public + staff), the title of an article of that scope
    (term and field statistics, postings, documents, facets, spelling words) and its completions (titles)."""
    from kb.search.pg import PgSearcher

    probes = {"public": ("public",), "public+staff": ("public", "staff")}
    searcher = PgSearcher(url)
    problems: list[str] = []
    try:
        for scope, audiences in probes.items():
            title = _a_title(store, audiences[-1]) or _a_title(store, "public") or "health"
            try:
                searcher.search(title, per_page=1, audiences=audiences)
                searcher.suggest(title[:3], audiences=audiences)
            except Exception as exc:  # whatever stops a search is damage to report, as /healthz counts it
                message = exc.message if isinstance(exc, KBError) else f"{type(exc).__name__}: {exc}"
                problems.append(f"{scope}: {message}")
    finally:
        searcher.close()
    return problems


def _a_title(store: Store, audience: str) -> str:
    """The title of the first stored article of `audience` ("" when there is none): a query that finds it."""
    articles = store.iter_articles(batch=1, audiences=(audience,))
    try:
        first = next(articles, None)
    finally:
        close = getattr(articles, "close", None)
        if close is not None:
            close()
    return first.title.strip() if first is not None else ""


def _damage(named: Path | None) -> list[str]:
    """What cannot be read in the generation CURRENT names, read thoroughly; empty when sound or absent."""
    from kb.schema import POINTER, is_legacy
    from kb.search.check import generation_problems

    if named is None or is_legacy(named):  # an older kb's layout is rebuilt, not damaged
        return []
    if not named.is_dir():
        return [f"{POINTER} names {named.name}, which does not exist."]
    return generation_problems(named, thorough=True)


# -- stats ---------------------------------------------------------------------------------------

def _size(path: Path) -> int:
    """Bytes on disk of a file or a directory tree (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mtime(path: Path) -> str:
    return utc_iso(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))


def stats(store: Store, index_root: Path) -> dict[str, Any]:
    """What an operator asks first: how much is stored, when it was crawled and indexed, how big it is."""
    from kb.schema import read_meta
    from kb.search.check import current_generation

    by = store.counts_by("site", "audience")
    sites: dict[str, dict[str, int]] = {}
    for row in by:
        sites.setdefault(row["site"], {})[row["audience"]] = row["articles"]
    crawls = store.recent_crawls(1)
    url = _search_database(store)
    generation = current_generation(index_root) if url is None else None
    meta = read_meta(generation) if generation else {}
    upserts, deletes, _ = store.changes_since(int(meta.get("seq", 0))) if generation else (set(), set(), 0)
    queries = store.count_queries()
    return {
        "articles": sum(row["articles"] for row in by),
        "by_audience": {a: sum(s.get(a, 0) for s in sites.values()) for a in sorted({r["audience"] for r in by})},
        "by_site": sites,
        "last_crawl": crawls[0] if crawls else None,
        "last_change": store.last_change(),
        "index": _postgres_index_stats(store, url) if url is not None else {
            "generation": generation.name if generation else None,
            "built_at": meta.get("built") or (_mtime(generation) if generation else None),
            "documents": meta.get("docs"),
            "pending_changes": len(upserts) + len(deletes) if generation else None,
            "size_bytes": _size(generation) if generation else 0,
            "total_bytes": _size(Path(index_root)),
        },
        "store": _store_facts(store),
        "queries_logged": queries,
        "writer": lock_status(Path(index_root).parent),
    }


def _postgres_index_stats(store: Store, url: str) -> dict[str, Any]:
    """`stats`' index facts for the live PostgreSQL search generation (same keys as for Whoosh)."""
    from kb.search.pg_build import notes
    from kb.store.postgres_search import generation_facts

    facts = generation_facts(url)
    if facts is None:
        return {"generation": None, "built_at": None, "documents": None, "pending_changes": None, "size_bytes": 0,
                "total_bytes": 0}
    built = notes(facts)
    upserts, deletes, _ = store.changes_since(int(built.get("seq", 0)))
    return {"generation": f"postgresql:{facts['generation']}", "built_at": built.get("built") or facts["swapped_at"],
            "documents": sum(facts["subindexes"].values()), "pending_changes": len(upserts) + len(deletes),
            "size_bytes": facts["size_bytes"], "total_bytes": facts["size_bytes"]}


def _store_facts(store: Store) -> dict[str, Any]:
    """Where the store is and how big: the SQLite file (and its WAL), or the PostgreSQL database (password hidden)."""
    if store.path is None:
        from kb.store.postgres import PostgresStore
        from kb.store.postgres_pool import redact, replica_status

        if isinstance(store, PostgresStore):
            return {"database": redact(store.url), "replicas": replica_status(store.url, store.replica_urls),
                    "size_bytes": store.database_size()}
        return {"path": None, "size_bytes": 0}
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    return {"path": str(store.path), "size_bytes": sum(_size(p) for p in files)}


# -- backup and restore --------------------------------------------------------------------------

def _database_url(data_dir: str | os.PathLike[str]) -> str:
    """DATABASE_URL as the commands see it for `data_dir` (kb.toml there, then KB_DATABASE_URL)."""
    from kb import config

    return str(config.load({"DATA_DIR": str(data_dir)}).get("DATABASE_URL") or "").strip()


def _refuse_on_postgres(data_dir: str | os.PathLike[str], command: str) -> None:
    """`kb backup`/`kb restore` copy a SQLite file; a PostgreSQL store is PostgreSQL's own tools' job."""
    if _database_url(data_dir):
        tool = "pg_dump -Fc" if command == "backup" else "pg_restore (then `kb reindex`)"
        raise KBError(f"kb {command} works on the SQLite store only; this data directory's store is the "
                      "PostgreSQL database of DATABASE_URL.", f"Use PostgreSQL's {tool} for that database.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _config_files(root: Path) -> list[Path]:
    """Hand-written files worth keeping: sources.toml, kb.toml, vocabulary overrides."""
    return sorted(p for p in root.glob("*.toml") if p.is_file())


def backup(data_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, archive: bool = False) -> Path:
    """Copy the live store (online, consistent) and the data directory's *.toml into `dest`/kb-backup-<UTC time>.

    Crawls and searches may run meanwhile. The directory holds a manifest with SHA-256 sums that
    `restore` verifies; with `archive` it becomes one .tar.gz. Returns the directory or archive path.
    """
    _refuse_on_postgres(data_dir, "backup")
    paths = data_paths(data_dir)
    if not paths["store"].is_file():
        raise KBError(f"There is no store to back up at {paths['store']}.", "Check --data-dir.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"kb-backup-{stamp}", 1
    while (dest / name).exists() or (dest / f"{name}.tar.gz").exists():
        n += 1
        name = f"kb-backup-{stamp}-{n}"
    partial = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=dest))
    try:
        copy = partial / STORE_NAME
        articles, schema = backup_file(paths["store"], copy)
        verdict = integrity(copy)
        if verdict != "ok":
            raise KBError(f"The backup copy failed its integrity check: {verdict}",
                          "Run `kb check` on the store and try again; nothing was written.")
        for path in _config_files(paths["root"]):
            shutil.copy2(path, partial / path.name)
        manifest = {
            "format": BACKUP_FORMAT,
            "created": utc_iso(),
            "kb_version": __version__,
            "schema_version": schema,
            "articles": articles,
            "files": {p.name: _sha256(p) for p in sorted(partial.iterdir())},
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        if archive:
            final = dest / f"{name}.tar.gz"
            with tarfile.open(partial / "archive.tmp", "w:gz") as tar:
                for path in sorted(partial.iterdir()):
                    if path.name != "archive.tmp":
                        tar.add(path, arcname=f"{name}/{path.name}")
            os.replace(partial / "archive.tmp", final)
        else:
            final = dest / name
            os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("Backed up %d articles to %s.", articles, final, extra={"backup": str(final), "articles": articles})
    return final


def _verified(folder: Path) -> dict[str, Any]:
    """The manifest of a backup directory, after checking every file's SHA-256 and the store's integrity."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise KBError(f"{folder} is not a kb backup (no readable {MANIFEST}).",
                      "Pass a directory or .tar.gz made by `kb backup`.") from None
    if STORE_NAME not in files:
        raise KBError(f"The backup {folder} holds no store.", "Pass a backup made by `kb backup`.")
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file() or _sha256(path) != digest:
            raise KBError(f"The backup {folder} is damaged: {name} is missing or differs from its checksum.",
                          "Use another backup.")
    verdict = integrity(folder / STORE_NAME)
    if verdict != "ok":
        raise KBError(f"The backed-up store fails its integrity check: {verdict}", "Use another backup.")
    return manifest


def _unpack(src: Path, into: Path) -> Path:
    """The backup directory inside a .tar.gz (extracted with the safe 'data' filter)."""
    with tarfile.open(src) as tar:
        tar.extractall(into, filter="data")
    folders = [p for p in into.iterdir() if (p / MANIFEST).is_file()]
    if len(folders) != 1:
        raise KBError(f"{src} is not a kb backup archive.", "Pass a .tar.gz made by `kb backup --archive`.")
    return folders[0]


def restore(src: str | os.PathLike[str], data_dir: str | os.PathLike[str], force: bool = False,
            *, reindex: bool = True) -> dict[str, Any]:
    """Restore a backup into `data_dir`, verified first; never loses data.

    Refuses to replace an existing store (or differing *.toml) unless `force`; then a safety backup of
    the current data directory is taken first. The store is replaced through SQLite's backup API,
    so a running web app sees the restored content without a restart. With `reindex` (default) the
    index is rebuilt from the restored store, since the old index describes other articles.
    """
    _refuse_on_postgres(data_dir, "restore")
    src = Path(src)
    if not src.exists():
        raise KBError(f"There is no backup at {src}.", "Check the path.")
    paths = data_paths(data_dir)
    paths["root"].mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=paths["root"]) as scratch:
        folder = _unpack(src, Path(scratch)) if src.is_file() else src
        manifest = _verified(folder)
        with writer_lock(paths["root"], "restore"):
            existing = paths["store"].is_file()
            conflicts = [n for n in manifest["files"] if n != STORE_NAME and (paths["root"] / n).is_file()
                         and _sha256(paths["root"] / n) != manifest["files"][n]]
            if (existing or conflicts) and not force:
                what = f"a store ({paths['store']})" if existing else ", ".join(conflicts)
                raise KBError(f"{paths['root']} already has {what}; restore would replace it.",
                              "Pass --force to replace it (a safety backup is taken first), "
                              "or restore into an empty --data-dir.")
            safety = backup(paths["root"], paths["root"] / "backups") if existing else None
            restore_file(folder / STORE_NAME, paths["store"], existing)
            for name in manifest["files"]:
                if name not in (STORE_NAME, MANIFEST):
                    shutil.copy2(folder / name, paths["root"] / name)
            articles = 0
            if reindex:
                with open_store(paths["store"]) as store:
                    articles = _rebuild(store, paths["index"])
    log.info("Restored %s into %s.", src, paths["root"], extra={"backup": str(src), "safety_backup": str(safety)})
    return {
        "restored_from": str(src),
        "created": manifest.get("created"),
        "articles": manifest.get("articles"),
        "files": sorted(manifest["files"]),
        "safety_backup": str(safety) if safety else None,
        "reindexed": reindex,
        "indexed": articles,
    }


def _rebuild(store: Store, index_root: Path) -> int:
    """Full index rebuild after a restore (the old index describes other articles)."""
    from kb import index

    return index.rebuild(store, index_root, force=True)


# -- health --------------------------------------------------------------------------------------

def health(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Cheap liveness facts for /healthz: can the store be read, is there an index to search?

    Safe to expose publicly: no paths, PIDs or host names. `ok` False means searches fail (serve 503).
    On PostgreSQL `replicas` says whether each replica answers and how far it lags (numbered in
    DATABASE_REPLICA_URLS order, no URLs: `kb stats` names them), and `degraded` that one does not: reads
    then fall back to another replica or the primary, so the node stays healthy. Only the primary decides `ok`.
    """
    from kb import config
    from kb.schema import is_legacy, named_generation
    from kb.search.check import current_generation
    from kb.store import replica_urls

    paths = data_paths(data_dir)
    settings = config.load({"DATA_DIR": str(data_dir)})  # once per request: /healthz is polled
    url = str(settings.get("DATABASE_URL") or "").strip() or None
    checks: dict[str, Any] = {"store": "ok" if _store_answers(url, paths["store"]) else "unavailable"}
    if url is not None:
        generation: Any = _postgres_generation(url) if checks["store"] == "ok" else None
        checks["index"] = f"postgresql:{generation}" if generation is not None else "missing"
        checks["replicas"] = _replica_health(url, tuple(replica_urls(settings)))
        checks["degraded"] = not all(r["reachable"] for r in checks["replicas"])
    else:
        generation = current_generation(paths["index"])  # an unreadable generation counts as none
        named = named_generation(paths["index"])
        checks["index"] = generation.name if generation else (
            "unreadable" if named is not None and not is_legacy(named) else "missing")
    writer = lock_status(paths["root"])
    checks["writer"] = {"command": writer.get("command"), "since": writer.get("started")} if writer else None
    return {"ok": checks["store"] == "ok" and generation is not None, **checks}


def _replica_health(url: str, replicas: tuple[str, ...]) -> list[dict[str, Any]]:
    """/healthz's view of each replica of the primary `url`: reachable and lag, without URL or error text."""
    from kb.store.postgres_pool import replica_status

    key = (url, replicas)
    with _probe_lock:  # one probe at a time per process: a flood of /healthz requests cannot fan out to the servers
        probed = _probes.get(key)
        if probed is None or time.monotonic() - probed[0] > REPLICA_PROBE_TTL:
            found = replica_status(url, replicas)
            probed = _probes[key] = (time.monotonic(), [
                {"replica": n, **{k: r[k] for k in ("reachable", "lag_seconds", "lag_bytes")}}
                for n, r in enumerate(found, 1)])
    return [dict(r) for r in probed[1]]


_probes: dict[tuple[str, tuple[str, ...]], tuple[float, list[dict[str, Any]]]] = {}
_probe_lock = threading.Lock()


def _postgres_generation(url: str) -> int | None:
    """The live PostgreSQL search generation; None before the first build or when it cannot be read."""
    from kb.store.postgres_search import generation_facts

    try:
        facts = generation_facts(url)
    except KBError as exc:
        log.warning("health check: the search generation could not be read: %s", exc.message)
        return None
    return int(facts["generation"]) if facts else None


def _store_answers(url: str | None, store_path: Path) -> bool:
    """Whether the store answers a read: the SQLite file opened read-only, or SELECT 1 on the PostgreSQL
    primary `url` (a replica that does not answer is out of rotation, not an outage)."""
    if url is None:
        return readable(store_path)
    from kb.store.postgres import answers

    return answers(url)
