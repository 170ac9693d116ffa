"""The PostgreSQL store: the same source of truth as the SQLite file, on a database server several nodes share.

`PostgresStore` implements `kb.store.base.Store` with the same semantics as `SQLiteStore` (the reference):
this module holds the connections, pages, articles, site boilerplate, near-duplicate groups, the change and
crawl logs and the FAQ listing; accounts and the query log are mixins (`postgres_accounts`,
`postgres_querylog`). Routing: writes, the pipeline's and indexer's bookkeeping, accounts, sessions, tokens,
the rate limit and anything inside a transaction use the store's primary connection. Reads that answer a
reader (an `audiences` tuple: article pages, the API, facets, topic counts, FAQ) go to a healthy replica and
fall back to the next one and then the primary; once a store has written, its reads stay on the primary so it
reads its own writes. Article writes serialise on an advisory lock, as SQLite's single writer does.
"""

from __future__ import annotations

import json
import logging
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psycopg
from psycopg import sql

from kb.boilerplate import set_for
from kb.clock import utc_iso
from kb.errors import KBError
from kb.faults import checkpoint
from kb.models import Article, Section
from kb.neardup import bands
from kb.store import pg_migrations
from kb.store.audience import Audiences, audience_sql
from kb.store.base import article_from_row, article_row, boilerplate_changes, fold_changes, json_list, learn_boilerplate
from kb.store.grouping import NearDuplicateGrouping
from kb.store.postgres_accounts import PostgresAccounts
from kb.store.postgres_pool import get_pool, mark_down, mark_migrated, once_migrated, redact, replica_up
from kb.store.postgres_querylog import PostgresQueryLog
from kb.store.postgres_transfer import PostgresTransfer

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Advisory lock key of article writes ("kbart"): saves, deletes and boilerplate refreshes never interleave.
ARTICLE_LOCK = 0x6B62617274
PAGE_COLUMNS = frozenset({"source", "canonical", "status", "content_type", "fetched_at", "etag", "last_modified",
                          "content_hash", "article_id", "error", "misses"})
COUNT_COLUMNS = frozenset({"site", "audience", "kind", "source"})


class PostgresStore(PostgresAccounts, PostgresQueryLog, PostgresTransfer, NearDuplicateGrouping):
    """One primary connection (checked out of the process's pool until `close`) plus replica reads."""

    path = None

    def __init__(self, url: str, replica_urls: Iterable[str] = ()) -> None:
        self.url = url
        self.replica_urls = tuple(u.strip() for u in replica_urls if u and u.strip())
        self._pool = get_pool(url)
        self._conn: psycopg.Connection | None = None
        self._depth = 0
        self._wrote = False
        self._closed = False
        self._boilerplate_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._boilerplate_version: str | None = None
        if not once_migrated(url):
            try:
                pg_migrations.migrate(self.db)
            except psycopg.Error as exc:
                self.close()
                raise KBError(f"The PostgreSQL database {redact(url)} could not be prepared: {exc}",
                              "Check that DATABASE_URL's role owns the database and may create tables.") from exc
            mark_migrated(url)

    # -- connections ----------------------------------------------------------------------------------
    @property
    def db(self) -> psycopg.Connection:
        """The primary connection, checked out on first use and kept until `close`."""
        if self._closed:
            raise KBError("This store is closed.", "Open a new store.")
        if self._conn is None:
            try:
                self._conn = self._pool.getconn()
            except psycopg.Error as exc:
                raise KBError(f"The PostgreSQL database {redact(self.url)} cannot be reached: {exc}",
                              "Check DATABASE_URL and that the server is running.") from exc
        return self._conn

    def _x(self, query: str, args: tuple[Any, ...] | list[Any] = ()) -> psycopg.Cursor:
        """Run one statement on the primary (autocommit unless inside `transaction`)."""
        return self.db.execute(query, args)  # type: ignore[arg-type]

    def _w(self, query: str, args: tuple[Any, ...] | list[Any] = ()) -> psycopg.Cursor:
        """Run one writing statement on the primary; later reads of this store stay on the primary."""
        self._wrote = True
        return self._x(query, args)

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._wrote = True
            with self.db.cursor() as cur:
                cur.executemany(query, rows)

    def _read(self, audiences: Audiences, work: Callable[[psycopg.Connection], R]) -> R:
        """`work` on a replica when the read answers a reader, with fallback; else on the primary."""
        if audiences is None or self._wrote or self._depth or not self.replica_urls:
            return work(self.db)
        for url in self.replica_urls:
            if not replica_up(url):
                continue
            try:
                with get_pool(url, replica=True).connection() as conn:
                    return work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                mark_down(url, exc)
            except Exception as exc:  # PoolTimeout and friends: the replica did not answer in time
                if type(exc).__module__.startswith("psycopg_pool"):
                    mark_down(url, exc)
                else:
                    raise
        return work(self.db)

    def close(self) -> None:
        if self._conn is not None and not self._closed:
            conn, self._conn = self._conn, None
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
                conn.rollback()
            self._pool.putconn(conn)
        self._closed = True

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
        with self.db.transaction():
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    def _lock_articles(self) -> None:
        """Serialise article writes across processes until the transaction ends."""
        self._x("SELECT pg_advisory_xact_lock(%s)", (ARTICLE_LOCK,))

    # -- meta -------------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._x("SELECT value FROM kb_meta WHERE key = %s", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._w("INSERT INTO kb_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value))

    # -- pages -------------------------------------------------------------------------------------------
    def get_page(self, url: str) -> dict[str, Any] | None:
        row = self._x("SELECT * FROM kb_pages WHERE url = %s", (url,)).fetchone()
        return dict(row) if row else None

    def record_page(self, url: str, **fields: Any) -> None:
        unknown = set(fields) - PAGE_COLUMNS
        if unknown:
            raise ValueError(f"record_page() got unknown columns {sorted(unknown)}")
        fields.setdefault("fetched_at", utc_iso())
        names = ["url", *fields]
        query = sql.SQL("INSERT INTO kb_pages ({}) VALUES ({}) ON CONFLICT (url) DO UPDATE SET {}").format(
            sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join([sql.Placeholder()] * len(names)),
            sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in fields))
        self._wrote = True
        self.db.execute(query, (url, *fields.values()))

    def pages_for_source(self, source: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._x("SELECT * FROM kb_pages WHERE source = %s ORDER BY url", (source,))]

    def page_errors(self, source: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        query = "SELECT url, source, status, fetched_at, error FROM kb_pages WHERE error != ''"
        args: tuple[Any, ...] = ()
        if source is not None:
            query, args = query + " AND source = %s", (source,)
        return [dict(r) for r in self._x(query + " ORDER BY source, error, url LIMIT %s", (*args, limit))]

    def put_raw(self, url: str, body: bytes, content_type: str = "") -> None:
        self._w("INSERT INTO kb_raw_pages VALUES (%s, %s, %s, %s) ON CONFLICT (url) DO UPDATE SET "
                "content_type = excluded.content_type, fetched_at = excluded.fetched_at, body = excluded.body",
                (url, content_type, utc_iso(), zlib.compress(body, 6)))

    def get_raw(self, url: str) -> tuple[bytes, str] | None:
        row = self._x("SELECT body, content_type FROM kb_raw_pages WHERE url = %s", (url,)).fetchone()
        return (zlib.decompress(bytes(row["body"])), row["content_type"]) if row else None

    # -- articles -----------------------------------------------------------------------------------------
    def save_article(self, article: Article, source: str = "") -> tuple[int, str]:
        digest = article.content_hash
        row = self._x("SELECT id, content_hash FROM kb_articles WHERE url = %s", (article.url,)).fetchone()
        if row and row["content_hash"] == digest:
            article.id = row["id"]
            self._refresh_markup(row["id"], article.sections)
            return row["id"], "unchanged"
        values, simhash = article_row(article, source)
        now = utc_iso()
        with self.transaction():
            self._lock_articles()
            row = self._x("SELECT id FROM kb_articles WHERE url = %s", (article.url,)).fetchone()
            if row:
                article_id, status = row["id"], "updated"
                self._w(f"UPDATE kb_articles SET {', '.join(f'{c} = %s' for c in values)}, updated_at = %s "
                        "WHERE id = %s", (*values.values(), now, article_id))
                self._w("DELETE FROM kb_article_sections WHERE article_id = %s", (article_id,))
            else:
                status = "new"
                article_id = self._w(
                    f"INSERT INTO kb_articles ({', '.join(values)}, created_at, updated_at) "
                    f"VALUES ({', '.join(['%s'] * (len(values) + 2))}) RETURNING id",
                    (*values.values(), now, now)).fetchone()["id"]
            self._many("INSERT INTO kb_article_sections (article_id, position, heading, anchor, level, text, html) "
                       "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                       [(article_id, i, s.heading, s.anchor, s.level, s.text, s.html)
                        for i, s in enumerate(article.sections)])
            self._set_bands(article_id, simhash)
            self._log_changes(*self._settle([article_id], changed=True), now=now)
            checkpoint("store:in-transaction")
        article.id = article_id
        return article_id, status

    def _refresh_markup(self, article_id: int, sections: list[Section]) -> None:
        """Store new section markup of an article whose indexed content is unchanged; logs no change."""
        stored = [r["html"] for r in self._x(
            "SELECT html FROM kb_article_sections WHERE article_id = %s ORDER BY position", (article_id,))]
        if len(stored) != len(sections):
            return
        updates = [(s.html, article_id, i) for i, (s, old) in enumerate(zip(sections, stored))
                   if s.html and s.html != old]
        if updates:
            with self.transaction():
                self._many("UPDATE kb_article_sections SET html = %s WHERE article_id = %s AND position = %s",
                           updates)

    def delete_article(self, article_id: int) -> bool:
        with self.transaction():
            self._lock_articles()
            row = self._x("SELECT dup_of FROM kb_articles WHERE id = %s", (article_id,)).fetchone()
            members = [r["id"] for r in self._x("SELECT id FROM kb_articles WHERE dup_of = %s", (article_id,))]
            deleted = self._w("DELETE FROM kb_articles WHERE id = %s", (article_id,)).rowcount
            if deleted:
                upserts, deletes = self._settle(members)
                if row["dup_of"] is not None:
                    upserts.add(row["dup_of"])
                self._log_changes(upserts, deletes | {article_id})
        return bool(deleted)

    def _article(self, conn: psycopg.Connection, row: dict[str, Any], raw: bool = False) -> Article:
        """The stored article (sections read on the same connection), boilerplate stripped unless `raw`."""
        sections = [
            Section(heading=s["heading"], anchor=s["anchor"], text=s["text"], level=s["level"], html=s["html"])
            for s in conn.execute("SELECT heading, anchor, level, text, html FROM kb_article_sections "
                                  "WHERE article_id = %s ORDER BY position", (row["id"],))
        ]
        article = article_from_row(row, sections)
        return article if raw else self._strip_boilerplate(row, article)

    def _one_article(self, key: str, value: Any, audiences: Audiences, raw: bool = False) -> Article | None:
        visible, args = audience_sql(audiences, mark="%s")

        def work(conn: psycopg.Connection) -> Article | None:
            row = conn.execute(f"SELECT * FROM kb_articles WHERE {key} = %s AND {visible}",
                               (value, *args)).fetchone()
            return self._article(conn, row, raw) if row else None
        return self._read(audiences, work)

    def get_article(self, article_id: int, *, audiences: Audiences = None) -> Article | None:
        return self._one_article("id", article_id, audiences)

    def get_article_by_url(self, url: str, *, audiences: Audiences = None) -> Article | None:
        return self._one_article("url", url, audiences)

    def get_raw_article(self, article_id: int | None = None, *, url: str | None = None,
                        audiences: Audiences = None) -> Article | None:
        if url is not None:
            return self._one_article("url", url, audiences, raw=True)
        return self._one_article("id", article_id, audiences, raw=True)

    def iter_articles(self, ids: Iterable[int] | None = None, batch: int = 500, *,
                      audiences: Audiences = None) -> Iterator[Article]:
        visible, allowed = audience_sql(audiences, mark="%s")
        if ids is None:
            last = 0
            while True:
                rows = self._x(f"SELECT * FROM kb_articles WHERE id > %s AND {visible} ORDER BY id LIMIT %s",
                               (last, *allowed, batch)).fetchall()
                if not rows:
                    return
                for row in rows:
                    yield self._article(self.db, row)
                last = rows[-1]["id"]
        wanted = sorted(set(ids))
        for i in range(0, len(wanted), batch):
            rows = self._x(f"SELECT * FROM kb_articles WHERE id = ANY(%s) AND {visible} ORDER BY id",
                           (wanted[i:i + batch], *allowed)).fetchall()
            for row in rows:
                yield self._article(self.db, row)

    def article_source(self, article_id: int) -> str | None:
        row = self._x("SELECT source FROM kb_articles WHERE id = %s", (article_id,)).fetchone()
        return row["source"] if row else None

    def article_ids(self, source: str | None = None) -> dict[str, int]:
        query, args = "SELECT url, id FROM kb_articles", ()
        if source is not None:
            query, args = query + " WHERE source = %s", (source,)
        return {r["url"]: r["id"] for r in self._x(query, args)}

    def article_ids_with_prefix(self, prefix: str) -> dict[str, int]:
        if not prefix:
            return {}
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._x("SELECT url, id FROM kb_articles WHERE url >= %s AND url < %s", (prefix, upper))
        return {r["url"]: r["id"] for r in rows if r["url"].startswith(prefix)}

    def article_sites(self, source: str) -> list[str]:
        return [r["site"] for r in self._x(
            "SELECT DISTINCT site FROM kb_articles WHERE source = %s AND site != '' ORDER BY site", (source,))]

    def count_articles(self, *, audiences: Audiences = None, **where: str) -> int:
        unknown = set(where) - COUNT_COLUMNS
        if unknown:
            raise ValueError(f"count_articles() filters by {sorted(COUNT_COLUMNS)}, not {sorted(unknown)}")
        visible, allowed = audience_sql(audiences, mark="%s")
        query = f"SELECT count(*) AS n FROM kb_articles WHERE {visible}"
        if where:
            query += " AND " + " AND ".join(f"{k} = %s" for k in where)
        return self._read(audiences, lambda c: int(c.execute(query, (*allowed, *where.values())).fetchone()["n"]))

    def counts_by(self, *columns: str, audiences: Audiences = None) -> list[dict[str, Any]]:
        names = ", ".join(c for c in columns if c in COUNT_COLUMNS)
        visible, args = audience_sql(audiences, mark="%s")
        query = (f"SELECT {names}, count(*) AS articles FROM kb_articles WHERE {visible} "
                 f"GROUP BY {names} ORDER BY {names}")
        return self._read(audiences, lambda c: [dict(r) for r in c.execute(query, args)])

    def read_hashes(self) -> dict[int, str]:
        out: dict[int, str] = {}
        recompute: list[int] = []
        for row in self._x("SELECT id, site, audience, content_hash, fingerprints, disclaimer FROM kb_articles").fetchall():
            if row["disclaimer"] or self._has_boilerplate(row):
                recompute.append(int(row["id"]))
            else:
                out[int(row["id"])] = row["content_hash"]
        for article in self.iter_articles(recompute):
            out[int(article.id)] = article.content_hash  # type: ignore[arg-type]
        return out

    def topic_counts(self, column: str, audiences: tuple[str, ...] = ("public",),
                     limit: int = 50) -> list[tuple[str, int]]:
        if column not in {"categories", "tags"}:
            raise ValueError(f"topic_counts() counts categories or tags, not {column!r}")
        visible, allowed = audience_sql(audiences, "a.audience", mark="%s")
        query = (f"SELECT j.value COLLATE \"C\" AS value, count(DISTINCT a.id) AS n FROM kb_articles AS a "
                 f"CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(a.{column}::jsonb) = 'array' "
                 f"THEN a.{column}::jsonb ELSE '[]'::jsonb END) AS j(value) "
                 f"WHERE {visible} AND trim(j.value) != '' GROUP BY 1 ORDER BY n DESC, 1 LIMIT %s")
        return self._read(audiences, lambda c: [(r["value"], r["n"]) for r in c.execute(query, (*allowed, limit))])

    # -- change log ----------------------------------------------------------------------------------------
    def last_change(self) -> int:
        return int(self._x("SELECT coalesce(max(seq), 0) AS s FROM kb_article_changes").fetchone()["s"])

    def changes_since(self, seq: int) -> tuple[set[int], set[int], int]:
        rows = self._x("SELECT seq, article_id, op FROM kb_article_changes WHERE seq > %s ORDER BY seq", (seq,))
        return fold_changes(((r["seq"], r["article_id"], r["op"]) for r in rows), seq)

    # -- crawl log -----------------------------------------------------------------------------------------
    def start_crawl(self, source: str) -> int:
        return int(self._w("INSERT INTO kb_crawls (source, started_at) VALUES (%s, %s) RETURNING id",
                           (source, utc_iso())).fetchone()["id"])

    def finish_crawl(self, crawl_id: int, stats: dict[str, Any]) -> None:
        self._w("UPDATE kb_crawls SET finished_at = %s, stats = %s WHERE id = %s",
                (utc_iso(), json.dumps(stats), crawl_id))

    def recent_crawls(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self._x("SELECT * FROM kb_crawls ORDER BY id DESC LIMIT %s", (limit,))
        return [dict(r) | {"stats": json.loads(r["stats"])} for r in rows]

    # -- site boilerplate ------------------------------------------------------------------------------------
    def boilerplate_fingerprints(self, site: str, audience: str = "public") -> frozenset[str]:
        """Cached per store until any connection changes a site's set (a version kept in kb_meta)."""
        name = set_for(audience)
        row = self._x("SELECT value FROM kb_meta WHERE key = 'boilerplate_version'").fetchone()
        version = row["value"] if row else "0"
        if version != self._boilerplate_version:
            self._boilerplate_cache.clear()
            self._boilerplate_version = version
        found = self._boilerplate_cache.get((site, name))
        if found is None:
            found = frozenset(r["fingerprint"] for r in self._x(
                "SELECT fingerprint FROM kb_site_boilerplate WHERE site = %s AND audience = %s", (site, name)))
            self._boilerplate_cache[(site, name)] = found
        return found

    def refresh_boilerplate(self, site: str, *, min_share: float, min_pages: int) -> tuple[int, int]:
        rows = self._x("SELECT id, kind, audience, fingerprints, dup_of FROM kb_articles WHERE site = %s",
                       (site,)).fetchall()
        found = learn_boilerplate(rows, min_share=min_share, min_pages=min_pages)
        old: dict[str, set[str]] = {name: set() for name in found}
        for r in self._x("SELECT audience, fingerprint FROM kb_site_boilerplate WHERE site = %s", (site,)):
            old.setdefault(r["audience"], set()).add(r["fingerprint"])
        if found == old:
            return 0, 0
        affected, added, removed = boilerplate_changes(rows, found, old)
        now = utc_iso()
        with self.transaction():
            self._lock_articles()
            self._w("DELETE FROM kb_site_boilerplate WHERE site = %s", (site,))
            self._many("INSERT INTO kb_site_boilerplate (site, audience, fingerprint) VALUES (%s, %s, %s)",
                       [(site, name, fp) for name in sorted(found) for fp in sorted(found[name])])
            self._many("INSERT INTO kb_article_changes (article_id, op, at) VALUES (%s, 'upsert', %s)",
                       [(article_id, now) for article_id in affected])
            self._w("INSERT INTO kb_meta VALUES ('boilerplate_version', '1') ON CONFLICT (key) DO UPDATE "
                    "SET value = (kb_meta.value::bigint + 1)::text")
        self._boilerplate_cache.clear()
        return added, removed

    # -- near-duplicate groups ------------------------------------------------------------------------------
    def _set_bands(self, article_id: int, simhash: int | None) -> None:
        self._w("DELETE FROM kb_simhash_bands WHERE article_id = %s", (article_id,))
        if simhash is not None:
            signed = simhash - (1 << 64) if simhash >= 1 << 63 else simhash
            self._many("INSERT INTO kb_simhash_bands (band, value, article_id, simhash) VALUES (%s, %s, %s, %s)",
                       [(band, value, article_id, signed) for band, value in enumerate(bands(simhash))])

    # primitives of NearDuplicateGrouping --------------------------------------------------------------
    def _article_for_grouping(self, article_id: int) -> dict[str, Any] | None:
        return self._x("SELECT id, title, text, audience, kind, simhash, dup_of FROM kb_articles WHERE id = %s",
                       (article_id,)).fetchone()

    def _band_matches(self, band: int, value: int) -> Iterable[tuple[int, int]]:
        return [(r["article_id"], r["simhash"]) for r in self._x(
            "SELECT article_id, simhash FROM kb_simhash_bands WHERE band = %s AND value = %s", (band, value))]

    def _primary_candidates(self, ids: list[int], audience: str, kind: str) -> list[dict[str, Any]]:
        return self._x("SELECT id, title, text FROM kb_articles WHERE id = ANY(%s) AND dup_of IS NULL "
                       "AND audience = %s AND kind = %s", (ids, audience, kind)).fetchall()

    def _member_ids(self, article_id: int) -> list[int]:
        return [r["id"] for r in self._x("SELECT id FROM kb_articles WHERE dup_of = %s", (article_id,)).fetchall()]

    def _set_dup_of(self, article_id: int, primary: int | None) -> None:
        self._w("UPDATE kb_articles SET dup_of = %s WHERE id = %s", (primary, article_id))

    def _max_id(self) -> int:
        return int(self._x("SELECT coalesce(max(id), 0) AS m FROM kb_articles").fetchone()["m"])

    def _log_changes(self, upserts: set[int], deletes: set[int], now: str | None = None) -> None:
        """One change per touched id by its final state: a primary is (re)indexed, a duplicate or gone id deleted."""
        now = now or utc_iso()
        touched = sorted(upserts | deletes)
        live = {r["id"] for r in self._x("SELECT id FROM kb_articles WHERE dup_of IS NULL AND id = ANY(%s)",
                                         (touched,))}
        self._many("INSERT INTO kb_article_changes (article_id, op, at) VALUES (%s, %s, %s)",
                   [(i, "upsert" if i in live else "delete", now) for i in touched])

    def copies(self, article_id: int, audiences: Audiences = None) -> list[dict[str, Any]]:
        visible, allowed = audience_sql(audiences, mark="%s")

        def work(conn: psycopg.Connection) -> list[dict[str, Any]]:
            row = conn.execute("SELECT id, dup_of FROM kb_articles WHERE id = %s", (article_id,)).fetchone()
            if row is None:
                return []
            primary = row["dup_of"] if row["dup_of"] is not None else row["id"]
            return [dict(r) for r in conn.execute(
                f"SELECT id, url, site, title FROM kb_articles WHERE (id = %s OR dup_of = %s) AND {visible} "
                "ORDER BY id", (primary, primary, *allowed))]
        return self._read(audiences, work)

    def group_sources(self, ids: Iterable[int], *, audiences: Audiences = None) -> dict[int, list[dict[str, str]]]:
        wanted = sorted(set(ids))
        visible, allowed = audience_sql(audiences, mark="%s")
        query = ("SELECT id, url, site, title, coalesce(dup_of, id) AS head FROM kb_articles AS a "
                 "WHERE (dup_of = ANY(%s) OR (id = ANY(%s) AND dup_of IS NULL AND EXISTS "
                 f"(SELECT 1 FROM kb_articles AS d WHERE d.dup_of = a.id))) AND {visible} ORDER BY head, id")

        def work(conn: psycopg.Connection) -> dict[int, list[dict[str, str]]]:
            out: dict[int, list[dict[str, str]]] = {}
            for r in conn.execute(query, (wanted, wanted, *allowed)):
                out.setdefault(r["head"], []).append({"url": r["url"], "site": r["site"], "title": r["title"]})
            return out
        return self._read(audiences, work) if wanted else {}

    def primary_ids(self) -> list[int]:
        return [r["id"] for r in self._x("SELECT id FROM kb_articles WHERE dup_of IS NULL ORDER BY id")]

    def count_primaries(self) -> int:
        return int(self._x("SELECT count(*) AS n FROM kb_articles WHERE dup_of IS NULL").fetchone()["n"])

    def duplicate_ids(self, ids: Iterable[int]) -> set[int]:
        wanted = sorted(set(ids))
        return {r["id"] for r in self._x("SELECT id FROM kb_articles WHERE dup_of IS NOT NULL AND id = ANY(%s)",
                                         (wanted,))}

    # -- FAQ records ------------------------------------------------------------------------------------------
    def faq_entries(self, audiences: tuple[str, ...], *, limit: int) -> list[dict[str, Any]]:
        visible, allowed = audience_sql(audiences, mark="%s")
        query = (f"SELECT id, url, title, text, categories, site, audience FROM kb_articles "
                 f"WHERE kind = 'faq' AND {visible} ORDER BY lower(title), id LIMIT %s")
        return self._read(audiences, lambda c: [dict(r) | {"categories": json_list(r["categories"])}
                                                for r in c.execute(query, (*allowed, limit))])

    def faq_count(self, audiences: tuple[str, ...]) -> int:
        visible, allowed = audience_sql(audiences, mark="%s")
        return self._read(audiences, lambda c: int(c.execute(
            f"SELECT count(*) AS n FROM kb_articles WHERE kind = 'faq' AND {visible}", allowed).fetchone()["n"]))

    # -- operations (kb.maintenance) ----------------------------------------------------------------------------
    def database_size(self) -> int:
        """Bytes the database takes on the server (pg_database_size), for `kb stats`."""
        return int(self._x("SELECT pg_database_size(current_database()) AS n").fetchone()["n"])

    def probe(self) -> dict[str, bool]:
        """Whether the primary and each replica answer `SELECT 1` (health checks), by role."""
        return {"primary": answers(self.url), **{f"replica{i}": answers(u) for i, u in enumerate(self.replica_urls, 1)}}


def answers(url: str, timeout: int = 2) -> bool:
    """Whether the server at `url` answers SELECT 1 on a new connection within `timeout` seconds; no pool, no
    migration, so a probe of a dead or missing database returns at once."""
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False
