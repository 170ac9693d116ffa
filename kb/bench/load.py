"""HTTP load against a real `kb serve` subprocess on 127.0.0.1, bounded in requests and time.

Threads with one keep-alive http.client connection each: the client must be cheap,
because on a small machine it shares the CPUs with the server it measures.
Only loopback addresses are accepted, and every phase stops by itself.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode

from kb.errors import KBError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def child_env(**extra: str) -> dict[str, str]:
    """Environment for benchmark subprocesses: they import the same kb as this process, installed or not."""
    import kb

    root = str(Path(kb.__file__).resolve().parents[1])
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def search_path(endpoint: str, item: dict[str, Any]) -> str:
    """The URL path of one benchmark query against /search or /api/search."""
    params: list[tuple[str, str]] = [("q", item["q"])]
    if item.get("page", 1) != 1:
        params.append(("page", str(item["page"])))
    for key, values in (item.get("filters") or {}).items():
        params.extend((key, v) for v in values)
    return f"{endpoint}?{urlencode(params)}"


@dataclass
class LoadResult:
    """One phase: fixed concurrency against one endpoint."""

    endpoint: str
    clients: int
    requests: int = 0
    errors: int = 0
    throttled: int = 0  # 429 answers, also counted in errors
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # CPUs the load generator itself used (it shares the machine with the server)
    rebuild_running_at_end: bool | None = None  # None: idle phase; a rebuild was always running at the start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_load(host: str, port: int, paths: Sequence[str], *, clients: int, max_requests: int,
             seconds: float, endpoint: str = "", timeout: float = 30.0, expect_json: bool = False) -> LoadResult:
    """Send GETs for `paths` round-robin from `clients` threads until max_requests or `seconds` pass."""
    if host != LOOPBACK:
        raise KBError(f"Refusing to send load to {host}.", "The benchmark only talks to 127.0.0.1.")
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    result = LoadResult(endpoint=endpoint, clients=clients)
    deadline = time.perf_counter() + seconds

    def record_error(message: str) -> None:
        with lock:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(message)

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        local: list[float] = []
        statuses: dict[str, int] = {}
        try:
            while time.perf_counter() < deadline:
                n = next(counter)
                if n >= max_requests:
                    break
                path = paths[n % len(paths)]
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                start = time.perf_counter()
                try:
                    conn.request("GET", path, headers={"Accept": "application/json" if expect_json else "text/html"})
                    response = conn.getresponse()
                    body = response.read()
                    status = response.status
                    reuse = not response.will_close
                except (OSError, http.client.HTTPException) as exc:
                    record_error(f"{type(exc).__name__}: {exc} ({path})")
                    conn.close()
                    conn = None
                    continue
                local.append((time.perf_counter() - start) * 1000.0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if not reuse:
                    conn.close()
                    conn = None
                if status != 200:
                    record_error(f"HTTP {status} for {path}: {body[:160]!r}")
                    if status == 429:
                        with lock:
                            result.throttled += 1
                elif expect_json:
                    try:
                        payload = json.loads(body)
                        if "results" not in payload:
                            raise ValueError("no 'results' key")
                    except ValueError as exc:
                        record_error(f"bad JSON for {path}: {exc}")
        finally:
            if conn is not None:
                conn.close()
            with lock:
                latencies.extend(local)
                for key, value in statuses.items():
                    result.statuses[key] = result.statuses.get(key, 0) + value

    started = time.perf_counter()
    cpu_start = time.process_time()
    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    result.seconds = time.perf_counter() - started
    result.client_cpu = (time.process_time() - cpu_start) / result.seconds if result.seconds else 0.0
    result.requests = len(latencies)
    result.rps = result.requests / result.seconds if result.seconds else 0.0
    result.p50_ms = percentile(latencies, 50)
    result.p95_ms = percentile(latencies, 95)
    result.p99_ms = percentile(latencies, 99)
    return result


MEMORY_KEYS = {"VmRSS:": "rss_mb", "VmHWM:": "peak_rss_mb", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}


def _proc_memory(pid: int) -> dict[str, float] | None:
    """RSS figures (MB) of one process from /proc/PID/status, PSS from smaps_rollup; None once it is gone."""
    out = dict.fromkeys(MEMORY_KEYS.values(), 0.0)
    out["pss_mb"] = 0.0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                name = line.split(None, 1)[0] if line.strip() else ""
                if name in MEMORY_KEYS:
                    out[MEMORY_KEYS[name]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["pss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass  # no smaps_rollup (old kernel): PSS stays 0
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (gunicorn workers are children of the `kb serve` master), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def process_tree_memory(pid: int) -> dict[str, Any]:
    """Memory of `pid` and its descendants: the largest process (the serving-worker figure), and sums.

    rss_mb, peak_rss_mb, anon_mb, file_mb are each the maximum over the processes, so with several
    workers they describe one worker (the target is per worker). sum_rss_mb counts pages shared
    copy-on-write once per process; sum_pss_mb shares them out and is what the machine really spends.
    File-backed pages are index files Whoosh reads; every open reader maps them again.
    """
    found = {p: m for p in [pid] + descendants(pid) if (m := _proc_memory(p)) is not None}
    keys = list(MEMORY_KEYS.values()) + ["pss_mb"]
    out: dict[str, Any] = {key: max((m[key] for m in found.values()), default=0.0) for key in keys}
    out["processes"] = len(found)
    out["sum_rss_mb"] = sum(m["rss_mb"] for m in found.values())
    out["sum_pss_mb"] = sum(m["pss_mb"] for m in found.values())
    out["per_process"] = {str(p): {"rss_mb": m["rss_mb"], "peak_rss_mb": m["peak_rss_mb"], "pss_mb": m["pss_mb"]}
                          for p, m in found.items()}
    return out


class Server:
    """`kb serve` as a real subprocess on a free loopback port; stopped by its own pid only.

    `workers` None means the WORKERS setting (one per CPU core), as `kb serve` runs it in production;
    `threads` None is kb serve's default per worker.
    """

    def __init__(self, data_dir: Path, *, workers: int | None = None, threads: int | None = None,
                 server: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.server = server
        self.extra_env = dict(env or {})
        self.log_path = log_path or self.data_dir.parent / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        options = [("--server", server), ("--workers", workers), ("--threads", threads)]
        self.options = [str(x) for name, value in options if value is not None for x in (name, value)]
        self.command = " ".join(["kb serve", *self.options])

    def start(self, ready_timeout: float = 60.0) -> "Server":
        code = "import sys; from kb.cli import cli; sys.exit(cli())"
        args = [sys.executable, "-c", code, "--data-dir", str(self.data_dir), "serve",
                "--host", LOOPBACK, "--port", str(self.port), *self.options]
        env = child_env(KB_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1", **self.extra_env)
        with open(self.log_path, "wb") as log_fh:
            self.proc = subprocess.Popen(args, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self._wait_ready(ready_timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The serving processes under `kb serve` (gunicorn workers); empty for a one-process server."""
        return descendants(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise KBError(f"kb serve exited with code {self.proc.returncode} before answering: {self.log_tail()}",
                              "Run `kb serve` by hand on the benchmark data dir to see why.")
            try:
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
                try:
                    conn.request("GET", "/api/search?q=skin")
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
                finally:
                    conn.close()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        self.stop()
        raise KBError(f"kb serve did not answer /api/search within {timeout:.0f} s ({last}).",
                      f"See {self.log_path}.")

    def memory(self) -> dict[str, Any]:
        if self.proc is None:
            return process_tree_memory(-1)
        return process_tree_memory(self.proc.pid)

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, as systemd stops it (gunicorn drains its workers); the whole process group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("kb serve (pid %d) ignored SIGTERM for %.0f s; killing its process group",
                        self.proc.pid, timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session (start_new_session): master and workers
            self.proc.wait(10)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
