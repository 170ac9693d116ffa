"""One versioned migration path for every table of the SQLite store, run once when the store opens.

The version lives in meta.schema_version. An open whose version is current only reads it, so readers never
take the write lock; otherwise one write transaction brings the store up to date in place and keeps every row:

1. pages, raw_pages, articles, sections, changes, crawls, meta
2. articles.disclaimer and .fingerprints (derived from the stored text), site_boilerplate
3. articles.simhash and .dup_of, simhash_bands: near-duplicate groups (derived by the store's regrouping)
4. sections.html: safe markup of each section (filled in by the next crawl; "" until then)
5. the accounts tables (users, user_sessions, api_tokens, audit_log, login_attempts) and query_log, which
   earlier versions created on first use (kb.users on every lookup, kb.querylog after a failed insert)
6. site_boilerplate.audience: one set per audience of reader (kb.boilerplate.SETS). The single set of earlier
   versions was learned from every article, staff included, so it becomes the staff set; the public set
   stays empty until the next boilerplate refresh (the next crawl), and each public article it stripped gets
   an 'upsert' change so `kb update` reindexes it: anonymous readers never see text shaped by staff pages.

Every step is idempotent (CREATE ... IF NOT EXISTS, columns added only when missing, backfills only of rows
without the derived value), so a store of any earlier version, with or without the tables made the old ways,
takes the same path.
"""

from __future__ import annotations

import sqlite3

from kb.boilerplate import block_fingerprints
from kb.clock import utc_iso
from kb.disclaimer import has_disclaimer

SCHEMA_VERSION = 6

ARTICLES = """
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
    audience TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (site, audience, fingerprint)
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

ACCOUNTS = """
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
CREATE TABLE IF NOT EXISTS login_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_attempts_address ON login_attempts(address, at);
CREATE INDEX IF NOT EXISTS login_attempts_at ON login_attempts(at);
"""

QUERY_LOG = """
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

#: Columns added after version 1, as (table, column, declaration) for ALTER TABLE on older stores.
ADDED_COLUMNS = (
    ("articles", "disclaimer", "INTEGER NOT NULL DEFAULT 0"),
    ("articles", "fingerprints", "TEXT NOT NULL DEFAULT ''"),
    ("articles", "simhash", "TEXT"),
    ("articles", "dup_of", "INTEGER"),
    ("sections", "html", "TEXT NOT NULL DEFAULT ''"),  # version 4: safe markup of the section (kb.extract.markup)
)


SCRIPTS = (ARTICLES, ACCOUNTS, QUERY_LOG)


def is_current(db: sqlite3.Connection) -> bool:
    """Whether the store is at SCHEMA_VERSION; a read only (False for a new, empty database)."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:  # no meta table yet: a new database
        return False
    return row is not None and row[0] == str(SCHEMA_VERSION)


def upgrade(db: sqlite3.Connection) -> None:
    """Create what is missing and derive the added columns; run inside the caller's write transaction.

    The near-duplicate grouping of version 3 needs the store's regrouping, so the store runs it after this.
    """
    add_columns(db)
    set_aside_single_boilerplate(db)
    for script in SCRIPTS:
        for statement in script.split(";\n"):
            if statement.strip():
                db.execute(statement)
    backfill(db)
    split_boilerplate(db)


def mark_current(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               (str(SCHEMA_VERSION),))


def add_columns(db: sqlite3.Connection) -> None:
    """Bring a version-1 store's tables up to date in place (CREATE IF NOT EXISTS skips existing tables)."""
    for table, column, decl in ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if have and column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


#: Where a version 2-5 store's single boilerplate set waits while the per-audience table is created.
OLD_BOILERPLATE = "site_boilerplate_single"


def set_aside_single_boilerplate(db: sqlite3.Connection) -> None:
    """Rename a site_boilerplate table without an audience column out of the way (version 6 replaces it)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(site_boilerplate)")}
    if have and "audience" not in have:
        db.execute(f"ALTER TABLE site_boilerplate RENAME TO {OLD_BOILERPLATE}")


def split_boilerplate(db: sqlite3.Connection) -> None:
    """Keep the single set, learned from every article, as the staff set; reindex the public articles it stripped."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OLD_BOILERPLATE,)).fetchone():
        return
    db.execute(f"INSERT OR IGNORE INTO site_boilerplate (site, audience, fingerprint) "
               f"SELECT site, 'staff', fingerprint FROM {OLD_BOILERPLATE}")
    single: dict[str, set[str]] = {}
    for site, fp in db.execute(f"SELECT site, fingerprint FROM {OLD_BOILERPLATE}"):
        single.setdefault(site, set()).add(fp)
    rows = db.execute("SELECT id, site, fingerprints FROM articles WHERE audience = 'public' AND dup_of IS NULL "
                      "AND fingerprints != ''").fetchall()
    stripped = [article_id for article_id, site, fps in rows if not single.get(site, set()).isdisjoint(fps.split())]
    now = utc_iso()
    db.executemany("INSERT INTO changes (article_id, op, at) VALUES (?, 'upsert', ?)", [(i, now) for i in stripped])
    db.execute(f"DROP TABLE {OLD_BOILERPLATE}")


def backfill(db: sqlite3.Connection) -> None:
    """Derive the added columns for articles stored before they existed."""
    rows = db.execute("SELECT id, text FROM articles WHERE fingerprints = '' AND text != ''").fetchall()
    for article_id, text in rows:
        db.execute("UPDATE articles SET fingerprints = ?, disclaimer = ? WHERE id = ?",
                   (" ".join(block_fingerprints(text)), int(has_disclaimer(text)), article_id))
