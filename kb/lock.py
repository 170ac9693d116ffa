"""One writer at a time: crawl, reindex, update and restore take the data-directory lock.

The lock is an `fcntl.flock` on `kb.lock` in the data directory. The kernel releases a
flock when its process dies, even after `kill -9`, so a crashed crawl never blocks the
next cron run. The file's content (JSON: pid, host, command, start time, heartbeat) only
explains who holds the lock; a daemon thread refreshes the heartbeat every few seconds
so a hung holder can be told apart from a busy one.

A held lock is broken only when its holder cannot still be working: its PID is gone on
this host (an inherited descriptor keeps the flock alive), or its heartbeat is older
than `stale_after` while the process is not merely suspended (Ctrl-Z). Breaking means
unlinking the file; every acquirer checks it locked the file that is still at the path.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from kb.clock import utc_iso, utc_now
from kb.config import data_paths
from kb.errors import KBError, LockHeld

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 600.0

_held: dict[str, "_Holder"] = {}  # lock path -> holder in this process (re-entrant per thread)
_held_guard = threading.Lock()


def _age_seconds(stamp: str | None) -> float | None:
    """Seconds since an ISO timestamp, or None when it is missing or unreadable."""
    try:
        return (utc_now() - datetime.fromisoformat(stamp)).total_seconds() if stamp else None
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return _proc_state(pid) != "Z"


def _proc_state(pid: int) -> str | None:
    """One-letter state from /proc (R, S, D, T, Z …), None where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else None


def _read_info(path: Path) -> dict[str, Any] | None:
    """The holder's description; retried briefly because the heartbeat rewrites it in place."""
    for _ in range(5):
        try:
            text = path.read_text("utf-8")
        except OSError:  # missing or unreadable: nobody we can name
            return None
        if not text.strip():
            return None
        try:
            info = json.loads(text)
        except ValueError:
            time.sleep(0.02)
            continue
        return info if isinstance(info, dict) else None
    return None


def describe(info: dict[str, Any] | None) -> str:
    """"pid 1234 on host, started …" for messages; tolerant of missing fields."""
    if not info:
        return "holder unknown"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts[0] += f" on {info['host']}"
    if info.get("started"):
        parts.append(f"started {info['started']}")
    age = _age_seconds(info.get("heartbeat"))
    if age is not None:
        parts.append(f"last heartbeat {age:.0f} s ago")
    return ", ".join(parts)


def lock_status(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the writer lock right now (for `kb stats` and /healthz), or None when it is free.

    Reads the file without locking it, so polling never makes a starting writer fail.
    """
    info = _read_info(data_paths(data_dir)["lock"])
    if not info or (info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid") or 0))):
        return None
    return info | {"heartbeat_age": _age_seconds(info.get("heartbeat"))}


class _Holder:
    """The open, flocked lock file of this process plus its heartbeat thread."""

    def __init__(self, path: Path, fd: int, info: dict[str, Any], heartbeat: float) -> None:
        self.path = path
        self.fd = fd
        self.info = info
        self.thread_id = threading.get_ident()
        self.depth = 1
        self._stop = threading.Event()
        self._write()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), name=f"kb-lock-{info['command']}",
                                        daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self.info["heartbeat"] = utc_iso()
        data = json.dumps(self.info).encode("utf-8")
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._write()
            except OSError as exc:  # disk full, etc.: the flock still protects us
                log.warning("Could not refresh the lock heartbeat: %s", exc)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            os.ftruncate(self.fd, 0)  # an empty file means "released cleanly"
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _should_break(info: dict[str, Any] | None, stale_after: float) -> str | None:
    """Why a held lock may be taken over, or None when its holder may still be working."""
    if not info:
        return None
    pid = int(info.get("pid") or 0)
    same_host = info.get("host") == socket.gethostname()
    if same_host and not pid_alive(pid):
        return f"its process {pid} is gone"
    age = _age_seconds(info.get("heartbeat"))
    if age is not None and age > stale_after:
        if same_host and _proc_state(pid) == "T":
            return None  # suspended (Ctrl-Z): it will resume, do not steal from it
        return f"its heartbeat stopped {age:.0f} s ago"
    return None


def _acquire(path: Path, name: str, stale_after: float, heartbeat: float) -> _Holder:
    broken = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(path)
            reason = None if broken else _should_break(info, stale_after)
            if reason is None:
                os.close(fd)
                command = (info or {}).get("command") or "another kb writer"
                running = f"kb {command}" if (info or {}).get("command") else command
                if info and _proc_state(int(info.get("pid") or 0)) == "T":
                    remedy = "That process is suspended: resume it (fg) or stop it, then try again."
                else:
                    remedy = "Wait for it to finish and try again; a killed process's lock is recovered automatically."
                raise LockHeld(f"{running} is already running ({describe(info)}).", remedy) from None
            log.warning("Breaking the writer lock held by %s: %s.", describe(info), reason,
                        extra={"lock": str(path), "holder": info})
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not a file another breaker just made
                    path.unlink()
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
            broken = True
            continue
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise KBError(f"The file system of {path.parent} does not support file locks.",
                              "Keep the data directory on a local disk.") from None
            raise
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # someone broke the lock between our open() and flock(): retry on the new file
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        previous = _read_info(path)
        if previous:
            log.warning("Recovered the writer lock left by %s (kb %s did not exit cleanly).",
                        describe(previous), previous.get("command", "?"),
                        extra={"lock": str(path), "holder": previous})
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": name, "started": utc_iso()}
        return _Holder(path, fd, info, heartbeat)


@contextmanager
def writer_lock(data_dir: str | os.PathLike[str], name: str, *, stale_after: float = STALE_AFTER_SECONDS,
                heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[dict[str, Any]]:
    """Hold the data directory's writer lock for `kb <name>`; raise LockHeld at once if another writer has it.

    Re-entrant within one thread, so `kb update` may call crawl and reindex code that each take it.
    Yields the holder's description (pid, host, command, started, heartbeat).
    """
    path = data_paths(data_dir)["lock"]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _held_guard:
        holder = _held.get(key)
        if holder is not None:
            if holder.thread_id != threading.get_ident():
                raise LockHeld(f"kb {holder.info['command']} is already running in this process.",
                               "Wait for it to finish and try again.")
            holder.depth += 1
        else:
            holder = _held[key] = _acquire(path, name, stale_after, heartbeat)
    try:
        yield dict(holder.info)
    finally:
        with _held_guard:
            holder.depth -= 1
            if holder.depth == 0:
                del _held[key]
                holder.release()
