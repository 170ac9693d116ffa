"""Connection pools of the PostgreSQL store: one for the primary, one per replica, and replica health.

Pools are per process (a forked worker never reuses its parent's sockets) and per URL, shared by every
`PostgresStore` the process opens, so opening a store per request costs no login. A replica whose connection
fails is marked down for `REPLICA_BACKOFF` seconds: reads skip it at once and go to the next replica or the
primary; after the back-off it is tried again. Passwords never reach a log line (`redact`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

REPLICA_BACKOFF = 10.0  # seconds a failed replica stays out of rotation
REPLICA_CHECKOUT = 1.0  # seconds a read waits for a replica connection before trying elsewhere
PRIMARY_CHECKOUT = 10.0  # seconds a store waits for a primary connection (busy pool or server down)
CONNECT_TIMEOUT = 5  # seconds to establish one connection
PROBE_TIMEOUT = 2  # seconds a health probe waits for one server's connection

_lock = threading.Lock()
_pools: dict[tuple[int, str], ConnectionPool] = {}
_down_until: dict[str, float] = {}
_migrated: set[tuple[int, str]] = set()


def redact(url: str) -> str:
    """`url` with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def get_pool(url: str, *, replica: bool = False) -> ConnectionPool:
    """The process's pool for `url`, opened on first use (connections are made in the background)."""
    key = (os.getpid(), url)
    with _lock:
        found = _pools.get(key)
        if found is None:
            found = ConnectionPool(
                url, min_size=1, max_size=10, open=True, name=("replica " if replica else "primary ") + redact(url),
                timeout=REPLICA_CHECKOUT if replica else PRIMARY_CHECKOUT,
                kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT,
                        "application_name": "kb"},
                check=ConnectionPool.check_connection if replica else None,
            )
            _pools[key] = found
        return found


def once_migrated(url: str) -> bool:
    """Whether this process already brought the database at `url` up to date (later opens skip the check)."""
    return (os.getpid(), url) in _migrated


def mark_migrated(url: str) -> None:
    with _lock:
        _migrated.add((os.getpid(), url))


def replica_up(url: str) -> bool:
    """Whether `url` is in rotation (not marked down, or its back-off is over)."""
    return _down_until.get(url, 0.0) <= time.monotonic()


def mark_down(url: str, exc: BaseException) -> None:
    """Take a replica out of rotation for REPLICA_BACKOFF seconds."""
    _down_until[url] = time.monotonic() + REPLICA_BACKOFF
    log.warning("PostgreSQL replica %s is out of rotation for %.0f s: %s", redact(url), REPLICA_BACKOFF,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def close_pools(urls: Any = None) -> None:
    """Close this process's pools (of `urls`, else all): tests dropping a database, a process shutting down."""
    with _lock:
        keys = [k for k in _pools if urls is None or k[1] in set(urls)]
        closing = [_pools.pop(k) for k in keys]
        for key in keys:
            _migrated.discard(key)
            _down_until.pop(key[1], None)
    for pool in closing:
        pool.close()


# -- replica health: what /healthz and `kb stats` say about each replica -------------------------------------

def replica_status(primary_url: str, replica_urls: Sequence[str], timeout: int = PROBE_TIMEOUT) -> list[dict[str, Any]]:
    """Each replica as an operator needs it: reachable or not, and how far its replay trails the primary.

    `lag_bytes` is the WAL between the primary's current position and the replica's replay position (None when
    the primary does not answer); `lag_seconds` is `now() - pg_last_xact_replay_timestamp()` while received WAL
    waits to be replayed, and 0 when all of it is (an idle primary sends no transactions, so the raw timestamp
    would grow forever). New connections, not the pools: a probe never waits behind busy readers and never takes a
    replica out of rotation. Replicas are probed at once, so a dead one costs `timeout`, not `timeout` each.
    """
    if not replica_urls:
        return []
    position = _primary_position(primary_url, timeout)
    with ThreadPoolExecutor(max_workers=len(replica_urls), thread_name_prefix="kb-replica-probe") as pool:
        return list(pool.map(lambda url: _replica_facts(url, position, timeout), replica_urls))


def _primary_position(url: str, timeout: int) -> str | None:
    """The primary's current WAL position (text), or None when it does not answer or is itself a standby."""
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True, application_name="kb health") as conn:
            row = conn.execute("SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
                               "ELSE pg_current_wal_lsn()::text END").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def _replica_facts(url: str, position: str | None, timeout: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"url": redact(url), "reachable": False, "standby": None, "lag_seconds": None,
                             "lag_bytes": None}
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True, application_name="kb health") as conn:
            standby, seconds, behind = conn.execute(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
                "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8, "
                "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint", (position,)).fetchone()
    except psycopg.Error as exc:
        facts["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return facts
    facts.update(reachable=True, standby=bool(standby), lag_seconds=None if seconds is None else round(seconds, 3),
                 lag_bytes=None if behind is None else max(0, int(behind)))  # it may replay past `position`
    return facts
