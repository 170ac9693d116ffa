"""SQLite side of staff accounts: users, sign-in sessions, API tokens, the audit log and sign-in attempts.

Part of `SQLiteStore` (a mixin over its connection). kb.users keeps what the rows mean (password hashing,
name rules, session lifetimes, which client an attempt counts against); here are only the statements, each
account change with its audit row in one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kb.store.base import Store, StoreError

AUDIT_USER_CHARS = 64
AUDIT_DETAIL_CHARS = 300


class SQLiteAccounts(Store):
    """The account methods of the Store interface over `self.db`."""

    db: sqlite3.Connection

    def _audit(self, event: str, user: str, detail: str, at: str) -> None:
        self.db.execute("INSERT INTO audit_log (at, event, user, detail) VALUES (?, ?, ?, ?)",
                        (at, event, user[:AUDIT_USER_CHARS], detail[:AUDIT_DETAIL_CHARS]))

    # -- users --------------------------------------------------------------------------------------------
    def get_user(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM users ORDER BY name COLLATE NOCASE")]

    def add_user(self, name: str, password_hash: str, role: str, *, at: str) -> dict[str, Any] | None:
        with self.transaction():
            if self.db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                return None
            self.db.execute("INSERT INTO users (name, password_hash, role, created_at, password_changed_at) "
                            "VALUES (?, ?, ?, ?, ?)", (name, password_hash, role, at, at))
            self._audit("user_added", name, "", at)
        return self.get_user(name)

    def remove_user(self, name: str, *, at: str) -> str | None:
        with self.transaction():
            row = self.db.execute("SELECT id, name FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            self.db.execute("DELETE FROM user_sessions WHERE user_id = ?", (row["id"],))
            self.db.execute("DELETE FROM api_tokens WHERE user_id = ?", (row["id"],))
            self.db.execute("DELETE FROM users WHERE id = ?", (row["id"],))
            self._audit("user_removed", row["name"], "", at)
        return str(row["name"])

    def change_password(self, name: str, password_hash: str, *, at: str) -> str | None:
        with self.transaction():
            row = self.db.execute("SELECT id, name FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                            (password_hash, at, row["id"]))
            self.db.execute("DELETE FROM user_sessions WHERE user_id = ?", (row["id"],))
            self._audit("password_changed", row["name"], "", at)
        return str(row["name"])

    def replace_password_hash(self, user_id: int, password_hash: str) -> None:
        self.db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    # -- sessions -----------------------------------------------------------------------------------------
    def start_session(self, user_id: int, sid_hash: str, *, at: str, expires_at: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM user_sessions WHERE expires_at < ?", (at,))
            self.db.execute("INSERT INTO user_sessions VALUES (?, ?, ?, ?)", (sid_hash, user_id, at, expires_at))
            self.db.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (at, user_id))

    def session_user(self, sid_hash: str, *, at: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT u.* FROM user_sessions AS s JOIN users AS u ON u.id = s.user_id "
            "WHERE s.sid_hash = ? AND s.expires_at > ?", (sid_hash, at)).fetchone()
        return dict(row) if row else None

    def end_session(self, sid_hash: str) -> None:
        self.db.execute("DELETE FROM user_sessions WHERE sid_hash = ?", (sid_hash,))

    # -- sign-in attempts (the brute-force limit) ---------------------------------------------------------
    def begin_login_attempt(self, key: str, *, at: float, since: float, limit: int) -> int | None:
        if self._attempts(key, since) >= limit:  # a refused flood takes no write lock
            return None
        with self.transaction():
            self.db.execute("DELETE FROM login_attempts WHERE at <= ?", (since,))
            if self._attempts(key, since) >= limit:
                return None
            return int(self.db.execute("INSERT INTO login_attempts (address, at) VALUES (?, ?)",
                                       (key, at)).lastrowid)

    def end_login_attempt(self, attempt: int) -> None:
        self.db.execute("DELETE FROM login_attempts WHERE id = ?", (attempt,))

    def _attempts(self, key: str, since: float) -> int:
        row = self.db.execute("SELECT count(*) FROM login_attempts WHERE address = ? AND at > ?",
                              (key, since)).fetchone()
        return int(row[0])

    # -- API tokens ---------------------------------------------------------------------------------------
    def create_token(self, user_id: int, user_name: str, name: str, token_hash: str, hint: str, *,
                     at: str) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO api_tokens (user_id, name, token_hash, hint, created_at) VALUES (?, ?, ?, ?, ?)",
                (user_id, name, token_hash, hint, at))
            token_id = int(cur.lastrowid)
            self._audit("token_created", user_name, f"token {token_id}" + (f" ({name})" if name else ""), at)
        return token_id

    def list_tokens(self, user_name: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT t.id, t.user_id, u.name AS user_name, t.name, t.hint, t.created_at, t.last_used_at, "
               "t.revoked_at FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id")
        args: tuple[Any, ...] = ()
        if user_name is not None:
            sql, args = sql + " WHERE u.name = ?", (user_name,)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY t.id", args)]

    def revoke_token(self, token_id: int, *, at: str) -> dict[str, Any] | None:
        with self.transaction():
            row = self.db.execute(
                "SELECT t.id, t.user_id, u.name AS user_name, t.name, t.hint, t.created_at, t.last_used_at, "
                "t.revoked_at FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id WHERE t.id = ?",
                (token_id,)).fetchone()
            if row is None or row["revoked_at"]:
                return dict(row) if row else None
            self.db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (at, token_id))
            self._audit("token_revoked", row["user_name"], f"token {token_id}", at)
        return dict(row)

    def token_user(self, token_hash: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT u.*, t.id AS token_id FROM api_tokens AS t JOIN users AS u ON u.id = t.user_id "
            "WHERE t.token_hash = ? AND t.revoked_at IS NULL", (token_hash,)).fetchone()
        return dict(row) if row else None

    def record_token_use(self, token_id: int, user_name: str, *, at: str, detail: str) -> None:
        try:
            with self.transaction():
                self.db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (at, token_id))
                self._audit("token_used", user_name, detail, at)
        except sqlite3.OperationalError as exc:  # busy: the caller decides (a valid request goes on)
            raise StoreError(f"The token use was not recorded: {exc}.") from exc

    # -- audit log ----------------------------------------------------------------------------------------
    def add_audit(self, event: str, user: str, detail: str, *, at: str) -> None:
        self._audit(event, user, detail, at)

    def prune_audit(self, before: str) -> None:
        self.db.execute("DELETE FROM audit_log WHERE at < ?", (before,))

    def recent_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT at, event, user, detail FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))]
