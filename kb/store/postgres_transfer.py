"""PostgreSQL side of moving a store to another database: every kb_* table's rows out as stored, and in by COPY.

Part of `PostgresStore` (a mixin over its primary connection); kb.store.transfer drives it. For migration only:
no audiences, no reader, rows as they are (see the Store interface's "moving a store" methods). The interface's
table names map to the kb_* tables here; imports keep ids, then move each identity past the largest one.
"""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
from psycopg import sql

from kb.errors import KBError
from kb.store.base import TRANSFER_ORDER, TRANSFER_TABLES, Store, transfer_columns
from kb.store.postgres_pool import redact

#: The interface's table names -> this store's tables.
TABLES: dict[str, str] = {
    "meta": "kb_meta", "articles": "kb_articles", "sections": "kb_article_sections",
    "simhash_bands": "kb_simhash_bands", "site_boilerplate": "kb_site_boilerplate", "pages": "kb_pages",
    "raw_pages": "kb_raw_pages", "changes": "kb_article_changes", "crawls": "kb_crawls", "users": "kb_users",
    "user_sessions": "kb_user_sessions", "api_tokens": "kb_api_tokens", "audit_log": "kb_audit_log",
    "login_attempts": "kb_login_attempts", "query_log": "kb_query_log",
}

#: Identity columns (table, column) whose generator must pass the imported ids.
IDENTITIES = (("kb_articles", "id"), ("kb_article_changes", "seq"), ("kb_crawls", "id"), ("kb_users", "id"),
              ("kb_api_tokens", "id"), ("kb_audit_log", "id"), ("kb_login_attempts", "id"), ("kb_query_log", "id"))

#: kb_meta keys that are this database's own bookkeeping, not state to move.
OWN_META = ("boilerplate_version",)


def _table(table: str) -> str:
    """The kb_* table of an interface table name; KBError for any other name (names never come from input)."""
    if table not in TABLES:
        raise KBError(f"{table!r} is not a table a store migration moves.", f"Use one of {', '.join(TRANSFER_TABLES)}.")
    return TABLES[table]


def _where(table: str) -> sql.Composable:
    """The filter that leaves a table's bookkeeping rows out of a migration."""
    if table != "meta":
        return sql.SQL("")
    return sql.SQL(" WHERE key NOT IN ({})").format(sql.SQL(", ").join(map(sql.Literal, OWN_META)))


def _order(table: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.strip()) for c in TRANSFER_ORDER[table].split(","))


class PostgresTransfer(Store):
    """The migration methods of the Store interface over the primary connection (`self.db`)."""

    url: str
    db: psycopg.Connection

    def _fail(self, what: str, exc: psycopg.Error) -> KBError:
        return KBError(f"Could not {what} in {redact(self.url)}: {str(exc).strip()}",
                       "Nothing was written; migrate into an empty database (or pass --force).")

    def transfer_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in TRANSFER_TABLES:
            query = sql.SQL("SELECT count(*) AS n FROM {}{}").format(sql.Identifier(_table(table)), _where(table))
            out[table] = int(self.db.execute(query).fetchone()["n"])  # type: ignore[index]
        return out

    def export_rows(self, table: str, batch: int = 1000) -> Iterator[list[dict[str, Any]]]:
        query = sql.SQL("SELECT * FROM {}{} ORDER BY {}").format(sql.Identifier(_table(table)), _where(table),
                                                                 _order(table))
        with self.db.cursor(name=f"kb_export_{table}", withhold=True) as cursor:
            cursor.execute(query)
            while rows := cursor.fetchmany(batch):
                yield [dict(r) for r in rows]

    def clear_for_import(self) -> None:
        self._wrote = True
        tables = [TABLES[t] for t in TRANSFER_TABLES if t != "meta"]
        try:
            self.db.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
            self.db.execute(sql.SQL("DELETE FROM kb_meta{}").format(_where("meta")))
        except psycopg.Error as exc:
            raise self._fail("empty the kb tables", exc) from exc

    def import_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        name = _table(table)
        have = [r["column_name"] for r in self.db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (name,))]
        columns = transfer_columns(table, rows, have)
        if not rows:
            return
        self._wrote = True
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(name),
                                                         sql.SQL(", ").join(map(sql.Identifier, columns)))
        try:
            with self.db.cursor() as cursor, cursor.copy(copy) as writer:
                for row in rows:
                    writer.write_row([row[c] for c in columns])
        except psycopg.Error as exc:
            raise self._fail(f"copy {table} rows", exc) from exc

    def finish_import(self) -> None:
        for name, column in IDENTITIES:
            self.db.execute(sql.SQL("SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({}), 0) + 1, false) "
                                    "FROM {}").format(sql.Identifier(column), sql.Identifier(name)), (name, column))
        self.db.execute("INSERT INTO kb_meta VALUES ('boilerplate_version', '1') ON CONFLICT (key) DO UPDATE "
                        "SET value = (kb_meta.value::bigint + 1)::text")
        self.__dict__.get("_boilerplate_cache", {}).clear()
