"""The writer lock, with real processes: fail fast while held, recover after kill -9 or a dead heartbeat."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from kb.config import data_paths
from kb.errors import LockHeld
from kb.lock import lock_status, writer_lock

HOLDER = textwrap.dedent("""
    import sys, time
    from kb.lock import writer_lock
    with writer_lock(sys.argv[1], sys.argv[2], heartbeat=float(sys.argv[3])):
        print("locked", flush=True)
        time.sleep(60)
""")


def _spawn(data_dir: Path, name: str = "reindex", heartbeat: float = 0.2) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), name, str(heartbeat)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def holder(data_dir: Path) -> Iterator[subprocess.Popen]:
    proc = _spawn(data_dir)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_second_acquirer_fails_fast_with_who_holds_it(data_dir: Path, holder: subprocess.Popen) -> None:
    started = time.monotonic()
    with pytest.raises(LockHeld) as info:
        with writer_lock(data_dir, "crawl"):
            pytest.fail("acquired a lock another process holds")
    assert time.monotonic() - started < 1.0
    assert f"kb reindex is already running (pid {holder.pid}" in info.value.message
    assert "started " in info.value.message
    assert info.value.remedy
    assert info.value.exit_code == 75


def test_kill_9_releases_the_lock_and_the_next_acquire_recovers(data_dir: Path, holder: subprocess.Popen,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads(data_paths(data_dir)["lock"].read_text())["pid"] == holder.pid  # left behind
    assert lock_status(data_dir) is None  # a dead holder is not reported as running
    with caplog.at_level(logging.WARNING, logger="kb.lock"):
        with writer_lock(data_dir, "crawl") as me:
            assert me["pid"] == os.getpid()
            assert lock_status(data_dir)["command"] == "crawl"
    assert any(f"pid {holder.pid}" in r.getMessage() and "did not exit cleanly" in r.getMessage()
               for r in caplog.records)


def test_heartbeat_is_refreshed_while_held(data_dir: Path, holder: subprocess.Popen) -> None:
    first = lock_status(data_dir)
    assert first is not None and first["pid"] == holder.pid and first["command"] == "reindex"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = lock_status(data_dir)
        if now and now["heartbeat"] != first["heartbeat"]:
            break
    else:
        pytest.fail("heartbeat never changed")
    assert now["started"] == first["started"]


def test_a_hung_holder_with_a_stale_heartbeat_is_broken(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _spawn(data_dir, "crawl", heartbeat=3600)  # alive, holds the flock, never beats again
    try:
        with pytest.raises(LockHeld):  # fresh heartbeat: respected
            with writer_lock(data_dir, "reindex", stale_after=30):
                pass
        time.sleep(1.2)
        with caplog.at_level(logging.WARNING, logger="kb.lock"):
            with writer_lock(data_dir, "reindex", stale_after=1):
                assert lock_status(data_dir)["pid"] == os.getpid()
        assert any("heartbeat stopped" in r.getMessage() for r in caplog.records)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_suspended_holder_is_not_robbed(data_dir: Path) -> None:
    proc = _spawn(data_dir, "crawl", heartbeat=3600)
    try:
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1.2)
        with pytest.raises(LockHeld) as info:
            with writer_lock(data_dir, "reindex", stale_after=1):
                pass
        assert "suspended" in info.value.remedy
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_clean_release_leaves_nothing_to_recover(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with writer_lock(data_dir, "reindex"):
        pass
    assert lock_status(data_dir) is None
    with caplog.at_level(logging.WARNING, logger="kb.lock"):
        with writer_lock(data_dir, "reindex"):
            pass
    assert not caplog.records


def test_reentrant_in_one_thread_exclusive_across_threads(data_dir: Path) -> None:
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with writer_lock(data_dir, "update"):
                pass
        except LockHeld as exc:
            errors.append(exc)

    with writer_lock(data_dir, "update"):
        with writer_lock(data_dir, "reindex") as inner:
            assert inner["command"] == "update"
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert lock_status(data_dir) is not None  # inner exit did not release
    assert len(errors) == 1 and "already running" in errors[0].message
    assert lock_status(data_dir) is None
