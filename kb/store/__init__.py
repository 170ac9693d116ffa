"""The store: kb's source of truth, every table and every SQL statement, behind one interface.

Callers open a store with `open_store(location)` and annotate with `Store` (the interface, kb.store.base);
the implementation is picked by the location: a path opens the SQLite file (`SQLiteStore`); a database URL
will open PostgreSQL. Dependency order inside the package (each imports only those above it):

    audience            the audience filter, written once (pure)
    base                the Store interface, StoreError, pure helpers shared by the implementations
    migrations          the SQLite schema, every table and its upgrades, run once when a store opens
    sqlite_accounts     users, sessions, tokens, audit log, sign-in attempts      (mixins of SQLiteStore)
    sqlite_querylog     the query log
    sqlite              SQLiteStore: connection, pages, articles, boilerplate, near-duplicates, FAQ
    sqlite_files        whole-file operations on SQLite stores: online backup, integrity, restore, probe
    __init__            open_store
"""

from __future__ import annotations

import os
from pathlib import Path

from kb.errors import KBError
from kb.store.audience import Audiences, audience_sql
from kb.store.base import Store, StoreError
from kb.store.migrations import SCHEMA_VERSION
from kb.store.sqlite import SQLiteStore

__all__ = ["Audiences", "SCHEMA_VERSION", "SQLiteStore", "Store", "StoreError", "audience_sql", "open_store"]


def open_store(location: str | os.PathLike[str]) -> Store:
    """The store at `location`: the path of a SQLite file (created with its directory when missing)."""
    text = os.fspath(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise KBError(f"kb cannot open a {scheme!r} store yet; only SQLite files are supported.",
                      "Pass the path of a store file, such as the data directory's kb.sqlite3.")
    return SQLiteStore(Path(text))
