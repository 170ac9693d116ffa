"""Search generations on PostgreSQL: the tables, the bulk load, the swap, and every statement a search runs.

The analysis (kb's analyzers over kb.schema's document mapping) happens in kb.search.pg_build; this module
receives finished rows and speaks SQL only. Layout per generation G (created by the build, never migrated):

  kb_article_search_gG          one row per document, partitioned by sub-index ('public' | 'staff'); a weighted
                                tsvector of kb-analysed tokens (title A, headings B, tagtext C, body D) + the lead
  kb_search_posting_gG          (subindex, term, field) -> article ids, term frequencies, field lengths: BM25F
  kb_search_term_gG             (scope, term, field) -> df        scope 'public' (public rows) | 'all'
  kb_search_field_gG            (scope, field) -> docs, total length
  kb_search_word_gG             (scope, word) -> df of unstemmed words: "Did you mean" and completions

A `kb update` changes the current generation in place (`GenerationUpdate`): one transaction removes the changed
documents' rows and contributions and adds their new ones, so every table ends as a fresh build would make it.
The doc rows keep what that needs (exact field lengths, the unstemmed words). One writer at a time per database
schema: `writer_lock`, a session-level advisory lock that a killed writer's session releases.

The fixed tables `kb_search_generations` and `kb_search_current` (one row: the generation readers use) come
from kb.store.pg_migrations. Anonymous requests read the public partition and 'public' statistics only, so
nothing they receive depends on staff rows (DESIGN.md, security rules).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from kb.errors import IndexDamaged, IndexUnavailable, KBError, LockHeld
from kb.faults import checkpoint
from kb.store.postgres_pool import CONNECT_TIMEOUT, REPLICA_CHECKOUT, mark_down, redact

log = logging.getLogger(__name__)

#: Dropped generations stay readable this long after a swap, so searches running on them finish.
GRACE_SECONDS = 300.0
#: A generation still 'building' after this long is dropped even if its builder's session still holds its lock
#: (a builder host that vanished without closing its connection).
STALE_BUILD_SECONDS = 24 * 3600.0
#: First key of the session-level advisory lock a builder holds while it builds (`_BUILD_KEY`): a 'building'
#: generation whose lock is free belongs to a build whose process (or connection) is gone.
BUILD_LOCK = 0x6B620001
#: Second key: the schema and the generation, since every schema numbers its generations from 1 and a scratch
#: schema (`kb eval`, `kb bench`) building generation 1 must neither wait for nor shield another schema's build.
_BUILD_KEY = "%s, hashtext(current_schema() || ':' || %s::text)"
STAT_FIELDS = ("title", "headings", "tagtext", "body", "lead", "all")
DOC_COLUMNS = ("article_id", "subindex", "audience", "published", "pubdate", "year", "title_key", "url", "title",
               "site", "kind", "tags", "categories", "sources", "sections", "len_title", "len_headings",
               "len_tagtext", "len_body", "len_lead", "len_all", "tsv", "lead_tsv", "hash", "exact", "words")
#: Second key of BUILD_LOCK's sibling: the writer lock (rebuild, update, reindex_ids) of one schema.
WRITER_LOCK = 0x6B620002
#: Seconds a writer waits for another one's lock before LockHeld (as kb.index waits for the Whoosh write lock).
WRITER_WAIT = 5.0


@dataclass
class DocRow:
    """One analysed document, ready for COPY (see kb.search.pg_build.document_row)."""

    values: tuple[Any, ...]  # in DOC_COLUMNS order
    subindex: str


def _t(name: str, gen: int) -> sql.Identifier:
    return sql.Identifier(f"{name}_g{gen}")


def _ddl(gen: int) -> list[sql.Composable]:
    """Tables of one generation, created empty, filled, indexed and analysed before the swap."""
    doc, part = _t("kb_article_search", gen), f"kb_article_search_g{gen}"
    return [
        sql.SQL("""CREATE TABLE {} (
             article_id bigint NOT NULL,
             subindex text COLLATE "C" NOT NULL CHECK (subindex IN ('public', 'staff')),
             audience text COLLATE "C" NOT NULL, published timestamp, pubdate text NOT NULL, year text,
             title_key text COLLATE "C", url text NOT NULL, title text NOT NULL, site text COLLATE "C" NOT NULL,
             kind text NOT NULL, tags text[] COLLATE "C" NOT NULL, categories text[] COLLATE "C" NOT NULL,
             sources text NOT NULL, sections text NOT NULL,
             len_title integer NOT NULL, len_headings integer NOT NULL, len_tagtext integer NOT NULL,
             len_body integer NOT NULL, len_lead integer NOT NULL, len_all integer NOT NULL,
             tsv tsvector NOT NULL, lead_tsv tsvector NOT NULL, hash text COLLATE "C" NOT NULL DEFAULT '',
             exact integer[] NOT NULL, words text[] COLLATE "C" NOT NULL,
             PRIMARY KEY (subindex, article_id)) PARTITION BY LIST (subindex)""").format(doc),
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ('public')").format(
            sql.Identifier(part + "_public"), doc),
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ('staff')").format(sql.Identifier(part + "_staff"), doc),
        sql.SQL("""CREATE TABLE {} (subindex text COLLATE "C" NOT NULL, term text COLLATE "C" NOT NULL,
             field "char" NOT NULL, article_ids integer[] NOT NULL, tfs smallint[] NOT NULL, lens integer[] NOT NULL,
             PRIMARY KEY (term, field, subindex))""").format(_t("kb_search_posting", gen)),
        sql.SQL("""CREATE TABLE {} (scope text COLLATE "C" NOT NULL, term text COLLATE "C" NOT NULL,
             field text COLLATE "C" NOT NULL, df integer NOT NULL, PRIMARY KEY (scope, term, field))""").format(
            _t("kb_search_term", gen)),
        sql.SQL("""CREATE TABLE {} (scope text COLLATE "C" NOT NULL, field text COLLATE "C" NOT NULL,
             docs integer NOT NULL, total_len bigint NOT NULL, PRIMARY KEY (scope, field))""").format(
            _t("kb_search_field", gen)),
        sql.SQL("""CREATE TABLE {} (scope text COLLATE "C" NOT NULL, word text COLLATE "C" NOT NULL,
             df integer NOT NULL, PRIMARY KEY (scope, word))""").format(_t("kb_search_word", gen)),
    ]


def _index_ddl(gen: int) -> list[sql.Composable]:
    """Indexes built after the bulk load (one GIN build is ~3x faster than maintaining it per row)."""
    out: list[sql.Composable] = []
    for part in ("public", "staff"):
        name = f"kb_article_search_g{gen}_{part}"
        t = sql.Identifier(name)
        out += [
            sql.SQL("CREATE INDEX {} ON {} USING gin (tsv) WITH (fastupdate = off)").format(
                sql.Identifier(name + "_tsv"), t),
            sql.SQL("CREATE INDEX {} ON {} (published DESC NULLS LAST, article_id)").format(
                sql.Identifier(name + "_published"), t),
            sql.SQL("CREATE INDEX {} ON {} (title_key)").format(sql.Identifier(name + "_title_key"), t),
            sql.SQL("CREATE INDEX {} ON {} (article_id)").format(sql.Identifier(name + "_article"), t),
        ]
    return out


_WEIGHTS = "(VALUES ('title', 'A'), ('headings', 'B'), ('tagtext', 'C'), ('body', 'D'), ('all', NULL)) AS f(field, w)"


def _stats_sql(gen: int) -> list[sql.Composable]:
    """Per-scope term statistics from the loaded rows: public rows alone, then all rows."""
    out: list[sql.Composable] = []
    term = _t("kb_search_term", gen)
    for scope, source in (("public", sql.Identifier(f"kb_article_search_g{gen}_public")),
                          ("all", _t("kb_article_search", gen))):
        s = sql.Literal(scope)
        out += [
            sql.SQL("INSERT INTO {} (scope, term, field, df) SELECT {}, u.lexeme, f.field, count(*) FROM {} d "
                    "CROSS JOIN LATERAL unnest(d.tsv) u CROSS JOIN LATERAL " + _WEIGHTS + " "
                    "WHERE f.w IS NULL OR f.w = ANY(u.weights) GROUP BY u.lexeme, f.field").format(term, s, source),
            sql.SQL("INSERT INTO {} (scope, term, field, df) SELECT {}, u.lexeme, 'lead', count(*) FROM {} d "
                    "CROSS JOIN LATERAL unnest(d.lead_tsv) u GROUP BY u.lexeme").format(term, s, source),
            sql.SQL("INSERT INTO {} (scope, term, field, df) SELECT {}, d.title_key, 'title_key', count(*) FROM {} d "
                    "WHERE d.title_key <> '' GROUP BY d.title_key").format(term, s, source),
        ]
    return out


def _tables(gen: int) -> list[str]:
    return [f"kb_article_search_g{gen}", f"kb_search_posting_g{gen}", f"kb_search_term_g{gen}",
            f"kb_search_field_g{gen}", f"kb_search_word_g{gen}"]


#: A table of facet labels that generations built before searches counted facets in memory (kb.search.pg) have;
#: dropping such a generation drops it too.
_LEGACY_TABLES = ("kb_search_facet_g{}",)


def _connect(url: str, *, autocommit: bool = True, application_name: str = "kb build") -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT,
                               application_name=application_name)
    except psycopg.Error as exc:
        raise KBError(f"The PostgreSQL database {redact(url)} cannot be reached: {exc}",
                      "Check DATABASE_URL and that the server is running.") from exc


class GenerationWriter:
    """Builds one search generation: `begin`, `add_documents`, `add_postings`, `finish` (stats, indexes, swap)."""

    def __init__(self, url: str) -> None:
        self.conn = _connect(url)
        self.gen = 0

    def __enter__(self) -> "GenerationWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self.gen:
            self._drop(self.gen)  # a failed build leaves nothing behind; readers keep the current generation
            self.conn.execute("DELETE FROM kb_search_generations WHERE generation = %s", (self.gen,))
        self.conn.close()

    def begin(self) -> int:
        """Drop builds killed earlier, then register a new generation ('building', locked) and create its tables."""
        self.drop_abandoned()
        with self.conn.transaction():
            # locked before the row commits: no other session ever sees this build unlocked, i.e. abandoned
            self.gen = int(self.conn.execute("INSERT INTO kb_search_generations (state) VALUES ('building') "
                                             "RETURNING generation").fetchone()[0])
            self.conn.execute(f"SELECT pg_advisory_lock({_BUILD_KEY})", (BUILD_LOCK, self.gen))
        with self.conn.transaction():
            for stmt in _ddl(self.gen):
                self.conn.execute(stmt)
        checkpoint("pg-reindex:tables-created")  # crash tests: empty tables committed, nothing loaded
        return self.gen

    def add_documents(self, rows: Iterable[DocRow]) -> dict[str, int]:
        """COPY the analysed documents in; documents per sub-index."""
        counts = {"public": 0, "staff": 0}
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            _t("kb_article_search", self.gen), sql.SQL(", ").join(map(sql.Identifier, DOC_COLUMNS)))
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in rows:
                copy.write_row(row.values)
                counts[row.subindex] += 1
                checkpoint("pg-reindex:copying")  # crash tests ("@N"): killed mid-COPY, after N rows
        return counts

    def add_postings(self, postings: Iterable[tuple[str, str, str, list[int], list[int], list[int]]]) -> None:
        """COPY (term, field letter, subindex, article ids, term frequencies, field lengths) rows in."""
        stmt = sql.SQL("COPY {} (term, field, subindex, article_ids, tfs, lens) FROM STDIN").format(
            _t("kb_search_posting", self.gen))
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in postings:
                copy.write_row(row)

    def add_words(self, words: dict[str, dict[str, int]]) -> None:
        """Unstemmed words per scope with their document frequency (spelling, completions)."""
        stmt = sql.SQL("COPY {} (scope, word, df) FROM STDIN").format(_t("kb_search_word", self.gen))
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            for scope, counts in words.items():
                for word, df in counts.items():
                    copy.write_row((scope, word, df))

    def add_field_stats(self, stats: dict[str, dict[str, tuple[int, int]]]) -> None:
        """(documents, total exact length) per scope and field: BM25F's average field lengths."""
        with self.conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} (scope, field, docs, total_len) VALUES (%s, %s, %s, %s)").format(
                _t("kb_search_field", self.gen)),
                [(scope, f, docs, total) for scope, per in stats.items() for f, (docs, total) in per.items()])

    def finish(self, analysis: str, grace: float = GRACE_SECONDS) -> None:
        """Statistics, indexes, ANALYZE, then the swap: one transaction moves every reader over; old ones go later."""
        for stmt in _stats_sql(self.gen):
            self.conn.execute(stmt)
        checkpoint("pg-reindex:after-statistics")  # crash tests: rows and statistics loaded, no indexes
        self.conn.execute("SET maintenance_work_mem = '256MB'")
        for stmt in _index_ddl(self.gen):
            self.conn.execute(stmt)
        for name in _tables(self.gen)[1:] + [f"kb_article_search_g{self.gen}_public",
                                              f"kb_article_search_g{self.gen}_staff"]:
            # VACUUM sets the visibility map: counts over the GIN index then skip the heap
            self.conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
        self.conn.execute(sql.SQL("ANALYZE {}").format(_t("kb_article_search", self.gen)))
        checkpoint("pg-reindex:before-swap")  # crash tests: the generation complete and analysed, not current
        with self.conn.transaction():
            self.conn.execute("UPDATE kb_search_generations SET state = 'retired', retired_at = now() "
                              "WHERE state = 'current'")
            self.conn.execute("UPDATE kb_search_generations SET state = 'current', analysis = %s "
                              "WHERE generation = %s", (analysis, self.gen))
            self.conn.execute("""INSERT INTO kb_search_current (generation) VALUES (%s)
                                 ON CONFLICT (only_row) DO UPDATE SET generation = excluded.generation,
                                 swapped_at = now()""", (self.gen,))
        log.info("search generation %d is current", self.gen)
        checkpoint("pg-reindex:after-swap")  # crash tests: swapped in, the old generations not yet cleaned up
        self.drop_old(grace)
        self.gen = 0  # committed: __exit__ no longer drops it

    def drop_old(self, grace: float = GRACE_SECONDS) -> list[int]:
        """Drop generations retired more than `grace` seconds ago, and builds abandoned long ago."""
        old = [int(r[0]) for r in self.conn.execute(
            "SELECT generation FROM kb_search_generations WHERE (state = 'retired' AND retired_at < "
            "now() - make_interval(secs => %s)) OR (state = 'building' AND generation <> %s AND created_at < "
            "now() - make_interval(secs => %s))", (grace, self.gen, STALE_BUILD_SECONDS)).fetchall()]
        for gen in old:
            self._drop(gen)
            self.conn.execute("DELETE FROM kb_search_generations WHERE generation = %s", (gen,))
        return old + self.drop_abandoned()

    def drop_abandoned(self) -> list[int]:
        """Drop 'building' generations whose builder's lock is free: its process was killed or lost its session."""
        dropped = []
        for (gen,) in self.conn.execute("SELECT generation FROM kb_search_generations WHERE state = 'building' "
                                        "AND generation <> %s ORDER BY generation", (self.gen,)).fetchall():
            if not self.conn.execute(f"SELECT pg_try_advisory_lock({_BUILD_KEY})", (BUILD_LOCK, gen)).fetchone()[0]:
                continue  # its builder is still at work
            try:
                self._drop(int(gen))
                self.conn.execute("DELETE FROM kb_search_generations WHERE generation = %s", (gen,))
            finally:
                self.conn.execute(f"SELECT pg_advisory_unlock({_BUILD_KEY})", (BUILD_LOCK, gen))
            log.warning("dropped search generation %d: its build was abandoned (the builder is gone)", gen)
            dropped.append(int(gen))
        return dropped

    def _drop(self, gen: int) -> None:
        for name in _tables(gen) + [t.format(gen) for t in _LEGACY_TABLES]:
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


#: A signed document source for the update's deltas: +1 per new row, -1 per removed row, in each of its scopes.
_SIGNED = ("(SELECT *, 1 AS sign FROM kb_upd_new UNION ALL SELECT *, -1 FROM kb_upd_gone) AS d CROSS JOIN LATERAL "
           "(SELECT 'all' UNION ALL SELECT 'public' WHERE d.subindex = 'public') AS s(scope)")

#: A posting row's arrays without the removed documents' entries (p: the row; %(gone)s: their ids).
_KEPT = ("SELECT coalesce(array_agg(x.i ORDER BY x.o), '{{}}'), coalesce(array_agg(x.t ORDER BY x.o), '{{}}'), "
         "coalesce(array_agg(x.l ORDER BY x.o), '{{}}') FROM unnest(p.article_ids, p.tfs, p.lens) "
         "WITH ORDINALITY AS x(i, t, l, o) WHERE x.i <> ALL(%(gone)s::int[])")

_UPDATE_TEMP = [
    """CREATE TEMP TABLE kb_upd_term (scope text COLLATE "C", term text COLLATE "C", field text COLLATE "C",
         df integer) ON COMMIT DROP""",
    """CREATE TEMP TABLE kb_upd_word (scope text COLLATE "C", word text COLLATE "C", df integer) ON COMMIT DROP""",
    """CREATE TEMP TABLE kb_upd_terms (subindex text COLLATE "C", term text COLLATE "C") ON COMMIT DROP""",
    """CREATE TEMP TABLE kb_upd_post (term text COLLATE "C", field "char", subindex text COLLATE "C",
         article_ids integer[], tfs smallint[], lens integer[]) ON COMMIT DROP""",
]


def _add_df(table: sql.Identifier, delta: str, key: tuple[str, ...]) -> list[tuple[str, sql.Composable]]:
    """Add the signed document frequencies of temporary table `delta` to `table` (same `key` columns and df),
    then delete the keys no document holds any more."""
    cols = sql.SQL(", ").join(map(sql.Identifier, key))
    same = sql.SQL(" AND ").join(sql.SQL("t.{0} = d.{0}").format(sql.Identifier(k)) for k in key)
    return [
        ("", sql.SQL("ANALYZE {}").format(sql.Identifier(delta))),
        ("", sql.SQL("INSERT INTO {} AS t ({}, df) SELECT {}, df FROM {} ON CONFLICT ({}) DO UPDATE "
                     "SET df = t.df + excluded.df").format(table, cols, cols, sql.Identifier(delta), cols)),
        ("", sql.SQL("DELETE FROM {} t USING {} d WHERE {} AND t.df <= 0").format(table, sql.Identifier(delta), same)),
    ]


def _update_sql(gen: int) -> list[tuple[str, sql.Composable]]:
    """The in-place update once kb_upd_new (new rows) and kb_upd_gone (rows to remove) are filled: each derived
    table gets the difference, computed from the same columns with the same expressions as a build's."""
    doc, posting, term = _t("kb_article_search", gen), _t("kb_search_posting", gen), _t("kb_search_term", gen)
    word, field = _t("kb_search_word", gen), _t("kb_search_field", gen)
    q = sql.SQL
    return [
        ("term df", q("INSERT INTO kb_upd_term SELECT scope, term, field, sum(sign) FROM ("
                      "SELECT s.scope, u.lexeme AS term, f.field, d.sign FROM " + _SIGNED
                      + " CROSS JOIN LATERAL unnest(d.tsv) u CROSS JOIN LATERAL " + _WEIGHTS
                      + " WHERE f.w IS NULL OR f.w = ANY(u.weights) UNION ALL "
                      "SELECT s.scope, u.lexeme, 'lead', d.sign FROM " + _SIGNED
                      + " CROSS JOIN LATERAL unnest(d.lead_tsv) u UNION ALL "
                      "SELECT s.scope, d.title_key, 'title_key', d.sign FROM " + _SIGNED + " WHERE d.title_key <> ''"
                      ") x GROUP BY scope, term, field HAVING sum(sign) <> 0")),
        *_add_df(term, "kb_upd_term", ("scope", "term", "field")),
        ("field stats", q("INSERT INTO {} AS t (scope, field, docs, total_len) SELECT s.scope, f.field, sum(d.sign), "
                          "sum(d.sign * d.exact[f.i]) FROM " + _SIGNED + " CROSS JOIN LATERAL unnest(%(fields)s::text[]) "
                          "WITH ORDINALITY AS f(field, i) GROUP BY s.scope, f.field ON CONFLICT (scope, field) DO UPDATE "
                          "SET docs = t.docs + excluded.docs, total_len = t.total_len + excluded.total_len").format(field)),
        ("", q("DELETE FROM {} WHERE docs <= 0").format(field)),
        ("word df", q("INSERT INTO kb_upd_word SELECT s.scope, w, sum(d.sign) FROM " + _SIGNED
                      + " CROSS JOIN LATERAL unnest(d.words) w GROUP BY s.scope, w HAVING sum(d.sign) <> 0")),
        *_add_df(word, "kb_upd_word", ("scope", "word")),
        # postings: every (sub-index, term) a removed document held loses its id and the new documents' ids are
        # appended, each row rewritten once (a long posting array is a large value to write)
        ("postings", q("INSERT INTO kb_upd_terms SELECT DISTINCT d.subindex, u.lexeme FROM kb_upd_gone d "
                       "CROSS JOIN LATERAL (SELECT lexeme FROM unnest(d.tsv) UNION "
                       "SELECT lexeme FROM unnest(d.lead_tsv)) u")),
        ("", q("ANALYZE kb_upd_terms")),
        ("", q("ANALYZE kb_upd_post")),
        ("", q("UPDATE {} p SET (article_ids, tfs, lens) = (" + _KEPT + ") FROM kb_upd_terms g "
               "WHERE p.term = g.term AND p.subindex = g.subindex AND p.article_ids && %(gone)s::int[] "
               "AND NOT EXISTS (SELECT 1 FROM kb_upd_post n WHERE n.term = p.term AND n.field = p.field "
               "AND n.subindex = p.subindex)").format(posting)),
        ("", q("INSERT INTO {} AS p (term, field, subindex, article_ids, tfs, lens) SELECT term, field, subindex, "
               "article_ids, tfs, lens FROM kb_upd_post ON CONFLICT (term, field, subindex) DO UPDATE SET "
               "(article_ids, tfs, lens) = (SELECT k.ids || excluded.article_ids, k.tfs || excluded.tfs, "
               "k.lens || excluded.lens FROM (" + _KEPT + ") AS k(ids, tfs, lens))").format(posting)),
        ("", q("DELETE FROM {} p USING kb_upd_terms g WHERE p.term = g.term AND p.subindex = g.subindex "
               "AND cardinality(p.article_ids) = 0").format(posting)),
        ("documents", q("DELETE FROM {} WHERE article_id = ANY(%(remove)s::bigint[])").format(doc)),
        ("", q("INSERT INTO {} SELECT * FROM kb_upd_new").format(doc)),
    ]


class GenerationUpdate:
    """Changes the current generation in place, in one transaction: `begin`, `add_documents`, `add_postings`,
    `finish`. Readers see the generation before or after it (MVCC); a killed update leaves it as it was."""

    def __init__(self, url: str) -> None:
        self.conn = _connect(url, autocommit=False)
        self.gen = 0

    def __enter__(self) -> "GenerationUpdate":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()  # without a commit the transaction is rolled back

    def begin(self, gen: int) -> None:
        """Lock the current-generation row (a rebuild's swap waits for us) and give it a new revision, so
        searchers' cached statistics of this generation expire when the update commits (`current_revision`)."""
        found = self.conn.execute("UPDATE kb_search_current SET generation = generation WHERE generation = %s",
                                  (gen,)).rowcount
        if found != 1:
            raise KBError(f"Search generation {gen} stopped being current during the update.",
                          "Run `kb update` again.")
        self.gen = gen
        doc = _t("kb_article_search", gen)
        self.conn.execute(sql.SQL("CREATE TEMP TABLE kb_upd_new (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(doc))
        for stmt in _UPDATE_TEMP:
            self.conn.execute(stmt)

    def add_documents(self, rows: Iterable[DocRow]) -> dict[str, int]:
        """COPY the new rows of the changed documents into the transaction's scratch table; per sub-index."""
        counts = {"public": 0, "staff": 0}
        stmt = sql.SQL("COPY kb_upd_new ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, DOC_COLUMNS)))
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in rows:
                copy.write_row(row.values)
                counts[row.subindex] += 1
        return counts

    def add_postings(self, postings: Iterable[tuple[str, str, str, list[int], list[int], list[int]]]) -> None:
        """The new documents' postings, (term, field letter, subindex, ids, tfs, lengths) as a build writes them."""
        stmt = "COPY kb_upd_post (term, field, subindex, article_ids, tfs, lens) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in postings:
                copy.write_row(row)

    def finish(self, remove: Iterable[int], analysis: str) -> list[int]:
        """Remove every row of `remove` (ids rewritten or deleted), add the new rows, adjust every statistic,
        record `analysis` (the build notes) and commit; returns the ids whose rows were removed."""
        remove = sorted(set(remove))
        self.conn.execute(sql.SQL("CREATE TEMP TABLE kb_upd_gone ON COMMIT DROP AS SELECT * FROM {} "
                                  "WHERE article_id = ANY(%s::bigint[])").format(_t("kb_article_search", self.gen)),
                          (remove,))
        self.conn.execute("ANALYZE kb_upd_new")
        self.conn.execute("ANALYZE kb_upd_gone")
        gone = [int(r[0]) for r in self.conn.execute("SELECT article_id FROM kb_upd_gone").fetchall()]
        params = {"gone": sorted(set(gone)), "remove": remove, "fields": list(STAT_FIELDS)}
        spent: dict[str, float] = {}
        step = "setup"
        for what, stmt in _update_sql(self.gen):
            step = what or step
            started = time.perf_counter()
            self.conn.execute(stmt, params)
            spent[step] = spent.get(step, 0.0) + time.perf_counter() - started
        log.debug("search generation %d update: %s", self.gen, ", ".join(f"{k} {v:.2f}s" for k, v in spent.items()))
        self.conn.execute("UPDATE kb_search_generations SET analysis = %s WHERE generation = %s", (analysis, self.gen))
        checkpoint("pg-update:before-commit")  # crash tests: every change made, nothing committed
        self.conn.commit()
        return gone


def _lock_holder(conn: psycopg.Connection) -> str:
    """Who holds this schema's writer lock, from pg_stat_activity: application name, client, server pid."""
    row = conn.execute(
        "SELECT a.application_name, coalesce(host(a.client_addr), 'local socket'), a.pid, "
        "to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = %s::oid AND l.objid = hashtext(current_schema())::oid AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (WRITER_LOCK,)).fetchone()
    if row is None:
        return "holder unknown"
    name, client, pid, started = row
    return f"{name or 'an unnamed session'} from {client}, server pid {pid}, connected {started}"


_writers: dict[str, tuple[psycopg.Connection, int, list[int]]] = {}  # url -> (lock session, thread, [depth])
_writers_guard = threading.Lock()


@contextmanager
def writer_lock(url: str, command: str, *, wait: float | None = None) -> Iterator[None]:
    """One writer (rebuild, update, reindex_ids) at a time on this database schema, from any host.

    A session-level advisory lock on its own connection: the server releases it when the session ends, so a
    `kill -9` (or a lost host, after TCP keepalives give up) never blocks the next run. Waits up to `wait`
    (WRITER_WAIT) seconds, as kb.index waits for the Whoosh write lock, then raises LockHeld naming the holder.
    Re-entrant within one thread.
    """
    with _writers_guard:
        held = _writers.get(url)
        if held is not None:
            if held[1] != threading.get_ident():
                raise LockHeld("Another kb writer in this process is writing the search index.",
                               "Wait for it to finish and try again.")
            held[2][0] += 1
    if held is None:
        name = f"kb {command} (pid {os.getpid()} on {socket.gethostname()})"[:63]
        conn = _connect(url, application_name=name)
        try:
            for setting in ("tcp_keepalives_idle = 60", "tcp_keepalives_interval = 10", "tcp_keepalives_count = 3"):
                conn.execute("SET " + setting)
            deadline = time.monotonic() + (WRITER_WAIT if wait is None else wait)
            while not conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                                   (WRITER_LOCK,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    raise LockHeld(f"Another kb writer is writing the search index in {redact(url)} "
                                   f"({_lock_holder(conn)}).",
                                   "Wait for it to finish and try again; a killed writer's lock is released "
                                   "when its database session ends.")
                time.sleep(0.1)
        except BaseException:
            conn.close()
            raise
        with _writers_guard:
            held = _writers[url] = (conn, threading.get_ident(), [1])
    try:
        yield
    finally:
        with _writers_guard:
            held[2][0] -= 1
            done = held[2][0] == 0
            if done:
                del _writers[url]
        if done:
            held[0].close()  # ends the session: the lock goes with it


# -- reading -----------------------------------------------------------------------------------------------

_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _configure(conn: psycopg.Connection) -> None:
    """Search sessions: no JIT (plans are tiny, JIT costs 10-100 ms), custom plans (selectivity of each tsquery)."""
    conn.execute("SET jit = off")
    conn.execute("SET plan_cache_mode = force_custom_plan")
    conn.execute("SET work_mem = '32MB'")


def search_pool(url: str) -> ConnectionPool:
    """The process's pool of search sessions on `url`."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            pool = _pools[url] = ConnectionPool(
                url, min_size=1, max_size=8, open=True, timeout=10.0, configure=_configure,
                name="search " + redact(url),
                kwargs={"autocommit": True, "row_factory": tuple_row, "connect_timeout": CONNECT_TIMEOUT,
                        "application_name": "kb search"})
        return pool


def close_search_pool(url: str) -> None:
    with _pools_lock:
        pool = _pools.pop(url, None)
    if pool is not None:
        pool.close()


@contextmanager
def session(url: str) -> Iterator[psycopg.Connection]:
    """A search session from the pool; an unreachable database is IndexUnavailable, missing tables IndexDamaged."""
    try:
        with search_pool(url).connection() as conn:
            yield conn
    except psycopg.errors.UndefinedTable as exc:
        raise IndexDamaged(f"The PostgreSQL search generation cannot be read ({exc}).") from None
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise IndexUnavailable(f"The PostgreSQL search database {redact(url)} cannot be reached ({exc}).",
                               "Check DATABASE_URL and that the server is running.") from None


class ReplicaFailed(Exception):
    """A replica could not answer a search read; the searcher tries the next replica or the primary."""


@contextmanager
def replica_session(url: str) -> Iterator[psycopg.Connection]:
    """A search session on a replica. A connection failure takes the replica out of rotation (as store reads
    do); that or a table the replica has not replayed yet raises ReplicaFailed, so the caller reads elsewhere."""
    try:
        with search_pool(url).connection(timeout=REPLICA_CHECKOUT) as conn:
            yield conn
    except psycopg.errors.UndefinedTable as exc:
        raise ReplicaFailed(str(exc)) from None
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        mark_down(url, exc)
        raise ReplicaFailed(str(exc)) from None


def current_revision(conn: psycopg.Connection) -> tuple[int, str] | None:
    """(generation readers use, its revision), or None before the first build.

    The revision is the xmin of kb_search_current's row, which every swap and every in-place update rewrites:
    statistics a reader caches (kb.search.pg) are keyed on both, so they expire when an update commits even
    though the generation number stays the same.
    """
    try:
        row = conn.execute("SELECT generation, xmin::text FROM kb_search_current").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return (int(row[0]), str(row[1])) if row else None


def current_generation(conn: psycopg.Connection) -> int | None:
    """The generation readers use, or None before the first build."""
    found = current_revision(conn)
    return found[0] if found else None


def field_stats(conn: psycopg.Connection, gen: int, scope: str) -> list[tuple[str, int, int]]:
    """(field, documents, total length) of one scope."""
    return conn.execute(sql.SQL("SELECT field, docs, total_len FROM {} WHERE scope = %s").format(
        _t("kb_search_field", gen)), (scope,)).fetchall()


def term_stats(conn: psycopg.Connection, gen: int, scope: str, terms: Sequence[str]) -> list[tuple[str, str, int]]:
    """(term, field, df) of every field holding one of `terms` in `scope`: one round trip per query."""
    return conn.execute(sql.SQL("SELECT term, field, df FROM {} WHERE scope = %s AND term = ANY(%s)").format(
        _t("kb_search_term", gen)), (scope, list(terms))).fetchall()


def doc_table(gen: int, scope: str) -> sql.Identifier:
    """Anonymous: the public partition alone (its own GIN index and statistics); staff: the parent."""
    return sql.Identifier(f"kb_article_search_g{gen}_public" if scope == "public" else f"kb_article_search_g{gen}")


def date_order(conn: psycopg.Connection, gen: int, scope: str) -> tuple[list[int], list[float]]:
    """(article ids newest first, their published epoch or 0) of every document of `scope`: two arrays, one row."""
    row = conn.execute(sql.SQL(
        "SELECT coalesce(array_agg(article_id ORDER BY p DESC, article_id), '{{}}'), "
        "coalesce(array_agg(p ORDER BY p DESC, article_id), '{{}}') FROM (SELECT article_id, "
        "coalesce(extract(epoch FROM published), 0)::float8 AS p FROM {}) d").format(doc_table(gen, scope)),
        binary=True).fetchone()
    return list(row[0]), list(row[1])


def value_ids(conn: psycopg.Connection, gen: int, scope: str) -> list[tuple[str, str, list[int]]]:
    """(field, value, article ids) of the filter and facet fields (audience, site, year, tags, categories): one
    plain aggregate per field (a lateral union per row took five times as long at 100,000 documents)."""
    table = doc_table(gen, scope)
    parts = [sql.SQL("SELECT {}, {} AS v, array_agg(article_id) FROM {} {} GROUP BY v").format(
        sql.Literal(name), sql.SQL(value), table, sql.SQL(join))
        for name, value, join in (("audience", "audience", ""), ("site", "site", ""), ("year", "year", ""),
                                  ("tags", "t", ", unnest(tags) t"), ("categories", "c", ", unnest(categories) c"))]
    return [r for r in conn.execute(sql.SQL(" UNION ALL ").join(parts), binary=True).fetchall() if r[1]]


def title_ids(conn: psycopg.Connection, gen: int, scope: str, key: str) -> list[int]:
    """Article ids whose whole normalised title is `key` (the exact-title clause)."""
    return [int(r[0]) for r in conn.execute(sql.SQL("SELECT article_id FROM {} WHERE title_key = %s").format(
        doc_table(gen, scope)), (key,)).fetchall()]


def posting_ids(conn: psycopg.Connection, gen: int, subindexes: Sequence[str], terms: Sequence[str],
                scored: int = 0) -> list[tuple[str, str, list[int], list[int] | None, list[int] | None]]:
    """(term, field letter, article ids, term frequencies, field lengths) of every field holding one of `terms` in
    `subindexes`; frequencies and lengths only for lists of at most `scored` documents (None otherwise)."""
    return conn.execute(sql.SQL(
        "SELECT term, field, article_ids, CASE WHEN cardinality(article_ids) <= %s THEN tfs END, "
        "CASE WHEN cardinality(article_ids) <= %s THEN lens END FROM {} WHERE term = ANY(%s) AND subindex = ANY(%s)")
        .format(_t("kb_search_posting", gen)), (scored, scored, list(terms), list(subindexes)), binary=True).fetchall()


def postings(conn: psycopg.Connection, gen: int, subindexes: Sequence[str], letter: str,
             term: str) -> list[tuple[list[int], list[int], list[int]]]:
    """(article ids, term frequencies, field lengths) of one term in one field, per sub-index (BM25F)."""
    return conn.execute(sql.SQL("SELECT article_ids, tfs, lens FROM {} WHERE term = %s AND field = %s "
                                "AND subindex = ANY(%s)").format(_t("kb_search_posting", gen)),
                        (term, letter, list(subindexes)), binary=True).fetchall()


def phrase_docs(conn: psycopg.Connection, gen: int, scope: str, ids: list[int],
                phrases: Sequence[tuple[str, bool]]) -> list[list[int]]:
    """For each (tsquery, on the lead) of `phrases` (positions, `<->`), which of `ids` match it, in id order: one
    read of each document's tsvectors however many phrases are checked."""
    if not phrases:
        return []
    checks = sql.SQL(", ").join(
        sql.SQL("d.{} @@ {}::tsquery").format(sql.Identifier("lead_tsv" if lead else "tsv"), sql.Literal(q))
        for q, lead in phrases)
    out: list[list[int]] = [[] for _ in phrases]
    for row in conn.execute(sql.SQL("SELECT d.article_id, {} FROM {} d WHERE d.article_id = ANY(%s) ORDER BY 1").format(
            checks, doc_table(gen, scope)), (ids,)).fetchall():
        for i, matched in enumerate(row[1:]):
            if matched:
                out[i].append(int(row[0]))
    return out


def documents(conn: psycopg.Connection, gen: int, scope: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    """What a hit shows, per article id: the generation's fields and the body text from the store."""
    cols = ("url", "title", "site", "pubdate", "tags", "categories", "audience", "kind", "sources", "sections")
    stmt = sql.SQL("SELECT d.article_id, {}, coalesce(a.text, '') FROM {} d LEFT JOIN kb_articles a ON a.id = "
                   "d.article_id WHERE d.article_id = ANY(%s)").format(
        sql.SQL(", ").join(sql.SQL("d.") + sql.Identifier(c) for c in cols), doc_table(gen, scope))
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(stmt, (ids,)).fetchall():
        out[int(row[0])] = {**dict(zip(cols, row[1:-1])), "body": row[-1], "id": int(row[0])}
    return out


#: Words one `words_near` read returns; a caller wanting more reads on from the last (kb.search.pg pages through).
WORDS_PAGE = 2000


def words_near(conn: psycopg.Connection, gen: int, scope: str, prefix: str, shortest: int, longest: int,
               after: str = "") -> list[tuple[str, int]]:
    """(word, df) of `scope` after `after` starting with `prefix` whose length is in range, in code-point order,
    at most WORDS_PAGE (spelling candidates; their df comes along because each candidate's is asked next)."""
    return [(w, int(df)) for w, df in conn.execute(sql.SQL(
        "SELECT word, df FROM {} WHERE scope = %s AND word >= %s AND word > %s AND word < %s "
        "AND length(word) BETWEEN %s AND %s ORDER BY word LIMIT %s").format(_t("kb_search_word", gen)),
        (scope, prefix, after, prefix + "\U0010ffff", shortest, longest, WORDS_PAGE)).fetchall()]


def word_df(conn: psycopg.Connection, gen: int, scope: str, words: Sequence[str]) -> dict[str, int]:
    """Documents of `scope` holding each unstemmed word."""
    return {w: int(df) for w, df in conn.execute(sql.SQL(
        "SELECT word, df FROM {} WHERE scope = %s AND word = ANY(%s)").format(_t("kb_search_word", gen)),
        (scope, list(words))).fetchall()}


def words_with_prefix(conn: psycopg.Connection, gen: int, scope: str, prefix: str, limit: int) -> list[tuple[str, int]]:
    """(word, df) of `scope` starting with `prefix`, commonest first (completions)."""
    return [(w, int(df)) for w, df in conn.execute(sql.SQL(
        "SELECT word, df FROM (SELECT word, df FROM {} WHERE scope = %s AND word >= %s AND word < %s ORDER BY word "
        "LIMIT 300) w ORDER BY least(df, 50) DESC, word LIMIT %s").format(_t("kb_search_word", gen)),
        (scope, prefix, prefix + "\U0010ffff", limit)).fetchall()]


def titles_with_prefix(conn: psycopg.Connection, gen: int, scope: str, key: str, limit: int) -> list[str]:
    """Titles whose title key starts with `key`, in title-key order (completions)."""
    return [r[0] for r in conn.execute(sql.SQL(
        "SELECT DISTINCT ON (d.title_key) d.title FROM {} d WHERE d.title_key >= %s AND d.title_key < %s "
        "ORDER BY d.title_key, d.article_id LIMIT %s").format(doc_table(gen, scope)),
        (key, key + "\U0010ffff", limit)).fetchall()]


# -- maintenance: what `kb update`, `kb check`, `kb stats` and /healthz read ---------------------------------

@contextmanager
def _maintenance(url: str) -> Iterator[psycopg.Connection]:
    """A short connection for maintenance reads; a generation that cannot be read is IndexDamaged."""
    conn = _connect(url)
    try:
        yield conn
    except psycopg.Error as exc:
        raise IndexDamaged(f"The PostgreSQL search generation cannot be read ({exc}).") from None
    finally:
        conn.close()


def generation_facts(url: str) -> dict[str, Any] | None:
    """The current generation: number, build notes (JSON text), swap time, documents per sub-index, size; None
    before the first build (or before the migrations made the ledger)."""
    with _maintenance(url) as conn:
        gen = current_generation(conn)
        if gen is None:
            return None
        analysis, swapped = conn.execute(
            "SELECT g.analysis, c.swapped_at FROM kb_search_current c JOIN kb_search_generations g "
            "USING (generation)").fetchone()
        counts = dict.fromkeys(("public", "staff"), 0)
        for sub, n in conn.execute(sql.SQL("SELECT subindex, count(*) FROM {} GROUP BY subindex").format(
                _t("kb_article_search", gen))).fetchall():
            counts[str(sub)] = int(n)
        size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                            "AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
                            (_tables(gen)[1:] + [f"kb_article_search_g{gen}_public",
                                                 f"kb_article_search_g{gen}_staff"],)).fetchone()[0]
    return {"generation": gen, "analysis": analysis, "swapped_at": swapped, "subindexes": counts,
            "size_bytes": int(size)}


def indexed_rows(url: str) -> list[tuple[int, str, str, str]]:
    """(article id, sub-index, audience, content hash) of every document of the current generation."""
    with _maintenance(url) as conn:
        gen = current_generation(conn)
        if gen is None:
            return []
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(sql.SQL(
            "SELECT article_id, subindex, audience, hash FROM {} ORDER BY article_id").format(
            _t("kb_article_search", gen))).fetchall()]


# -- scratch copies: `kb eval` builds its copy in a schema of its own and drops it --------------------------

def with_search_path(url: str, schema: str) -> str:
    """`url` whose sessions see `schema` alone (search_path): kb's unqualified tables then live there."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["options"] = (query.get("options", "") + f" -csearch_path={schema}").strip()
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def scratch_schema(url: str, prefix: str = "kb_scratch") -> Iterator[str]:
    """A new empty schema in `url`'s database, dropped with everything in it afterwards; yields a URL on it.

    Needs the CREATE privilege on the database (the owner has it), not CREATE DATABASE.
    """
    from kb.store.postgres_pool import close_pools

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with _maintenance(url) as conn:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise KBError(f"kb cannot create a scratch schema in {redact(url)}.",
                          "Grant the kb role CREATE on its database (GRANT CREATE ON DATABASE ... TO ...).") from None
    scoped = with_search_path(url, name)
    try:
        yield scoped
    finally:
        close_search_pool(scoped)
        close_pools([scoped])
        with _maintenance(url) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        log.info("dropped the scratch schema %s", name)
