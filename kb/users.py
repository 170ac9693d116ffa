"""Staff users, their sign-in sessions, API tokens and the audit log, kept in the store.

Passwords are hashed with werkzeug's scrypt (memory-hard); a stored hash made with another
method or cost is replaced on the next successful sign-in. An unknown user name is checked
against a dummy hash of the same method, so a wrong guess takes as long whether or not the
user exists. Session ids and API tokens are long random strings: only their SHA-256 is
stored, so a copy of the database lets nobody sign in. The audit log records who signed in
and which token was used where (path only, never a query string, a password or a token).

Sign-in attempts are counted per client address in the store, not in a worker's memory, so the
limit holds across every worker process of `kb serve` and across restarts. The store keeps the rows
(and writes each account change with its audit row in one transaction); this module decides what they mean.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from kb.clock import utc_iso, utc_now
from kb.errors import KBError
from kb.store import Store, StoreError

log = logging.getLogger(__name__)

#: What new hashes use; a stored hash whose method part differs is upgraded on sign-in.
PASSWORD_METHOD = "scrypt:32768:8:1"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing megabytes of "password" per request is a cheap denial of service
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_PREFIX = "kb_"
SESSION_HOURS = 12.0
AUDIT_KEEP_DAYS = 365

class UserError(KBError):
    """A user or token command cannot be done as asked (unknown name, weak password, ...)."""

    exit_code = 2


@dataclass
class User:
    id: int
    name: str
    role: str = "staff"
    created_at: str = ""
    last_login_at: str | None = None
    password_changed_at: str = ""

    @property
    def audiences(self) -> tuple[str, ...]:
        """Staff see everything; the role column leaves room for other roles later."""
        return ("public", "staff") if self.role == "staff" else ("public",)


@dataclass
class ApiToken:
    id: int
    user: str
    name: str
    hint: str  # the first characters, so people can tell their tokens apart
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _user(row: dict[str, Any]) -> User:
    return User(id=row["id"], name=row["name"], role=row["role"], created_at=row["created_at"],
                last_login_at=row["last_login_at"], password_changed_at=row["password_changed_at"])


# -- passwords --------------------------------------------------------------------------------------------------

def hash_password(password: str) -> str:
    return generate_password_hash(password, method=PASSWORD_METHOD)


def needs_rehash(stored: str) -> bool:
    """Whether `stored` was made with another method or cost than PASSWORD_METHOD."""
    return stored.split("$", 1)[0] != PASSWORD_METHOD


# A PASSWORD_METHOD hash of a random, forgotten password: checked for unknown users so a wrong
# name costs the same time as a wrong password. Made afresh if PASSWORD_METHOD changes.
_DUMMY_HASH = ("scrypt:32768:8:1$rcQ0FQSdJPAWV7ta$66c0c0e88f095f98ae882bb1a9f48c2fb9cf2fe5de530d997b612bf3991203b3"
               "560d1a515d583cdb2a8d3c7538cbe1d2f0ed8cddd6feffcc5f20b8c124a49881")
_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(_DUMMY_HASH if not needs_rehash(_DUMMY_HASH) else hash_password(secrets.token_urlsafe(24)))
    return _dummy[0]


def check_name(name: str) -> str:
    """The user name as stored, or UserError saying what is allowed."""
    name = (name or "").strip()
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(f"{name[:70]!r} is not a valid user name.",
                        "Use 1 to 64 letters, digits, dots, dashes, underscores or @, starting with a letter or digit.")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"The password is too short; use at least {MIN_PASSWORD} characters.",
                        "A few unrelated words make a long password that is easy to type.")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"The password is too long; use at most {MAX_PASSWORD} characters.")
    if password.strip() != password or "\n" in password:
        raise UserError("The password starts or ends with spaces or contains a line break.",
                        "Type it again without them.")
    return password


# -- users ------------------------------------------------------------------------------------------------------

def get_user(store: Store, name: str) -> User | None:
    row = store.get_user((name or "").strip())
    return _user(row) if row else None


def list_users(store: Store) -> list[User]:
    return [_user(r) for r in store.list_users()]


def add_user(store: Store, name: str, password: str, role: str = "staff") -> User:
    """Create a staff user; UserError when the name is taken or the password too weak."""
    name = check_name(name)
    check_password(password)
    if role != "staff":
        raise UserError(f"Unknown role {role!r}.", "The only role is staff.")
    row = None
    if store.get_user(name) is None:  # hash only for a free name (the store checks again as it adds)
        row = store.add_user(name, hash_password(password), role, at=utc_iso())
    if row is None:
        raise UserError(f"There is already a user called {name!r}.",
                        "Pick another name, or change the password with `kb user passwd`.")
    _audited(store, "user_added", name)
    return _user(row)


def remove_user(store: Store, name: str) -> None:
    """Delete a user with their sessions and tokens (they stop working at once)."""
    removed = store.remove_user((name or "").strip(), at=utc_iso())
    if removed is None:
        raise UserError(f"There is no user called {name!r}.", "See `kb user list`.")
    _audited(store, "user_removed", removed)


def set_password(store: Store, name: str, password: str) -> None:
    """Change a password; the user's open sessions end (their API tokens stay valid)."""
    check_password(password)
    wanted = (name or "").strip()
    changed = None
    if store.get_user(wanted) is not None:  # hash only for a user that exists
        changed = store.change_password(wanted, hash_password(password), at=utc_iso())
    if changed is None:
        raise UserError(f"There is no user called {name!r}.", "See `kb user list`.")
    _audited(store, "password_changed", changed)


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The user when `password` is theirs, else None; the same work either way (no enumeration by timing).

    A hash made with an older method is replaced by a PASSWORD_METHOD hash after a successful check.
    """
    row = None
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name.strip()):
        row = store.get_user(name.strip())
    password = password if isinstance(password, str) else ""
    if len(password) > MAX_PASSWORD:
        password = password[:MAX_PASSWORD + 1]  # still hashed, still wrong: same time as any wrong guess
    stored = row["password_hash"] if row else _dummy_hash()
    try:
        ok = check_password_hash(stored, password)
    except (ValueError, TypeError):  # a damaged hash: nobody signs in with it
        log.error("unreadable password hash for user %r", row["name"] if row else "")
        ok = False
    if not ok or row is None:
        return None
    if needs_rehash(stored):
        store.replace_password_hash(row["id"], hash_password(password))
        log.info("upgraded the password hash of %r to %s", row["name"], PASSWORD_METHOD)
    return _user(row)


# -- sessions ---------------------------------------------------------------------------------------------------

def start_session(store: Store, user: User, hours: float = SESSION_HOURS) -> str:
    """A new random session id for `user` (kept as SHA-256); records the sign-in."""
    sid = secrets.token_urlsafe(32)
    now = utc_now()
    store.start_session(user.id, _sha256(sid), at=utc_iso(now), expires_at=utc_iso(now + timedelta(hours=hours)))
    return sid


def session_user(store: Store, sid: str) -> User | None:
    """The user of a live session id, or None (unknown, expired, ended or user removed)."""
    if not isinstance(sid, str) or not sid or len(sid) > 200:
        return None
    row = store.session_user(_sha256(sid), at=utc_iso())
    return _user(row) if row else None


def end_session(store: Store, sid: str) -> None:
    if isinstance(sid, str) and sid:
        store.end_session(_sha256(sid))


# -- sign-in attempts (the brute-force limit) ---------------------------------------------------------------------

def client_key(address: str | None) -> str:
    """Whose budget a sign-in attempt uses: the IPv4 address, or the /64 of an IPv6 one (one client's usual
    share: counting single IPv6 addresses would give each client billions of budgets)."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return (address or "?").strip()[:64] or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def begin_login_attempt(store: Store, address: str | None, *, limit: int, window: float,
                        now: float | None = None) -> int | None:
    """Count one sign-in attempt for `address`: its id, or None when `limit` attempts in the last `window`
    seconds are used up. Check and count are one write transaction, so concurrent attempts on several
    workers cannot all slip under the limit; end_login_attempt() gives a successful one back."""
    now = time.time() if now is None else now
    return store.begin_login_attempt(client_key(address), at=now, since=now - window, limit=limit)


def end_login_attempt(store: Store, attempt: int | None) -> None:
    """A successful sign-in does not use up its address's budget."""
    if attempt is not None:
        store.end_login_attempt(attempt)


# -- API tokens -------------------------------------------------------------------------------------------------

def _token(row: dict[str, Any]) -> ApiToken:
    return ApiToken(id=row["id"], user=row["user_name"], name=row["name"], hint=row["hint"],
                    created_at=row["created_at"], last_used_at=row["last_used_at"], revoked_at=row["revoked_at"])


def create_token(store: Store, user_name: str, name: str = "") -> tuple[ApiToken, str]:
    """(the token's record, the secret to send as `Authorization: Bearer ...`); the secret is not stored."""
    user = get_user(store, user_name)
    if user is None:
        raise UserError(f"There is no user called {user_name!r}.", "Create the user first with `kb user add`.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    name = " ".join((name or "").split())[:100]
    token_id = store.create_token(user.id, user.name, name, _sha256(secret), secret[:len(TOKEN_PREFIX) + 4],
                                  at=utc_iso())
    _audited(store, "token_created", user.name, f"token {token_id}" + (f" ({name})" if name else ""))
    token = next(t for t in list_tokens(store) if t.id == token_id)
    return token, secret


def list_tokens(store: Store, user_name: str | None = None) -> list[ApiToken]:
    return [_token(r) for r in store.list_tokens(user_name)]


def revoke_token(store: Store, token_id: int) -> ApiToken:
    """Revoke a token by id; it stops working at once. UserError when there is no such active token."""
    before = store.revoke_token(token_id, at=utc_iso())
    if before is None:
        raise UserError(f"There is no API token {token_id}.", "See `kb token list`.")
    if before["revoked_at"]:
        raise UserError(f"API token {token_id} is already revoked.")
    _audited(store, "token_revoked", before["user_name"], f"token {token_id}")
    return next(t for t in list_tokens(store) if t.id == token_id)


def token_user(store: Store, secret: str, *, path: str = "") -> User | None:
    """The user an active token belongs to, or None; a use is recorded (time and path, no query)."""
    if not isinstance(secret, str) or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    row = store.token_user(_sha256(secret))
    if row is None:
        return None
    detail = f"token {row['token_id']} {path[:200]}".strip()
    try:
        store.record_token_use(row["token_id"], row["name"], at=utc_iso(), detail=detail)
    except StoreError:  # a busy store must not turn a valid request away
        log.warning("token use of %r not recorded (store busy)", row["name"])
    else:
        _audited(store, "token_used", row["name"], detail)
    return _user(row)


# -- audit log --------------------------------------------------------------------------------------------------

def audit(store: Store, event: str, user: str = "", detail: str = "") -> None:
    """Record a security event (sign-in, failure, token use, user change) in the store and the log."""
    store.add_audit(event, user, detail, at=utc_iso())
    _audited(store, event, user, detail)


def _audited(store: Store, event: str, user: str, detail: str = "") -> None:
    """After an event reached the audit log: the log line, and now and then pruning past AUDIT_KEEP_DAYS."""
    if secrets.randbelow(200) == 0:  # prune now and then rather than on every write
        store.prune_audit(utc_iso(utc_now() - timedelta(days=AUDIT_KEEP_DAYS)))
    log.info("audit: %s %s %s", event, user, detail)


def recent_audit(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    return store.recent_audit(limit)
