"""PostgreSQL side of the query log: append a search, prune past retention, read a window back for reports.

Part of `PostgresStore` (a mixin over its primary connection). kb.querylog decides what a row may hold and how
long rows are kept; here are only the statements. A write waits at most `wait` seconds for locks and the
statement (lock_timeout, statement_timeout), so a busy database delays no search for longer.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from kb.store.base import Store, StoreError


class PostgresQueryLog(Store):
    """The query-log methods of the Store interface over the primary (`_x`, `_w` of PostgresStore)."""

    _x: Callable[..., psycopg.Cursor]  # a statement on the primary
    _w: Callable[..., psycopg.Cursor]  # a writing statement on the primary

    def add_query(self, query: str | None, results: int, elapsed_ms: float, audience: str, *, at: str,
                  prune_before: str, wait: float) -> None:
        limit = f"{max(1, int(wait * 1000))}ms"
        try:
            with self.transaction():
                self._x("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                        (limit, limit))
                if self._x("SELECT 1 FROM kb_query_log WHERE at < %s LIMIT 1", (prune_before,)).fetchone():
                    self._w("DELETE FROM kb_query_log WHERE at < %s", (prune_before,))
                self._w("INSERT INTO kb_query_log (at, query, results, elapsed_ms, audience) "
                        "VALUES (%s, %s, %s, %s, %s)", (at, query, results, elapsed_ms, audience))
        except psycopg.Error as exc:
            raise StoreError(f"The query log could not be written: {exc}.") from exc

    def queries_since(self, since: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._x(
            "SELECT lower(query) AS query, results, elapsed_ms, audience FROM kb_query_log WHERE at >= %s", (since,))]

    def count_queries(self) -> int:
        return int(self._x("SELECT count(*) AS n FROM kb_query_log").fetchone()["n"])
