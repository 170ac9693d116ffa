"""PostgreSQL side of staff accounts: users, sign-in sessions, API tokens, the audit log and sign-in attempts.

Part of `PostgresStore` (a mixin over its primary connection): every statement here runs on the primary, never
a replica, so a sign-in, sign-out or revocation on one node holds on every node at once, and the rate limit
counts attempts from every node (check and count under one advisory lock per client key).
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from kb.store.base import Store, StoreError

AUDIT_USER_CHARS = 64
AUDIT_DETAIL_CHARS = 300
TOKEN_COLUMNS = ("SELECT t.id, t.user_id, u.name AS user_name, t.name, t.hint, t.created_at, t.last_used_at, "
                 "t.revoked_at FROM kb_api_tokens AS t JOIN kb_users AS u ON u.id = t.user_id")


class PostgresAccounts(Store):
    """The account methods of the Store interface over the primary (`_x`, `_w` of PostgresStore)."""

    _x: Callable[..., psycopg.Cursor]  # a statement on the primary
    _w: Callable[..., psycopg.Cursor]  # a writing statement on the primary

    def _audit(self, event: str, user: str, detail: str, at: str) -> None:
        self._w('INSERT INTO kb_audit_log (at, event, "user", detail) VALUES (%s, %s, %s, %s)',
                (at, event, user[:AUDIT_USER_CHARS], detail[:AUDIT_DETAIL_CHARS]))

    # -- users --------------------------------------------------------------------------------------------
    def get_user(self, name: str) -> dict[str, Any] | None:
        row = self._x("SELECT * FROM kb_users WHERE lower(name) = lower(%s)", (name,)).fetchone()
        return dict(row) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._x("SELECT * FROM kb_users ORDER BY lower(name), id")]

    def add_user(self, name: str, password_hash: str, role: str, *, at: str) -> dict[str, Any] | None:
        with self.transaction():
            row = self._w("INSERT INTO kb_users (name, password_hash, role, created_at, password_changed_at) "
                          "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (lower(name)) DO NOTHING RETURNING id",
                          (name, password_hash, role, at, at)).fetchone()
            if row is None:
                return None
            self._audit("user_added", name, "", at)
        return self.get_user(name)

    def remove_user(self, name: str, *, at: str) -> str | None:
        with self.transaction():
            row = self._x("SELECT id, name FROM kb_users WHERE lower(name) = lower(%s) FOR UPDATE", (name,)).fetchone()
            if row is None:
                return None
            self._w("DELETE FROM kb_user_sessions WHERE user_id = %s", (row["id"],))
            self._w("DELETE FROM kb_api_tokens WHERE user_id = %s", (row["id"],))
            self._w("DELETE FROM kb_users WHERE id = %s", (row["id"],))
            self._audit("user_removed", row["name"], "", at)
        return str(row["name"])

    def change_password(self, name: str, password_hash: str, *, at: str) -> str | None:
        with self.transaction():
            row = self._x("SELECT id, name FROM kb_users WHERE lower(name) = lower(%s) FOR UPDATE", (name,)).fetchone()
            if row is None:
                return None
            self._w("UPDATE kb_users SET password_hash = %s, password_changed_at = %s WHERE id = %s",
                    (password_hash, at, row["id"]))
            self._w("DELETE FROM kb_user_sessions WHERE user_id = %s", (row["id"],))
            self._audit("password_changed", row["name"], "", at)
        return str(row["name"])

    def replace_password_hash(self, user_id: int, password_hash: str) -> None:
        self._w("UPDATE kb_users SET password_hash = %s WHERE id = %s", (password_hash, user_id))

    # -- sessions -----------------------------------------------------------------------------------------
    def start_session(self, user_id: int, sid_hash: str, *, at: str, expires_at: str) -> None:
        with self.transaction():
            self._w("DELETE FROM kb_user_sessions WHERE expires_at < %s", (at,))
            self._w("INSERT INTO kb_user_sessions VALUES (%s, %s, %s, %s)", (sid_hash, user_id, at, expires_at))
            self._w("UPDATE kb_users SET last_login_at = %s WHERE id = %s", (at, user_id))

    def session_user(self, sid_hash: str, *, at: str) -> dict[str, Any] | None:
        row = self._x("SELECT u.* FROM kb_user_sessions AS s JOIN kb_users AS u ON u.id = s.user_id "
                      "WHERE s.sid_hash = %s AND s.expires_at > %s", (sid_hash, at)).fetchone()
        return dict(row) if row else None

    def end_session(self, sid_hash: str) -> None:
        self._w("DELETE FROM kb_user_sessions WHERE sid_hash = %s", (sid_hash,))

    # -- sign-in attempts (the brute-force limit, counted across every node) ------------------------------
    def begin_login_attempt(self, key: str, *, at: float, since: float, limit: int) -> int | None:
        if self._attempts(key, since) >= limit:  # a refused flood takes no lock
            return None
        with self.transaction():
            self._x("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (key,))
            self._w("DELETE FROM kb_login_attempts WHERE at <= %s", (since,))
            if self._attempts(key, since) >= limit:
                return None
            return int(self._w("INSERT INTO kb_login_attempts (address, at) VALUES (%s, %s) RETURNING id",
                               (key, at)).fetchone()["id"])

    def end_login_attempt(self, attempt: int) -> None:
        self._w("DELETE FROM kb_login_attempts WHERE id = %s", (attempt,))

    def _attempts(self, key: str, since: float) -> int:
        return int(self._x("SELECT count(*) AS n FROM kb_login_attempts WHERE address = %s AND at > %s",
                           (key, since)).fetchone()["n"])

    # -- API tokens ---------------------------------------------------------------------------------------
    def create_token(self, user_id: int, user_name: str, name: str, token_hash: str, hint: str, *,
                     at: str) -> int:
        with self.transaction():
            token_id = int(self._w(
                "INSERT INTO kb_api_tokens (user_id, name, token_hash, hint, created_at) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING id", (user_id, name, token_hash, hint, at)).fetchone()["id"])
            self._audit("token_created", user_name, f"token {token_id}" + (f" ({name})" if name else ""), at)
        return token_id

    def list_tokens(self, user_name: str | None = None) -> list[dict[str, Any]]:
        query, args = TOKEN_COLUMNS, ()
        if user_name is not None:
            query, args = query + " WHERE lower(u.name) = lower(%s)", (user_name,)
        return [dict(r) for r in self._x(query + " ORDER BY t.id", args)]

    def revoke_token(self, token_id: int, *, at: str) -> dict[str, Any] | None:
        with self.transaction():
            row = self._x(TOKEN_COLUMNS + " WHERE t.id = %s FOR UPDATE OF t", (token_id,)).fetchone()
            if row is None or row["revoked_at"]:
                return dict(row) if row else None
            self._w("UPDATE kb_api_tokens SET revoked_at = %s WHERE id = %s", (at, token_id))
            self._audit("token_revoked", row["user_name"], f"token {token_id}", at)
        return dict(row)

    def token_user(self, token_hash: str) -> dict[str, Any] | None:
        row = self._x("SELECT u.*, t.id AS token_id FROM kb_api_tokens AS t JOIN kb_users AS u ON u.id = t.user_id "
                      "WHERE t.token_hash = %s AND t.revoked_at IS NULL", (token_hash,)).fetchone()
        return dict(row) if row else None

    def record_token_use(self, token_id: int, user_name: str, *, at: str, detail: str) -> None:
        try:
            with self.transaction():
                self._x("SET LOCAL lock_timeout = '2s'")
                self._w("UPDATE kb_api_tokens SET last_used_at = %s WHERE id = %s", (at, token_id))
                self._audit("token_used", user_name, detail, at)
        except psycopg.OperationalError as exc:  # busy or unreachable: the caller decides
            raise StoreError(f"The token use was not recorded: {exc}.") from exc

    # -- audit log ----------------------------------------------------------------------------------------
    def add_audit(self, event: str, user: str, detail: str, *, at: str) -> None:
        self._audit(event, user, detail, at)

    def prune_audit(self, before: str) -> None:
        self._w("DELETE FROM kb_audit_log WHERE at < %s", (before,))

    def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return [dict(r) for r in self._x(
            'SELECT at, event, "user", detail FROM kb_audit_log ORDER BY id DESC LIMIT %s', (limit,))]
