"""The store: kb's source of truth, every table and every SQL statement, behind one interface.

Callers open a store with `open_store(location)` (or `open_from_settings(settings)`, which honours
DATABASE_URL) and annotate with `Store` (the interface, kb.store.base); the implementation is picked by the
location: a path opens the SQLite file (`SQLiteStore`), a `postgresql://` URL the PostgreSQL database
(`PostgresStore`). Dependency order inside the package (each imports only those above it):

    audience            the audience filter, written once (pure)
    base                the Store interface, StoreError, pure helpers shared by the implementations
    grouping            near-duplicate grouping, written once over each implementation's SQL primitives
    migrations          the SQLite schema, every table and its upgrades, run once when a store opens
    sqlite_accounts     users, sessions, tokens, audit log, sign-in attempts      (mixins of SQLiteStore)
    sqlite_querylog     the query log
    sqlite_transfer     every table's rows out and in, for moving a store (no reader, no audiences)
    sqlite              SQLiteStore: connection, pages, articles, boilerplate, near-duplicates, FAQ
    sqlite_files        whole-file operations on SQLite stores: online backup, integrity, restore, probe
    pg_migrations       the PostgreSQL schema (kb_* tables) as versioned migrations under an advisory lock
    postgres_pool       per-process connection pools (primary, replicas) and replica health
    postgres_accounts   accounts on PostgreSQL (mixins of PostgresStore)
    postgres_querylog   the query log on PostgreSQL
    postgres_transfer   every kb_* table's rows out and in (COPY), for moving a store
    postgres            PostgresStore: primary writes, replica reads with fallback
    __init__            open_store, open_from_settings
    transfer            copy one store into another, all or nothing (`kb migrate-store`)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from kb.errors import KBError
from kb.store.audience import Audiences, audience_sql
from kb.store.base import Store, StoreError
from kb.store.migrations import SCHEMA_VERSION
from kb.store.sqlite import SQLiteStore

__all__ = ["Audiences", "SCHEMA_VERSION", "SQLiteStore", "Store", "StoreError", "audience_sql", "open_from_settings",
           "open_store", "replica_urls"]


def open_store(location: str | os.PathLike[str], *, replica_urls: Iterable[str] = ()) -> Store:
    """The store at `location`: a `postgresql://` URL (reads may go to `replica_urls`), else the path of a
    SQLite file (created with its directory when missing)."""
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        from kb.store.postgres import PostgresStore

        return PostgresStore(text, replica_urls)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise KBError(f"kb cannot open a {scheme!r} store; only SQLite files and PostgreSQL databases are supported.",
                      "Pass the path of a store file, or a postgresql://USER:PASS@HOST:PORT/DB URL.")
    return SQLiteStore(Path(text))


def replica_urls(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The DATABASE_REPLICA_URLS setting as a tuple (comma-separated; blanks ignored)."""
    return tuple(u.strip() for u in str(settings.get("DATABASE_REPLICA_URLS") or "").split(",") if u.strip())


def open_from_settings(settings: Mapping[str, Any]) -> Store:
    """"The" store of a configuration: DATABASE_URL when set (no kb.sqlite3 is created), else the data
    directory's SQLite file."""
    url = str(settings.get("DATABASE_URL") or "").strip()
    if url:
        return open_store(url, replica_urls=replica_urls(settings))
    from kb.config import data_paths

    return open_store(data_paths(settings["DATA_DIR"])["store"])
