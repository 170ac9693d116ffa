"""SQLite side of the query log: append a search, prune past retention, read a window back for reports.

Part of `SQLiteStore` (a mixin over its connection). kb.querylog decides what a row may hold (normalised,
masked text or none) and how long rows are kept; here are only the statements.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kb.store.base import Store, StoreError


class SQLiteQueryLog(Store):
    """The query-log methods of the Store interface over `self.db`."""

    db: sqlite3.Connection

    def add_query(self, query: str | None, results: int, elapsed_ms: float, audience: str, *, at: str,
                  prune_before: str, wait: float) -> None:
        row = (at, query, results, elapsed_ms, audience)
        db = self.db
        try:
            busy = db.execute("PRAGMA busy_timeout").fetchone()[0]
            try:
                db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                self._insert_query(row, prune_before)
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(busy)}")
        except sqlite3.Error as exc:
            raise StoreError(f"The query log could not be written: {exc}.") from exc

    def _insert_query(self, row: tuple[Any, ...], cutoff: str) -> None:
        """Insert, and prune only when the oldest row (one index probe) is past retention."""
        with self.transaction():
            if self.db.execute("SELECT 1 FROM query_log WHERE at < ? LIMIT 1", (cutoff,)).fetchone():
                self.db.execute("DELETE FROM query_log WHERE at < ?", (cutoff,))
            self.db.execute("INSERT INTO query_log (at, query, results, elapsed_ms, audience) VALUES (?, ?, ?, ?, ?)",
                            row)

    def queries_since(self, since: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT lower(query) AS query, results, elapsed_ms, audience FROM query_log WHERE at >= ?", (since,))]

    def count_queries(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM query_log").fetchone()[0])
