"""Whole-file operations on SQLite store files: online backup, integrity check, restore, a read-only probe.

kb.maintenance decides what a backup holds, verifies it and takes the writer lock; these functions only
move and inspect the database file, with SQLite's own online backup API, so crawls and searches may go on.
They work on paths, not on an open store: a backup is read with its own connections and never migrated.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path


def backup_file(store_path: Path, copy: Path) -> tuple[int, str | None]:
    """Copy the live store at `store_path` to `copy` as one self-contained file; (articles, schema version).

    One step of the backup API: a consistent snapshot even while others write (WAL).
    """
    source = sqlite3.connect(store_path, timeout=30)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        articles = target.execute("SELECT count(*) FROM articles").fetchone()[0]
        schema = target.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        target.close()
        source.close()
    return int(articles), schema[0] if schema else None


def integrity(db_path: Path) -> str:
    """PRAGMA integrity_check of a database file opened read-only and unmodified ("ok" when sound)."""
    try:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        result = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        conn.execute("SELECT count(*) FROM articles").fetchone()
        return result
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


def restore_file(copy: Path, target: Path, existing: bool) -> None:
    """Put the verified copy in place: atomic rename when new, SQLite backup API over a live store."""
    if not existing:
        partial = target.with_name(target.name + ".restoring")
        shutil.copy2(copy, partial)
        os.replace(partial, target)
        return
    source = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    live = sqlite3.connect(target, timeout=30)
    try:
        source.backup(live)
    finally:
        live.close()
        source.close()


def readable(store_path: Path, timeout: float = 2) -> bool:
    """Whether the store file answers a read (opened read-only: a probe never creates or migrates it)."""
    try:
        conn = sqlite3.connect(f"{store_path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            conn.execute("SELECT 1 FROM articles LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return True
