"""The SQLite store: the source of truth in one file. A reindex reads only this, never the network.

`SQLiteStore` implements the `kb.store.base.Store` interface: this module holds the connection, pages,
articles, site boilerplate, near-duplicate groups, the change and crawl logs and the FAQ listing; accounts
and the query log are mixins (`sqlite_accounts`, `sqlite_querylog`) over the same connection. WAL mode lets
the web app read while a crawl writes; every multi-row change runs in one transaction so a killed process
leaves the store consistent. The schema is created or migrated once, on open (`kb.store.migrations`).
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from kb.boilerplate import set_for
from kb.clock import utc_iso
from kb.faults import checkpoint
from kb.models import Article, Section
from kb.neardup import bands, fingerprint, to_text
from kb.store.audience import Audiences, audience_sql
from kb.store.base import article_from_row, article_row, boilerplate_changes, fold_changes, json_list, learn_boilerplate
from kb.store.grouping import NearDuplicateGrouping
from kb.store.migrations import is_current, mark_current, upgrade
from kb.store.sqlite_accounts import SQLiteAccounts
from kb.store.sqlite_querylog import SQLiteQueryLog
from kb.store.sqlite_transfer import SQLiteTransfer


def _id_chunks(ids: Iterable[int], size: int = 500) -> Iterator[tuple[list[int], str]]:
    """Sorted distinct ids in chunks, each with its "?, ?, ..." marks: SQLite caps bound parameters."""
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), size):
        chunk = wanted[i:i + size]
        yield chunk, ", ".join("?" * len(chunk))


class SQLiteStore(SQLiteAccounts, SQLiteQueryLog, SQLiteTransfer, NearDuplicateGrouping):
    """One connection to the SQLite database; open one per thread or per request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        """Create or upgrade the schema once; later opens only read the version, so readers take no write lock."""
        if is_current(self.db):
            return
        with self.transaction():
            if is_current(self.db):  # another connection migrated it while this one waited
                return
            upgrade(self.db)
            self._backfill_simhash()  # version 3: group the articles stored before near-duplicates were detected
            mark_current(self.db)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing block; nests (inner blocks join the outer transaction)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- meta -------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))

    # -- pages (fetch state for conditional GET and removal) ---------------
    def get_page(self, url: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM pages WHERE url = ?", (url,)).fetchone()
        return dict(row) if row else None

    def record_page(self, url: str, **fields: Any) -> None:
        """Insert or update the fetch state of `url`; only the given columns change."""
        fields.setdefault("fetched_at", utc_iso())
        columns = ["url", *fields]
        updates = ", ".join(f"{c} = excluded.{c}" for c in fields)
        self.db.execute(
            f"INSERT INTO pages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT(url) DO UPDATE SET {updates}",
            (url, *fields.values()),
        )

    def pages_for_source(self, source: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM pages WHERE source = ? ORDER BY url", (source,))]

    def put_raw(self, url: str, body: bytes, content_type: str = "") -> None:
        """Keep the raw response so re-extraction never re-downloads."""
        self.db.execute(
            "INSERT INTO raw_pages VALUES (?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET "
            "content_type = excluded.content_type, fetched_at = excluded.fetched_at, body = excluded.body",
            (url, content_type, utc_iso(), zlib.compress(body, 6)),
        )

    def get_raw(self, url: str) -> tuple[bytes, str] | None:
        row = self.db.execute("SELECT body, content_type FROM raw_pages WHERE url = ?", (url,)).fetchone()
        return (zlib.decompress(row["body"]), row["content_type"]) if row else None

    # -- articles ------------------------------------------------------------
    def save_article(self, article: Article, source: str = "") -> tuple[int, str]:
        """Store `article` by URL; returns (id, "new" | "updated" | "unchanged").

        Unchanged content writes nothing but new section markup (not indexed; see `_refresh_markup`).
        """
        digest = article.content_hash
        row = self.db.execute("SELECT id, content_hash FROM articles WHERE url = ?", (article.url,)).fetchone()
        if row and row["content_hash"] == digest:
            article.id = row["id"]
            self._refresh_markup(row["id"], article.sections)
            return row["id"], "unchanged"
        values, simhash = article_row(article, source)
        now = utc_iso()
        with self.transaction():
            if row:
                article_id, status = row["id"], "updated"
                self.db.execute(
                    f"UPDATE articles SET {', '.join(f'{c} = ?' for c in values)}, updated_at = ? WHERE id = ?",
                    (*values.values(), now, article_id),
                )
                self.db.execute("DELETE FROM sections WHERE article_id = ?", (article_id,))
            else:
                status = "new"
                cur = self.db.execute(
                    f"INSERT INTO articles ({', '.join(values)}, created_at, updated_at) "
                    f"VALUES ({', '.join('?' * (len(values) + 2))})",
                    (*values.values(), now, now),
                )
                article_id = int(cur.lastrowid)
            self.db.executemany(
                "INSERT INTO sections (article_id, position, heading, anchor, level, text, html) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(article_id, i, s.heading, s.anchor, s.level, s.text, s.html)
                 for i, s in enumerate(article.sections)],
            )
            self._set_bands(article_id, simhash)
            self._log_changes(*self._settle([article_id], changed=True), now=now)
            checkpoint("store:in-transaction")  # crash tests: killed here, the article must roll back
        article.id = article_id
        return article_id, status

    def _refresh_markup(self, article_id: int, sections: list[Section]) -> None:
        """Store new section markup of an article whose indexed content is unchanged; logs no change.

        Markup is not indexed, so it is not in the content hash: this is how rows stored before the html
        column (or by an older sanitiser) get it on their next crawl. Empty markup never overwrites stored
        markup, so a caller that builds sections without it cannot wipe it.
        """
        stored = [r[0] for r in self.db.execute(
            "SELECT html FROM sections WHERE article_id = ? ORDER BY position", (article_id,))]
        if len(stored) != len(sections):
            return
        updates = [(s.html, article_id, i) for i, (s, old) in enumerate(zip(sections, stored))
                   if s.html and s.html != old]
        if updates:
            with self.transaction():
                self.db.executemany("UPDATE sections SET html = ? WHERE article_id = ? AND position = ?", updates)

    def delete_article(self, article_id: int) -> bool:
        """Remove an article and log the deletion for incremental index updates.

        A deleted duplicate changes its primary's source list; a deleted primary hands its group to
        the lowest remaining member (the others are checked against it again).
        """
        with self.transaction():
            row = self.db.execute("SELECT dup_of FROM articles WHERE id = ?", (article_id,)).fetchone()
            members = [r[0] for r in self.db.execute("SELECT id FROM articles WHERE dup_of = ?", (article_id,))]
            cur = self.db.execute("DELETE FROM articles WHERE id = ?", (article_id,))
            if cur.rowcount:
                upserts, deletes = self._settle(members)
                if row["dup_of"] is not None:
                    upserts.add(row["dup_of"])
                self._log_changes(upserts, deletes | {article_id})
        return bool(cur.rowcount)

    def _article(self, row: sqlite3.Row, raw: bool = False) -> Article:
        """The stored article, with its site's boilerplate paragraphs stripped unless `raw`.

        The store keeps the extracted text (a paragraph that stops repeating comes back on the next
        refresh); stripping on read means the indexer, snippets, the web page and the API all see clean text.
        """
        sections = [
            Section(heading=s["heading"], anchor=s["anchor"], text=s["text"], level=s["level"], html=s["html"])
            for s in self.db.execute(
                "SELECT heading, anchor, level, text, html FROM sections WHERE article_id = ? ORDER BY position",
                (row["id"],),
            )
        ]
        article = article_from_row(row, sections)
        return article if raw else self._strip_boilerplate(row, article)

    def get_article(self, article_id: int, *, audiences: Audiences = None) -> Article | None:
        """The article when its audience is one of `audiences`, else None; one indexed lookup either way."""
        row = self._article_row("id", article_id, audiences)
        return self._article(row) if row else None

    def get_article_by_url(self, url: str, *, audiences: Audiences = None) -> Article | None:
        row = self._article_row("url", url, audiences)
        return self._article(row) if row else None

    def _article_row(self, key: str, value: Any, audiences: Audiences) -> sqlite3.Row | None:
        """The articles row whose `key` (id or url) is `value`, when of `audiences`."""
        visible, args = audience_sql(audiences)
        return self.db.execute(f"SELECT * FROM articles WHERE {key} = ? AND {visible}", (value, *args)).fetchone()

    def article_source(self, article_id: int) -> str | None:
        row = self.db.execute("SELECT source FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row["source"] if row else None

    def iter_articles(self, ids: Iterable[int] | None = None, batch: int = 500, *,
                      audiences: Audiences = None) -> Iterator[Article]:
        """Every article (or those in `ids`), in id order, `batch` rows at a time so memory stays flat at 100k."""
        visible, allowed = audience_sql(audiences)
        if ids is None:
            last = 0
            while True:
                rows = self.db.execute(f"SELECT * FROM articles WHERE id > ? AND {visible} ORDER BY id LIMIT ?",
                                       (last, *allowed, batch)).fetchall()
                if not rows:
                    return
                for row in rows:
                    yield self._article(row)
                last = rows[-1]["id"]
        for chunk, marks in _id_chunks(ids, batch):
            rows = self.db.execute(f"SELECT * FROM articles WHERE id IN ({marks}) AND {visible} ORDER BY id",
                                   (*chunk, *allowed)).fetchall()
            for row in rows:
                yield self._article(row)

    def article_ids(self, source: str | None = None) -> dict[str, int]:
        """URL -> id of every article (of one source)."""
        sql, args = "SELECT url, id FROM articles", ()
        if source is not None:
            sql, args = sql + " WHERE source = ?", (source,)
        return {r["url"]: r["id"] for r in self.db.execute(sql, args)}

    def count_articles(self, *, audiences: Audiences = None, **where: str) -> int:
        visible, allowed = audience_sql(audiences)
        sql = f"SELECT count(*) FROM articles WHERE {visible}"
        if where:
            sql += " AND " + " AND ".join(f"{k} = ?" for k in where)
        return self.db.execute(sql, (*allowed, *where.values())).fetchone()[0]

    def counts_by(self, *columns: str, audiences: Audiences = None) -> list[dict[str, Any]]:
        """Article counts grouped by columns such as site and audience (for `kb stats`)."""
        allowed = {"site", "audience", "kind", "source"}
        cols = [c for c in columns if c in allowed]
        names = ", ".join(cols)
        visible, args = audience_sql(audiences)
        return [dict(r) for r in self.db.execute(
            f"SELECT {names}, count(*) AS articles FROM articles WHERE {visible} GROUP BY {names} ORDER BY {names}",
            args)]

    # -- change log (incremental index updates) ------------------------------
    def last_change(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]

    def changes_since(self, seq: int) -> tuple[set[int], set[int], int]:
        """(ids to (re)index, ids to delete, newest seq) for changes after `seq`; the last op per id wins."""
        rows = self.db.execute("SELECT seq, article_id, op FROM changes WHERE seq > ? ORDER BY seq", (seq,))
        return fold_changes(((r["seq"], r["article_id"], r["op"]) for r in rows), seq)

    # -- crawl log -----------------------------------------------------------
    def start_crawl(self, source: str) -> int:
        cur = self.db.execute("INSERT INTO crawls (source, started_at) VALUES (?, ?)", (source, utc_iso()))
        return int(cur.lastrowid)

    def finish_crawl(self, crawl_id: int, stats: dict[str, Any]) -> None:
        self.db.execute("UPDATE crawls SET finished_at = ?, stats = ? WHERE id = ?",
                        (utc_iso(), json.dumps(stats), crawl_id))

    def recent_crawls(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM crawls ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) | {"stats": json.loads(r["stats"])} for r in rows]

    # -- browse by topic (web home page) -----------------------------------------
    def topic_counts(self, column: str, audiences: tuple[str, ...] = ("public",),
                     limit: int = 50) -> list[tuple[str, int]]:
        """Most common categories or tags with their article counts, so the home page works without an index."""
        if column not in {"categories", "tags"}:
            raise ValueError(f"topic_counts() counts categories or tags, not {column!r}")
        visible, allowed = audience_sql(audiences, "a.audience")
        rows = self.db.execute(
            f"SELECT j.value AS value, count(DISTINCT a.id) AS n FROM articles AS a, json_each(a.{column}) AS j "
            f"WHERE {visible} AND trim(j.value) != '' GROUP BY j.value ORDER BY n DESC, j.value LIMIT ?",
            (*allowed, limit),
        )
        return [(r["value"], r["n"]) for r in rows]

    def page_errors(self, source: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Pages whose last crawl skipped them, with the recorded "kind: reason" (for `kb crawl --report`)."""
        sql = "SELECT url, source, status, fetched_at, error FROM pages WHERE error != ''"
        args: tuple[Any, ...] = ()
        if source is not None:
            sql, args = sql + " AND source = ?", (source,)
        rows = self.db.execute(sql + " ORDER BY source, error, url LIMIT ?", (*args, limit))
        return [dict(r) for r in rows]

    def article_ids_with_prefix(self, prefix: str) -> dict[str, int]:
        """URL -> id of the articles whose URL starts with `prefix` (a page's FAQ records: "page#"), by index range."""
        if not prefix:
            return {}
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self.db.execute("SELECT url, id FROM articles WHERE url >= ? AND url < ?", (prefix, upper))
        return {r["url"]: r["id"] for r in rows if r["url"].startswith(prefix)}

    # -- site boilerplate (stripped on read; see kb.boilerplate) ----------------------------------
    def boilerplate_fingerprints(self, site: str, audience: str = "public") -> frozenset[str]:
        """The fingerprints stripped from the site's articles of `audience`, cached until this or another
        connection changes the store."""
        name = set_for(audience)
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        cache: dict[tuple[str, str], frozenset[str]] = self.__dict__.setdefault("_boilerplate_cache", {})
        if self.__dict__.get("_boilerplate_version") != version:  # another connection committed: re-read
            cache.clear()
            self._boilerplate_version = version
        found = cache.get((site, name))
        if found is None:
            found = frozenset(r[0] for r in self.db.execute(
                "SELECT fingerprint FROM site_boilerplate WHERE site = ? AND audience = ?", (site, name)))
            cache[(site, name)] = found
        return found

    def refresh_boilerplate(self, site: str, *, min_share: float, min_pages: int) -> tuple[int, int]:
        """Recompute the site's boilerplate sets from its stored articles; (fingerprints added, removed).

        The public set counts the public articles only, the staff set every article (`learn_boilerplate`). A
        changed set is replaced in one transaction with an 'upsert' change for exactly the articles whose
        stripped text changes, so `kb update` reindexes those; unchanged sets write nothing.
        """
        rows = self.db.execute("SELECT id, kind, audience, fingerprints, dup_of FROM articles WHERE site = ?",
                               (site,)).fetchall()
        found = learn_boilerplate(rows, min_share=min_share, min_pages=min_pages)
        old: dict[str, set[str]] = {name: set() for name in found}
        for r in self.db.execute("SELECT audience, fingerprint FROM site_boilerplate WHERE site = ?", (site,)):
            old.setdefault(r[0], set()).add(r[1])
        if found == old:
            return 0, 0
        affected, added, removed = boilerplate_changes(rows, found, old)
        now = utc_iso()
        with self.transaction():
            self.db.execute("DELETE FROM site_boilerplate WHERE site = ?", (site,))
            self.db.executemany("INSERT INTO site_boilerplate (site, audience, fingerprint) VALUES (?, ?, ?)",
                                [(site, name, fp) for name in sorted(found) for fp in sorted(found[name])])
            self.db.executemany("INSERT INTO changes (article_id, op, at) VALUES (?, 'upsert', ?)",
                                [(article_id, now) for article_id in affected])
        self.__dict__.get("_boilerplate_cache", {}).clear()
        return added, removed

    def get_raw_article(self, article_id: int | None = None, *, url: str | None = None,
                        audiences: Audiences = None) -> Article | None:
        """The article exactly as extracted and stored, boilerplate included (debugging, `kb explain`)."""
        if url is not None:
            row = self._article_row("url", url, audiences)
        else:
            row = self._article_row("id", article_id, audiences)
        return self._article(row, raw=True) if row else None

    def read_hashes(self) -> dict[int, str]:
        """Article id -> content hash of the article as read (what the indexer stores), for `kb check`.

        The stored column serves unless reading changes the article: boilerplate stripped, or a disclaimer
        flag backfilled by the schema-2 migration after the hash was taken.
        """
        out: dict[int, str] = {}
        recompute: list[int] = []
        for row in self.db.execute("SELECT id, site, audience, content_hash, fingerprints, disclaimer FROM articles"):
            if row["disclaimer"] or self._has_boilerplate(row):
                recompute.append(int(row["id"]))
            else:
                out[int(row["id"])] = row["content_hash"]
        for article in self.iter_articles(recompute):
            out[int(article.id)] = article.content_hash  # type: ignore[arg-type]
        return out

    def article_sites(self, source: str) -> list[str]:
        """Sites (host names) the source's stored articles come from."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT site FROM articles WHERE source = ? AND site != '' ORDER BY site", (source,))]

    # -- near-duplicate groups (kb.neardup): one search result per group, listing every copy --------
    def _set_bands(self, article_id: int, simhash: int | None) -> None:
        self.db.execute("DELETE FROM simhash_bands WHERE article_id = ?", (article_id,))
        if simhash is not None:
            signed = simhash - (1 << 64) if simhash >= 1 << 63 else simhash  # SQLite integers are signed
            self.db.executemany("INSERT INTO simhash_bands (band, value, article_id, simhash) VALUES (?, ?, ?, ?)",
                                [(band, value, article_id, signed) for band, value in enumerate(bands(simhash))])

    # primitives of NearDuplicateGrouping --------------------------------------------------------------
    def _article_for_grouping(self, article_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT id, title, text, audience, kind, simhash, dup_of FROM articles WHERE id = ?",
                               (article_id,)).fetchone()

    def _band_matches(self, band: int, value: int) -> Iterable[tuple[int, int]]:
        return self.db.execute("SELECT article_id, simhash FROM simhash_bands WHERE band = ? AND value = ?",
                               (band, value))

    def _primary_candidates(self, ids: list[int], audience: str, kind: str) -> list[sqlite3.Row]:
        return self.db.execute(
            f"SELECT id, title, text FROM articles WHERE id IN ({', '.join('?' * len(ids))}) AND dup_of IS NULL "
            "AND audience = ? AND kind = ?", (*ids, audience, kind)).fetchall()

    def _member_ids(self, article_id: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM articles WHERE dup_of = ?", (article_id,))]

    def _set_dup_of(self, article_id: int, primary: int | None) -> None:
        self.db.execute("UPDATE articles SET dup_of = ? WHERE id = ?", (primary, article_id))

    def _max_id(self) -> int:
        return self.db.execute("SELECT coalesce(max(id), 0) FROM articles").fetchone()[0]

    def _log_changes(self, upserts: set[int], deletes: set[int], now: str | None = None) -> None:
        """One change per touched id by its final state: a primary is (re)indexed, a duplicate or gone id deleted."""
        now = now or utc_iso()
        touched = sorted(upserts | deletes)
        live: set[int] = set()
        for chunk, marks in _id_chunks(touched):
            live.update(r[0] for r in self.db.execute(
                f"SELECT id FROM articles WHERE dup_of IS NULL AND id IN ({marks})", chunk))
        self.db.executemany("INSERT INTO changes (article_id, op, at) VALUES (?, ?, ?)",
                            [(i, "upsert" if i in live else "delete", now) for i in touched])

    def _backfill_simhash(self) -> None:
        """Fingerprint and group the articles stored before near-duplicates were detected.

        In id order, each against the earlier ones only: the greedy grouping `_settle` keeps, in one pass.
        """
        rows = self.db.execute("SELECT id, text FROM articles WHERE simhash IS NULL AND kind = 'article' "
                               "ORDER BY id").fetchall()
        deletes: set[int] = set()
        upserts: set[int] = set()
        for row in rows:
            simhash = fingerprint(row["text"])
            if simhash is None:
                continue
            self.db.execute("UPDATE articles SET simhash = ? WHERE id = ?", (to_text(simhash), row["id"]))
            self._set_bands(row["id"], simhash)
            joined, left = self._settle([row["id"]])  # later rows have no bands yet: earlier primaries only
            upserts |= joined
            deletes |= left
        if deletes:
            self._log_changes(upserts, deletes)

    def copies(self, article_id: int, audiences: Audiences = None) -> list[dict[str, Any]]:
        """The article's near-duplicate group [{"id", "url", "site", "title"}], primary first ([] if no such id).

        An article without copies is a group of one. `audiences` keeps only copies those readers may see.
        """
        row = self.db.execute("SELECT id, dup_of FROM articles WHERE id = ?", (article_id,)).fetchone()
        if row is None:
            return []
        primary = row["dup_of"] if row["dup_of"] is not None else row["id"]
        visible, allowed = audience_sql(audiences)
        return [dict(r) for r in self.db.execute(
            f"SELECT id, url, site, title FROM articles WHERE (id = ? OR dup_of = ?) AND {visible} ORDER BY id",
            (primary, primary, *allowed))]

    def group_sources(self, ids: Iterable[int], *, audiences: Audiences = None) -> dict[int, list[dict[str, str]]]:
        """Primary id -> [{"url", "site", "title"}] of every copy, primary first, for those of `ids` with copies."""
        out: dict[int, list[dict[str, str]]] = {}
        visible, allowed = audience_sql(audiences)
        for chunk, marks in _id_chunks(ids):
            rows = self.db.execute(
                f"SELECT id, url, site, title, coalesce(dup_of, id) AS head FROM articles WHERE (dup_of IN ({marks}) "
                f"OR (id IN ({marks}) AND dup_of IS NULL AND EXISTS (SELECT 1 FROM articles AS d WHERE d.dup_of = "
                f"articles.id))) AND {visible} ORDER BY head, id", (*chunk, *chunk, *allowed)).fetchall()
            for r in rows:
                out.setdefault(r["head"], []).append({"url": r["url"], "site": r["site"], "title": r["title"]})
        return out

    def primary_ids(self) -> list[int]:
        """Ids of every article that is not a near-duplicate of another: the indexer's documents."""
        return [r[0] for r in self.db.execute("SELECT id FROM articles WHERE dup_of IS NULL ORDER BY id")]

    def count_primaries(self) -> int:
        return self.db.execute("SELECT count(*) FROM articles WHERE dup_of IS NULL").fetchone()[0]

    def duplicate_ids(self, ids: Iterable[int]) -> set[int]:
        """Those of `ids` that are near-duplicates (their primary's search document lists them)."""
        out: set[int] = set()
        for chunk, marks in _id_chunks(ids):
            out.update(r[0] for r in self.db.execute(
                f"SELECT id FROM articles WHERE dup_of IS NOT NULL AND id IN ({marks})", chunk))
        return out

    # -- FAQ records (kind="faq"), for the /faq page ---------------------------------------------------------
    def faq_entries(self, audiences: tuple[str, ...], *, limit: int) -> list[dict[str, Any]]:
        visible, allowed = audience_sql(audiences)
        rows = self.db.execute(
            f"SELECT id, url, title, text, categories, site, audience FROM articles "
            f"WHERE kind = 'faq' AND {visible} ORDER BY title COLLATE NOCASE, id LIMIT ?",
            (*allowed, limit),
        )
        return [dict(r) | {"categories": json_list(r["categories"])} for r in rows]

    def faq_count(self, audiences: tuple[str, ...]) -> int:
        visible, allowed = audience_sql(audiences)
        return self.db.execute(f"SELECT count(*) FROM articles WHERE kind = 'faq' AND {visible}",
                               allowed).fetchone()[0]
