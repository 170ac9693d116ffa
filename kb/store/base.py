"""The store interface: what kb asks of its source of truth, whatever database keeps it.

Web, CLI, pipeline, indexer and the domain modules (users, querylog, faq, maintenance) call only the
methods of `Store`; `kb.store.sqlite.SQLiteStore` implements them over one SQLite file and
`kb.store.postgres.PostgresStore` over a PostgreSQL primary and its replicas. Rules every implementation keeps:

- Nothing of the driver crosses the interface: arguments and results are kb's dataclasses (`Article`,
  `Section`), plain dicts, lists, tuples, strings and numbers. Dict rows are fresh copies the caller owns.
- Every method is atomic on its own (all of its writes commit together or not at all); `transaction()`
  groups several calls when a caller needs that, and nests.
- Audiences: a read that returns or counts articles takes `audiences` (see `kb.store.audience`). With a
  tuple, no record outside it is returned, counted, or changes what is returned (order, counts, groups);
  the filter runs inside the query. None means every audience and is only for callers that answer no
  reader (pipeline, indexer, CLI); code answering a request passes the reader's audiences. The pipeline's
  and indexer's bookkeeping (ids, hashes, pages, the change and crawl logs) takes none: it answers nobody.
- Reader reads: a read given an `audiences` tuple (and `topic_counts`, `faq_entries`, `faq_count`) answers a
  reader and may be served by a read replica, slightly behind the primary; every other read, every account,
  session, token and rate-limit read, and any read by a store that has written or is inside `transaction()`,
  sees the primary (read-your-writes).
- A store opens ready to use: its schema is created or migrated once, when it opens (`kb.store.migrations`).
- Times are ISO 8601 UTC strings to the second (`kb.clock.utc_iso()`), except login attempts (seconds since the epoch).

The helpers at the bottom are pure and shared by the implementations.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Iterable, Iterator

from kb.boilerplate import block_fingerprints, find_boilerplate_sets, set_for, strip_boilerplate
from kb.errors import KBError
from kb.models import Article, Section
from kb.neardup import fingerprint, to_text
from kb.store.audience import Audiences


class StoreError(KBError):
    """A write the caller may do without (a query-log row, a token's last use) failed: the store is busy or
    cannot be written. Methods that raise it say so; the caller decides whether the failure matters."""


class Store(ABC):
    """The source of truth for pages, articles, accounts and the query log; one per thread or per request."""

    #: The database file, for a store that is one file (SQLite); None for a database server.
    path: Path | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group several calls all-or-nothing (a batch of saves commits once); nests: inner blocks join the
        outer one. Yields nothing: the statements stay the store's business. An exception rolls back."""

    # -- meta ----------------------------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """The value stored under `key` (small settings such as an audit's rule fingerprint), else `default`."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing any earlier value."""

    # -- pages: fetch state for conditional GET and removal; no audience, they serve no reader -------------
    @abstractmethod
    def get_page(self, url: str) -> dict[str, Any] | None:
        """The fetch state of `url` (url, source, canonical, status, content_type, fetched_at, etag,
        last_modified, content_hash, article_id, error, misses), or None when never recorded."""

    @abstractmethod
    def record_page(self, url: str, **fields: Any) -> None:
        """Insert or update the fetch state of `url`; only the given columns change (`fetched_at` defaults
        to now)."""

    @abstractmethod
    def pages_for_source(self, source: str) -> list[dict[str, Any]]:
        """The fetch state of every page of `source`, by URL."""

    @abstractmethod
    def page_errors(self, source: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Pages whose last crawl skipped them [{"url", "source", "status", "fetched_at", "error"}] (error is
        "kind: reason"), by source, error and URL, for `kb crawl --report`."""

    @abstractmethod
    def put_raw(self, url: str, body: bytes, content_type: str = "") -> None:
        """Keep the raw response of `url` (compressed) so re-extraction never re-downloads."""

    @abstractmethod
    def get_raw(self, url: str) -> tuple[bytes, str] | None:
        """(body, content type) as kept by `put_raw`, or None."""

    # -- articles --------------------------------------------------------------------------------------------
    @abstractmethod
    def save_article(self, article: Article, source: str = "") -> tuple[int, str]:
        """Store `article` by URL; (id, "new" | "updated" | "unchanged"), and sets `article.id`.

        Unchanged content (same `content_hash`) writes nothing but new section markup. A new or changed
        article is regrouped with its near-duplicates (same audience and kind only) and logs the changes the
        index needs, in the same transaction.
        """

    @abstractmethod
    def delete_article(self, article_id: int) -> bool:
        """Remove an article and log the deletion; its near-duplicate group re-forms. False when no such id."""

    @abstractmethod
    def get_article(self, article_id: int, *, audiences: Audiences = None) -> Article | None:
        """The article as read (its site's boilerplate stripped), or None when there is no such id or its
        audience is not one of `audiences` (a hidden article looks exactly like a missing one)."""

    def get_visible_article(self, article_id: int, audiences: tuple[str, ...] = ("public",)) -> Article | None:
        """The article when a reader of `audiences` may see it, else None; the web's article lookup."""
        return self.get_article(article_id, audiences=audiences)

    @abstractmethod
    def get_article_by_url(self, url: str, *, audiences: Audiences = None) -> Article | None:
        """Like `get_article` (None when missing or outside `audiences`), by the stored URL."""

    @abstractmethod
    def get_raw_article(self, article_id: int | None = None, *, url: str | None = None,
                        audiences: Audiences = None) -> Article | None:
        """The article exactly as extracted and stored, boilerplate included (debugging, `kb explain`), by id
        or by `url`; None when missing or outside `audiences`."""

    @abstractmethod
    def iter_articles(self, ids: Iterable[int] | None = None, batch: int = 500, *,
                      audiences: Audiences = None) -> Iterator[Article]:
        """Every article (or those of `ids`) as read, in id order, `batch` at a time so memory stays flat;
        only those of `audiences`."""

    @abstractmethod
    def article_source(self, article_id: int) -> str | None:
        """The source name an article was stored under, or None when there is no such id."""

    @abstractmethod
    def article_ids(self, source: str | None = None) -> dict[str, int]:
        """URL -> id of every article (of one source), for the pipeline's bookkeeping."""

    @abstractmethod
    def article_ids_with_prefix(self, prefix: str) -> dict[str, int]:
        """URL -> id of the articles whose URL starts with `prefix` (a page's FAQ records: "page#")."""

    @abstractmethod
    def article_sites(self, source: str) -> list[str]:
        """Sites (host names) the source's stored articles come from, A-Z."""

    @abstractmethod
    def count_articles(self, *, audiences: Audiences = None, **where: str) -> int:
        """How many articles match every `column=value` of `where` (source, site, audience, kind) and are
        of `audiences`."""

    @abstractmethod
    def counts_by(self, *columns: str, audiences: Audiences = None) -> list[dict[str, Any]]:
        """Article counts of `audiences` grouped by some of site, audience, kind, source [{column...,
        "articles"}], for `kb stats` and the home page."""

    @abstractmethod
    def read_hashes(self) -> dict[int, str]:
        """Article id -> content hash of the article as read (what the indexer stores), for `kb check`."""

    @abstractmethod
    def topic_counts(self, column: str, audiences: tuple[str, ...] = ("public",),
                     limit: int = 50) -> list[tuple[str, int]]:
        """The `limit` most common "categories" or "tags" values of the articles of `audiences` with their
        article counts, most common first; ValueError for any other column."""

    # -- site boilerplate: learned per site, stripped on read (kb.boilerplate) ---------------------------
    @abstractmethod
    def boilerplate_fingerprints(self, site: str, audience: str = "public") -> frozenset[str]:
        """The site's boilerplate paragraph fingerprints stripped from its articles of `audience` ("public": learned
        from the public articles only; any other: from every article), cached until any connection changes the store."""

    @abstractmethod
    def refresh_boilerplate(self, site: str, *, min_share: float, min_pages: int) -> tuple[int, int]:
        """Recompute the site's boilerplate sets (`kb.boilerplate.SETS`) from its stored articles; (fingerprints
        added to, removed from any set). A changed set logs an index change for exactly the articles whose text
        as read changes."""

    def strip_site_boilerplate(self, article: Article) -> Article:
        """`article` without the boilerplate of its site and audience; itself when none repeat or nothing would be left."""
        site_set = self.boilerplate_fingerprints(article.site, article.audience) if article.site else frozenset()
        if not site_set:
            return article
        stripped = strip_boilerplate(article, set(site_set))
        return stripped if stripped.text.strip() else article

    # -- near-duplicate groups (kb.neardup): one search result per group, listing every copy -------------
    @abstractmethod
    def copies(self, article_id: int, audiences: Audiences = None) -> list[dict[str, Any]]:
        """The article's near-duplicate group [{"id", "url", "site", "title"}], primary first ([] if no such
        id); only the copies of `audiences`. A group never mixes audiences."""

    @abstractmethod
    def group_sources(self, ids: Iterable[int], *, audiences: Audiences = None) -> dict[int, list[dict[str, str]]]:
        """Primary id -> [{"url", "site", "title"}] of every copy (of `audiences`), primary first, for those
        of `ids` that have copies."""

    @abstractmethod
    def primary_ids(self) -> list[int]:
        """Ids of every article that is not a near-duplicate of another (the indexer's documents), ascending."""

    @abstractmethod
    def count_primaries(self) -> int:
        """How many articles are not near-duplicates of another."""

    @abstractmethod
    def duplicate_ids(self, ids: Iterable[int]) -> set[int]:
        """Those of `ids` that are near-duplicates (their primary's search document lists them)."""

    # -- change log (incremental index updates) ---------------------------------------------------------
    @abstractmethod
    def last_change(self) -> int:
        """The newest change sequence number (0 when none); it grows with every logged article change."""

    @abstractmethod
    def changes_since(self, seq: int) -> tuple[set[int], set[int], int]:
        """(ids to (re)index, ids to delete, newest seq) for the changes after `seq`; the last op per id wins."""

    # -- crawl log ----------------------------------------------------------------------------------------
    @abstractmethod
    def start_crawl(self, source: str) -> int:
        """Record that a crawl of `source` starts now; its id."""

    @abstractmethod
    def finish_crawl(self, crawl_id: int, stats: dict[str, Any]) -> None:
        """Record the end of a crawl with its statistics (JSON-serialisable)."""

    @abstractmethod
    def recent_crawls(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest crawls first [{"id", "source", "started_at", "finished_at", "stats": dict}]."""

    # -- FAQ records (kind="faq"), for the /faq page -------------------------------------------------------
    @abstractmethod
    def faq_entries(self, audiences: tuple[str, ...], *, limit: int) -> list[dict[str, Any]]:
        """At most `limit` FAQ records of `audiences` [{"id", "url", "title", "text", "categories": list,
        "site", "audience"}], by title (case-insensitive), then id."""

    @abstractmethod
    def faq_count(self, audiences: tuple[str, ...]) -> int:
        """How many FAQ records readers of `audiences` may see."""

    # -- staff accounts (kb.users keeps their meaning: hashing, name rules, session lifetimes) ------------
    # Account changes write their audit row in the same transaction; user names compare case-insensitively.
    # Secrets never reach the store: sessions and tokens arrive as SHA-256 hashes, passwords as hashes.
    @abstractmethod
    def get_user(self, name: str) -> dict[str, Any] | None:
        """The user called `name` {"id", "name", "password_hash", "role", "created_at",
        "password_changed_at", "last_login_at"}, or None."""

    @abstractmethod
    def list_users(self) -> list[dict[str, Any]]:
        """Every user (rows as `get_user`), by name, case-insensitive."""

    @abstractmethod
    def add_user(self, name: str, password_hash: str, role: str, *, at: str) -> dict[str, Any] | None:
        """Create a user (audit event "user_added"); the new row, or None (nothing written) when the name
        is taken."""

    @abstractmethod
    def remove_user(self, name: str, *, at: str) -> str | None:
        """Delete a user with their sessions and tokens (audit "user_removed"); the stored name, or None
        when there is no such user."""

    @abstractmethod
    def change_password(self, name: str, password_hash: str, *, at: str) -> str | None:
        """Set a new password hash and end the user's sessions, tokens kept (audit "password_changed");
        the stored name, or None when there is no such user."""

    @abstractmethod
    def replace_password_hash(self, user_id: int, password_hash: str) -> None:
        """Store a rehash of the same password (a stronger method); no audit, sessions kept."""

    @abstractmethod
    def start_session(self, user_id: int, sid_hash: str, *, at: str, expires_at: str) -> None:
        """Record a sign-in: a session until `expires_at` and the user's last sign-in time; sessions already
        expired at `at` go."""

    @abstractmethod
    def session_user(self, sid_hash: str, *, at: str) -> dict[str, Any] | None:
        """The user (row as `get_user`) of a session live at `at`, or None."""

    @abstractmethod
    def end_session(self, sid_hash: str) -> None:
        """End a session (nothing happens for an unknown one)."""

    @abstractmethod
    def begin_login_attempt(self, key: str, *, at: float, since: float, limit: int) -> int | None:
        """Count one sign-in attempt for client `key` at `at` (epoch seconds): its id, or None when `limit`
        attempts after `since` are used up. Check and count are one write transaction, so concurrent attempts
        from several processes cannot all slip under the limit; a refusal writes nothing. Attempts at or
        before `since` are forgotten."""

    @abstractmethod
    def end_login_attempt(self, attempt: int) -> None:
        """Give an attempt back (a successful sign-in does not use up its client's budget)."""

    @abstractmethod
    def create_token(self, user_id: int, user_name: str, name: str, token_hash: str, hint: str, *,
                     at: str) -> int:
        """Record an API token (audit "token_created"); its id."""

    @abstractmethod
    def list_tokens(self, user_name: str | None = None) -> list[dict[str, Any]]:
        """Tokens (of one user) by id [{"id", "user_id", "user_name", "name", "hint", "created_at",
        "last_used_at", "revoked_at"}]; never the hash."""

    @abstractmethod
    def revoke_token(self, token_id: int, *, at: str) -> dict[str, Any] | None:
        """Revoke an active token (audit "token_revoked"); the token as it was before (row as `list_tokens`),
        or None when there is no such token. An already revoked token is returned and left unchanged."""

    @abstractmethod
    def token_user(self, token_hash: str) -> dict[str, Any] | None:
        """The user (row as `get_user`, plus "token_id") an active token belongs to, or None."""

    @abstractmethod
    def record_token_use(self, token_id: int, user_name: str, *, at: str, detail: str) -> None:
        """Note a token's last use and audit it ("token_used"); StoreError when the store is busy."""

    @abstractmethod
    def add_audit(self, event: str, user: str, detail: str, *, at: str) -> None:
        """Append a security event to the audit log (user cut to 64 characters, detail to 300)."""

    @abstractmethod
    def prune_audit(self, before: str) -> None:
        """Forget audit events older than `before`."""

    @abstractmethod
    def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest audit events first [{"at", "event", "user", "detail"}]."""

    # -- query log (kb.querylog decides what is kept; the store only keeps it) ----------------------------
    @abstractmethod
    def add_query(self, query: str | None, results: int, elapsed_ms: float, audience: str, *, at: str,
                  prune_before: str, wait: float) -> None:
        """Append one search to the query log, forgetting rows older than `prune_before` when there are any.
        Waits at most `wait` seconds for a busy store, then raises StoreError (nothing written)."""

    @abstractmethod
    def queries_since(self, since: str) -> list[dict[str, Any]]:
        """Logged searches at or after `since` [{"query": lower-cased text or None, "results", "elapsed_ms",
        "audience"}] (for staff reports: every audience)."""

    @abstractmethod
    def count_queries(self) -> int:
        """How many searches the query log holds."""

    # -- moving a store to another database (kb.store.transfer, `kb migrate-store`) ------------------------
    # For migration only: these take no audiences because they serve no reader. They move every row as it is
    # stored (staff records, password, session and token hashes included) and must never back a page or the API.
    @abstractmethod
    def transfer_counts(self) -> dict[str, int]:
        """Rows per table of TRANSFER_TABLES: what a migration moves, and whether a target already holds data."""

    @abstractmethod
    def export_rows(self, table: str, batch: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every row of `table` (one of TRANSFER_TABLES) exactly as stored, column -> value, in key order
        (TRANSFER_ORDER), `batch` rows at a time; the store's own bookkeeping (schema version) is left out."""

    @abstractmethod
    def clear_for_import(self) -> None:
        """Delete every row of TRANSFER_TABLES (a forced migration onto a store that holds data); call inside
        `transaction()` so a failed migration keeps what was there."""

    @abstractmethod
    def import_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Insert rows of `export_rows` as they are, ids kept (links and near-duplicate groups stay valid);
        call inside `transaction()` in TRANSFER_TABLES order, then `finish_import`. KBError when a row does
        not fit (an unknown column, a key taken)."""

    @abstractmethod
    def finish_import(self) -> None:
        """Move the id generators past the imported ids and drop read caches, so new rows never collide."""

    # -- shared reading helpers -------------------------------------------------------------------------
    def _strip_boilerplate(self, row: Any, article: Article) -> Article:
        """`article` without its site's boilerplate; unchanged (same hash) when none of its paragraphs repeat.

        A page made of nothing but boilerplate (the clinic's contact page) keeps its text: there the
        paragraph is the content, and it is the right answer for a search for it.
        """
        return self.strip_site_boilerplate(article) if self._has_boilerplate(row) else article

    def _has_boilerplate(self, row: Any) -> bool:
        """Whether any paragraph of the row (needs `site`, `audience`, `fingerprints`) is boilerplate for its audience."""
        if not row["fingerprints"] or not row["site"]:
            return False
        return not self.boilerplate_fingerprints(row["site"], row["audience"]).isdisjoint(row["fingerprints"].split())


# -- pure helpers shared by the implementations -----------------------------------------------------------

#: What a migration moves (kb.store.transfer), parents before children so foreign keys hold while importing.
TRANSFER_TABLES: tuple[str, ...] = (
    "meta", "articles", "sections", "simhash_bands", "site_boilerplate", "pages", "raw_pages", "changes", "crawls",
    "users", "user_sessions", "api_tokens", "audit_log", "login_attempts", "query_log",
)

#: The key each table is exported in order of (the same column names in every store).
TRANSFER_ORDER: dict[str, str] = {
    "meta": "key", "articles": "id", "sections": "article_id, position", "simhash_bands": "article_id, band",
    "site_boilerplate": "site, audience, fingerprint", "pages": "url", "raw_pages": "url", "changes": "seq",
    "crawls": "id", "users": "id", "user_sessions": "sid_hash", "api_tokens": "id", "audit_log": "id",
    "login_attempts": "id", "query_log": "id",
}


def transfer_columns(table: str, rows: list[dict[str, Any]], have: Iterable[str]) -> list[str]:
    """The columns of `rows` for an import into `table`, checked against the target's columns `have`."""
    if table not in TRANSFER_ORDER:
        raise KBError(f"{table!r} is not a table a store migration moves.", f"Use one of {', '.join(TRANSFER_TABLES)}.")
    columns = list(rows[0]) if rows else []
    unknown = set(columns) - set(have)
    if unknown or any(list(r) != columns for r in rows):
        raise KBError(f"The rows for {table} do not match its columns (unknown: {sorted(unknown) or 'none'}).",
                      "Both stores must be of this kb version: upgrade kb, then migrate again.")
    return columns



def article_row(article: Article, source: str) -> tuple[dict[str, Any], int | None]:
    """(column -> value of the articles row, simhash) for `article`; the simhash only for kind="article"."""
    values = {
        "url": article.url, "source": source, "canonical": article.canonical, "site": article.site,
        "title": article.title, "description": article.description, "author": article.author,
        "published": article.published, "modified": article.modified,
        "categories": json.dumps(article.categories), "tags": json.dumps(article.tags),
        "text": article.text, "audience": article.audience, "kind": article.kind, "lang": article.lang,
        "content_hash": article.content_hash, "disclaimer": int(article.disclaimer),
        "fingerprints": " ".join(block_fingerprints(article.text)),
    }
    simhash = fingerprint(article.text) if article.kind == "article" else None
    values["simhash"] = to_text(simhash) if simhash is not None else None
    return values, simhash


def article_from_row(row: Any, sections: list[Section]) -> Article:
    """The Article of an articles row (a mapping by column name) and its sections, as stored."""
    return Article(
        id=row["id"], url=row["url"], canonical=row["canonical"], site=row["site"], title=row["title"],
        description=row["description"], author=row["author"], published=row["published"],
        modified=row["modified"], categories=json.loads(row["categories"]), tags=json.loads(row["tags"]),
        text=row["text"], audience=row["audience"], kind=row["kind"], lang=row["lang"], sections=sections,
        disclaimer=bool(row["disclaimer"]),
    )


def learn_boilerplate(rows: Iterable[Any], *, min_share: float, min_pages: int) -> dict[str, set[str]]:
    """Set name -> fingerprints of a site's article rows (need kind, audience, fingerprints, dup_of).

    Only kind="article" rows count (FAQ records repeat their page, file documents are not the site's pages),
    and only group primaries (a near-duplicate is no independent page).
    """
    pages = ((r["audience"], r["fingerprints"].split()) for r in rows if r["kind"] == "article" and r["dup_of"] is None)
    return find_boilerplate_sets(pages, min_share=min_share, min_pages=min_pages)


def boilerplate_changes(rows: Iterable[Any], found: dict[str, set[str]],
                        old: dict[str, set[str]]) -> tuple[list[int], int, int]:
    """(ids whose text as read changes, fingerprints added to any set, removed from any set) when a site's sets
    go from `old` to `found`; rows need id, audience, fingerprints, dup_of.

    Near-duplicates are not indexed apart from their group's primary: only primaries need reindexing.
    """
    names = set(found) | set(old)
    changed = {name: found.get(name, set()) ^ old.get(name, set()) for name in names}
    affected = [int(r["id"]) for r in rows if r["dup_of"] is None
                and not changed.get(set_for(r["audience"]), set()).isdisjoint(r["fingerprints"].split())]
    added: set[str] = set().union(*(found.get(n, set()) - old.get(n, set()) for n in names))
    removed: set[str] = set().union(*(old.get(n, set()) - found.get(n, set()) for n in names))
    return affected, len(added), len(removed)


def fold_changes(rows: Iterable[tuple[int, int, str]], seq: int) -> tuple[set[int], set[int], int]:
    """(upserts, deletes, newest seq) of change rows (seq, article_id, op) in seq order; the last op per id wins."""
    last: dict[int, str] = {}
    newest = seq
    for change_seq, article_id, op in rows:
        last[article_id] = op
        newest = change_seq
    upserts = {i for i, op in last.items() if op == "upsert"}
    return upserts, set(last) - upserts, newest


def json_list(text: str | None) -> list[Any]:
    """A JSON list column read leniently: [] when empty, unreadable or not a list."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []
