"""SQLite side of moving a store to another database: every table's rows out as stored, and back in.

Part of `SQLiteStore` (a mixin over its connection); kb.store.transfer drives it. For migration only: no
audiences, no reader, rows as they are (see the Store interface's "moving a store" methods).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterator

from kb.errors import KBError
from kb.store.base import TRANSFER_ORDER, TRANSFER_TABLES, Store, transfer_columns

#: meta keys that are this store's own bookkeeping, not state to move (the schema version of this file).
OWN_META = ("schema_version",)


def _where(table: str) -> str:
    """The filter that leaves a table's bookkeeping rows out of a migration."""
    return f" WHERE key NOT IN ({', '.join(repr(k) for k in OWN_META)})" if table == "meta" else ""


def _known(table: str) -> str:
    """The table's name, refused unless it is one of TRANSFER_TABLES (names are never taken from input)."""
    if table not in TRANSFER_ORDER:
        raise KBError(f"{table!r} is not a table a store migration moves.", f"Use one of {', '.join(TRANSFER_TABLES)}.")
    return table


class SQLiteTransfer(Store):
    """The migration methods of the Store interface over `self.db`."""

    db: sqlite3.Connection

    def transfer_counts(self) -> dict[str, int]:
        return {t: int(self.db.execute(f"SELECT count(*) FROM {t}{_where(t)}").fetchone()[0]) for t in TRANSFER_TABLES}

    def export_rows(self, table: str, batch: int = 1000) -> Iterator[list[dict[str, Any]]]:
        name = _known(table)
        cursor = self.db.execute(f"SELECT * FROM {name}{_where(name)} ORDER BY {TRANSFER_ORDER[name]}")
        while rows := cursor.fetchmany(batch):
            yield [dict(r) for r in rows]

    def clear_for_import(self) -> None:
        for table in reversed(TRANSFER_TABLES):
            self.db.execute(f"DELETE FROM {table}{_where(table)}")

    def import_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        name = _known(table)
        have = [r[1] for r in self.db.execute(f"PRAGMA table_info({name})")]
        columns = transfer_columns(name, rows, have)
        if not rows:
            return
        query = (f"INSERT INTO {name} ({', '.join(f'[{c}]' for c in columns)}) "
                 f"VALUES ({', '.join('?' * len(columns))})")
        try:
            self.db.executemany(query, [tuple(r[c] for c in columns) for r in rows])
        except sqlite3.Error as exc:
            raise KBError(f"Could not copy {name} rows into {self.path}: {exc}",
                          "Nothing was written; migrate into an empty store (or pass --force).") from exc

    def finish_import(self) -> None:
        """AUTOINCREMENT already moved past explicit ids; only the boilerplate cache may hold old sets."""
        self.__dict__.get("_boilerplate_cache", {}).clear()
