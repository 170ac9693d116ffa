"""One migration path for every table: a data directory of the previous kb opens and upgrades without losing a row.

The previous kb made its tables three ways: the store's schema (version 4) when it opened, the account tables
on the first account lookup (kb.users), the query log after an insert failed (kb.querylog). The statements
below are copied from that version, as the format such a data directory holds.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import zlib
from datetime import datetime
from functools import cache
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from kb import querylog, users
from kb.boilerplate import block_fingerprints
from kb.models import Article, Section
from kb.store import SCHEMA_VERSION, open_store

# -- the previous version's statements (kb/store.py SCHEMA_VERSION 4, kb/users.py, kb/querylog.py) -------------

OLD_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    source TEXT NOT NULL DEFAULT '',
    canonical TEXT NOT NULL DEFAULT '',
    status INTEGER,
    content_type TEXT NOT NULL DEFAULT '',
    fetched_at TEXT,
    etag TEXT,
    last_modified TEXT,
    content_hash TEXT NOT NULL DEFAULT '',
    article_id INTEGER REFERENCES articles(id) ON DELETE SET NULL,
    error TEXT NOT NULL DEFAULT '',
    misses INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pages_source ON pages(source);
CREATE TABLE IF NOT EXISTS raw_pages (
    url TEXT PRIMARY KEY,
    content_type TEXT NOT NULL DEFAULT '',
    fetched_at TEXT,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS articles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL DEFAULT '',
    canonical TEXT NOT NULL DEFAULT '',
    site TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    author TEXT NOT NULL DEFAULT '',
    published TEXT,
    modified TEXT,
    categories TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    text TEXT NOT NULL DEFAULT '',
    audience TEXT NOT NULL DEFAULT 'public',
    kind TEXT NOT NULL DEFAULT 'article',
    lang TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    disclaimer INTEGER NOT NULL DEFAULT 0,
    fingerprints TEXT NOT NULL DEFAULT '',
    simhash TEXT,
    dup_of INTEGER
);
CREATE INDEX IF NOT EXISTS articles_source ON articles(source);
CREATE INDEX IF NOT EXISTS articles_site ON articles(site);
CREATE INDEX IF NOT EXISTS articles_dup_of ON articles(dup_of);
CREATE TABLE IF NOT EXISTS simhash_bands (
    band INTEGER NOT NULL,
    value INTEGER NOT NULL,
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    simhash INTEGER NOT NULL,
    PRIMARY KEY (band, value, article_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS simhash_bands_article ON simhash_bands(article_id);
CREATE TABLE IF NOT EXISTS site_boilerplate (
    site TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (site, fingerprint)
);
CREATE TABLE IF NOT EXISTS sections (
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    heading TEXT NOT NULL,
    anchor TEXT NOT NULL,
    level INTEGER NOT NULL,
    text TEXT NOT NULL,
    html TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (article_id, position)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    article_id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    stats TEXT NOT NULL DEFAULT '{}'
);
"""

OLD_ACCOUNTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'staff',
    created_at TEXT NOT NULL,
    password_changed_at TEXT NOT NULL,
    last_login_at TEXT
);
CREATE TABLE IF NOT EXISTS user_sessions (
    sid_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS user_sessions_user ON user_sessions(user_id);
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    user TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);
"""

# Added by the release that counted sign-in attempts in the store; older stores lack it.
OLD_LOGIN_ATTEMPTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_attempts_address ON login_attempts(address, at);
CREATE INDEX IF NOT EXISTS login_attempts_at ON login_attempts(at);
"""

OLD_QUERY_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS query_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    query TEXT,
    results INTEGER NOT NULL,
    elapsed_ms REAL NOT NULL,
    audience TEXT NOT NULL DEFAULT 'public'
);
CREATE INDEX IF NOT EXISTS query_log_at ON query_log(at);
"""

PASSWORD = "correct horse battery"
SID = "a-session-id-from-the-previous-version"
SECRET = "kb_a-token-from-the-previous-version"
NOW = "2030-01-01T00:00:00+00:00"  # rows dated in the future stay inside every retention window
ATTEMPT_AT = 4_000_000_000.0


@cache
def _password_hash() -> str:
    return generate_password_hash(PASSWORD, users.PASSWORD_METHOD)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


ARTICLES = [
    Article(url="https://clinic.example/rosacea/", title="Rosacea", site="clinic.example", categories=["Redness"],
            tags=["laser"], text="Rosacea causes facial redness; pulsed dye laser reduces visible vessels.",
            sections=[Section("Treatment", "treatment", "Pulsed dye laser reduces visible vessels.", 2,
                              "<p>Pulsed dye laser reduces visible vessels.</p>")]),
    Article(url="https://clinic.example/staff/isotretinoin/", title="Isotretinoin protocol", audience="staff",
            site="clinic.example", text="Monthly pregnancy tests and lipid checks during the course.",
            sections=[Section("Monitoring", "monitoring", "Monthly pregnancy tests and lipid checks.")]),
    Article(url="https://clinic.example/faq/#parking", title="Where can I park?", kind="faq", site="clinic.example",
            text="There is free parking behind the clinic."),
]


def build_previous_version(path: Path, *, accounts: bool = True, login_attempts: bool = True,
                           query_log: bool = True) -> None:
    """A store as the previous kb left it: schema 4, and the tables its users and searches created on first use."""
    db = sqlite3.connect(path)
    _run(db, OLD_STORE_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    db.execute("INSERT INTO meta VALUES ('audience-rules:clinic', 'abc123')")
    for n, article in enumerate(ARTICLES, 1):
        db.execute(
            "INSERT INTO articles (id, url, source, site, title, categories, tags, text, audience, kind, content_hash, "
            "created_at, updated_at, fingerprints) VALUES (?, ?, 'clinic', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (n, article.url, article.site, article.title, json.dumps(article.categories),
             json.dumps(article.tags), article.text, article.audience, article.kind, article.content_hash,
             NOW, NOW, " ".join(block_fingerprints(article.text))))
        for position, s in enumerate(article.sections):
            db.execute("INSERT INTO sections VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (n, position, s.heading, s.anchor, s.level, s.text, s.html))
        db.execute("INSERT INTO changes (article_id, op, at) VALUES (?, 'upsert', ?)", (n, NOW))
        db.execute("INSERT INTO pages (url, source, status, fetched_at, content_hash, article_id) "
                   "VALUES (?, 'clinic', 200, ?, 'h', ?)", (article.url, NOW, n))
    db.execute("INSERT INTO raw_pages VALUES ('https://clinic.example/rosacea/', 'text/html', ?, ?)",
               (NOW, zlib.compress(b"<html>rosacea</html>")))
    db.execute("INSERT INTO site_boilerplate VALUES ('clinic.example', 'deadbeef')")
    db.execute("INSERT INTO crawls (source, started_at, finished_at, stats) VALUES ('clinic', ?, ?, '{\"fetched\": 3}')",
               (NOW, NOW))
    if accounts:
        _run(db, OLD_ACCOUNTS_SCHEMA)
        db.execute("INSERT INTO users (name, password_hash, role, created_at, password_changed_at) "
                   "VALUES ('alice', ?, 'staff', ?, ?)", (_password_hash(), NOW, NOW))
        db.execute("INSERT INTO user_sessions VALUES (?, 1, ?, '2099-01-01T00:00:00+00:00')", (_sha256(SID), NOW))
        db.execute("INSERT INTO api_tokens (user_id, name, token_hash, hint, created_at) VALUES (1, 'nightly', ?, ?, ?)",
                   (_sha256(SECRET), SECRET[:7], NOW))
        db.execute("INSERT INTO audit_log (at, event, user, detail) VALUES (?, 'user_added', 'alice', '')", (NOW,))
    if accounts and login_attempts:
        _run(db, OLD_LOGIN_ATTEMPTS_SCHEMA)
        db.executemany("INSERT INTO login_attempts (address, at) VALUES ('203.0.113.7', ?)",
                       [(ATTEMPT_AT - n,) for n in range(3)])
    if query_log:
        _run(db, OLD_QUERY_LOG_SCHEMA)
        db.executemany("INSERT INTO query_log (at, query, results, elapsed_ms, audience) VALUES (?, ?, ?, 1.5, ?)",
                       [(NOW, "rosacea laser", 4, "public"), (NOW, None, 0, "public"), (NOW, "isotretinoin", 1, "staff")])
    db.commit()
    db.close()


def snapshot(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read with plain sqlite3."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        db.close()


def test_a_previous_version_data_directory_opens_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    build_previous_version(path)
    before = snapshot(path)
    with open_store(path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "6"
        # what the previous version stored reads back through the interface
        rosacea = store.get_article(1)
        assert (rosacea.title, rosacea.categories, rosacea.sections[0].html) == (
            "Rosacea", ["Redness"], "<p>Pulsed dye laser reduces visible vessels.</p>")
        assert store.get_article(2, audiences=("public",)) is None and store.get_article(2).audience == "staff"
        assert store.get_raw("https://clinic.example/rosacea/") == (b"<html>rosacea</html>", "text/html")
        assert store.changes_since(0)[0] == {1, 2, 3} and store.recent_crawls()[0]["stats"] == {"fetched": 3}
        assert store.get_meta("audience-rules:clinic") == "abc123"
        assert users.authenticate(store, "alice", PASSWORD).name == "alice"
        assert users.session_user(store, SID).name == "alice"
        assert [e["event"] for e in users.recent_audit(store)] == ["user_added"]
        for _ in range(7):  # three attempts stored by the previous version count against the budget of ten
            assert users.begin_login_attempt(store, "203.0.113.7", limit=10, window=60.0, now=ATTEMPT_AT + 1)
        assert users.begin_login_attempt(store, "203.0.113.7", limit=10, window=60.0, now=ATTEMPT_AT + 1) is None
        report = querylog.report(store, days=1, now=datetime.fromisoformat(NOW))
        assert (report["searches"], report["without_text"], report["by_audience"]) == (3, 1, {"public": 2, "staff": 1})
    after = snapshot(path)
    assert set(after) == set(before)
    for table, rows in before.items():
        if table == "login_attempts":
            assert rows == after[table][:len(rows)], table  # the seven new attempts came after
        elif table == "meta":
            assert [r for r in rows if r[0] != "schema_version"] == [r for r in after[table] if r[0] != "schema_version"]
        elif table == "users":
            assert [r[:6] for r in rows] == [r[:6] for r in after[table]]  # last_login_at aside: untouched by reads
        elif table == "site_boilerplate":  # version 6: the single set, learned from every article, is the staff set
            assert after[table] == [(site, "staff", fp) for site, fp in rows], table
        else:
            assert after[table] == rows, table


SHARED = "Book a consultation today with our friendly team at Riverside Clinic."


def test_the_single_boilerplate_set_becomes_the_staff_set_and_public_pages_it_stripped_are_reindexed(
        tmp_path: Path) -> None:
    """Version 5 learned one set from every article, staff included: no public page may stay stripped by it."""
    path = tmp_path / "kb.sqlite3"
    build_previous_version(path, accounts=False, query_log=False)
    db = sqlite3.connect(path)
    for n, audience in ((4, "public"), (5, "staff")):
        text = f"Page {'abcdef'[n]} explains a topic of its own in words nobody repeats.\n\n{SHARED}"
        db.execute("INSERT INTO articles (id, url, source, site, title, text, audience, created_at, updated_at, "
                   "fingerprints) VALUES (?, ?, 'clinic', 'clinic.example', 'T', ?, ?, ?, ?, ?)",
                   (n, f"https://clinic.example/{n}/", text, audience, NOW, NOW, " ".join(block_fingerprints(text))))
        db.execute("INSERT INTO sections VALUES (?, 0, '', '', 0, ?, '')", (n, text))
    db.execute("INSERT INTO site_boilerplate VALUES ('clinic.example', ?)", (block_fingerprints(SHARED)[0],))
    seq = db.execute("SELECT max(seq) FROM changes").fetchone()[0]
    db.commit()
    db.close()
    with open_store(path) as store:
        assert store.boilerplate_fingerprints("clinic.example", "public") == frozenset()
        assert store.boilerplate_fingerprints("clinic.example", "staff") == {"deadbeef", block_fingerprints(SHARED)[0]}
        assert SHARED in store.get_article(4).text  # the public page no longer stripped by what staff pages repeat
        assert SHARED not in store.get_article(5).text and "explains a topic" in store.get_article(5).text
        assert store.changes_since(seq)[:2] == ({4}, set())  # `kb update` reindexes exactly the public page


@pytest.mark.parametrize("made", ["crawl only (no accounts, no query log)", "accounts before the sign-in limit"])
def test_tables_the_previous_version_made_on_first_use_exist_after_open(tmp_path: Path, made: str) -> None:
    path = tmp_path / "kb.sqlite3"
    crawl_only = made.startswith("crawl")
    build_previous_version(path, accounts=not crawl_only, login_attempts=False, query_log=not crawl_only)
    with open_store(path) as store:
        tables = set(snapshot(path))
        assert {"users", "user_sessions", "api_tokens", "audit_log", "login_attempts", "query_log"} <= tables
        assert store.count_articles() == 3
        assert users.begin_login_attempt(store, "198.51.100.4", limit=10, window=60.0)
        assert querylog.log_query(store, "acne", 2, 3.0)
        assert [u.name for u in users.list_users(store)] == ([] if crawl_only else ["alice"])


def test_reads_of_an_open_store_take_no_write_lock(tmp_path: Path) -> None:
    """The schema is settled when the store opens: no account lookup or report creates a table behind a writer."""
    path = tmp_path / "kb.sqlite3"
    build_previous_version(path, accounts=False, query_log=False)
    with open_store(path) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # a crawl in the middle of a write
            store.db.execute("PRAGMA busy_timeout = 100")  # a lookup that needed the write lock would fail fast
            assert users.get_user(store, "alice") is None and users.list_users(store) == []
            assert users.session_user(store, SID) is None and users.token_user(store, SECRET) is None
            assert querylog.report(store)["searches"] == 0 and store.count_queries() == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()


def test_account_lookups_run_no_schema_check(store) -> None:
    """One statement per lookup: the previous version asked sqlite_master on every account lookup."""
    users.add_user(store, "alice", PASSWORD)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        assert users.get_user(store, "alice") is not None
        assert users.session_user(store, SID) is None
    finally:
        store.db.set_trace_callback(None)
    assert len(statements) == 2 and not any("sqlite_master" in s for s in statements), statements


def test_opening_a_current_store_takes_no_write_lock(tmp_path: Path) -> None:
    """Only the first open of an older store writes; later opens (every web request) only read the version."""
    path = tmp_path / "kb.sqlite3"
    build_previous_version(path)
    open_store(path).close()  # migrates
    blocker = sqlite3.connect(path, isolation_level=None)
    opened: list[int] = []
    try:
        blocker.execute("BEGIN IMMEDIATE")  # a crawl in the middle of a write
        thread = threading.Thread(target=lambda: opened.append(_count(path)), daemon=True)
        thread.start()
        thread.join(5)
        assert opened == [3], "opening the store waited for the writer"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def _count(path: Path) -> int:
    with open_store(path) as store:
        return store.count_articles()


@pytest.mark.postgresql
def test_postgresql_single_boilerplate_set_becomes_the_staff_set_and_public_pages_are_reindexed(pg_database) -> None:
    """PostgreSQL migration 5 does what SQLite version 6 does to a database left at migration 4."""
    import psycopg
    from psycopg.rows import dict_row

    from kb.store.pg_migrations import LEDGER, MIGRATIONS
    from kb.store.postgres import PostgresStore
    from kb.store.postgres_pool import close_pools

    shared_fp = block_fingerprints(SHARED)[0]
    with psycopg.connect(pg_database.url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(LEDGER)
        for version, name, script in MIGRATIONS[:4]:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO kb_schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        for n, audience in ((1, "public"), (2, "staff"), (3, "public")):
            text = f"Page {'abcd'[n]} explains a topic of its own in words nobody repeats." + f"\n\n{SHARED}" * (n < 3)
            conn.execute("INSERT INTO kb_articles (id, url, site, title, text, audience, created_at, updated_at, "
                         "fingerprints) VALUES (%s, %s, 'clinic.example', 'T', %s, %s, %s, %s, %s)",
                         (n, f"https://clinic.example/{n}/", text, audience, NOW, NOW,
                          " ".join(block_fingerprints(text))))
            conn.execute("INSERT INTO kb_article_sections VALUES (%s, 0, '', '', 0, %s, '')", (n, text))
        conn.execute("INSERT INTO kb_site_boilerplate VALUES ('clinic.example', %s)", (shared_fp,))
    try:
        with PostgresStore(pg_database.url) as store:
            assert store.boilerplate_fingerprints("clinic.example", "public") == frozenset()
            assert store.boilerplate_fingerprints("clinic.example", "staff") == {shared_fp}
            assert SHARED in store.get_article(1).text
            assert SHARED not in store.get_article(2).text and "explains a topic" in store.get_article(2).text
            assert store.changes_since(0)[:2] == ({1}, set())
    finally:
        close_pools()
