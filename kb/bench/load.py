"""HTTP load against a real `kb serve` subprocess on 127.0.0.1, bounded in requests and time.

Threads with one keep-alive http.client connection each: the client must be cheap,
because on a small machine it shares the CPUs with the server it measures.
Only loopback addresses are accepted, and every phase stops by itself. Several servers (nodes of one
site, as behind a load balancer) share a phase: its clients are spread over them round-robin.
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
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from kb.errors import KBError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: The headline figure of every HTTP table and contract line: /api/search at this many concurrent clients.
HEADLINE_CLIENTS = 8
#: `python -c` code that runs the kb command line in a subprocess (installed or not, see child_env).
KB_CLI_CODE = "import sys; from kb.cli import cli; sys.exit(cli())"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float, b: float) -> str:
    """"1.23x", or "-" when there is nothing to compare with."""
    return f"{a / b:.2f}x" if b else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for benchmark subprocesses: they import the same kb as this process, installed or not."""
    import kb

    root = str(Path(kb.__file__).resolve().parents[1])
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def kb_args(data_dir: Path, *args: str) -> list[str]:
    """argv of `kb --data-dir DATA_DIR ARGS...` run by this interpreter."""
    return [sys.executable, "-c", KB_CLI_CODE, "--data-dir", str(data_dir), *args]


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
    ports: dict[str, int] = field(default_factory=dict)  # answered requests per server port (node)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_load(host: str, port: int | Sequence[int], paths: Sequence[str], *, clients: int, max_requests: int,
             seconds: float, endpoint: str = "", timeout: float = 30.0, expect_json: bool = False) -> LoadResult:
    """Send GETs for `paths` round-robin from `clients` threads until max_requests or `seconds` pass.

    With several ports (nodes of one site) client i talks to port i mod n, so the nodes share the load evenly.
    """
    if host != LOOPBACK:
        raise KBError(f"Refusing to send load to {host}.", "The benchmark only talks to 127.0.0.1.")
    ports = [port] if isinstance(port, int) else list(port)
    if not ports:
        raise KBError("No server to send load to.", "Start at least one kb serve.")
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

    def worker(port: int) -> None:
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
                result.ports[str(port)] = result.ports.get(str(port), 0) + len(local)
                for key, value in statuses.items():
                    result.statuses[key] = result.statuses.get(key, 0) + value

    started = time.perf_counter()
    cpu_start = time.process_time()
    threads = [threading.Thread(target=worker, args=(ports[i % len(ports)],), name=f"load-{i}", daemon=True)
               for i in range(clients)]
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
        args = kb_args(self.data_dir, "serve", "--host", LOOPBACK, "--port", str(self.port), *self.options)
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


class Reindexer:
    """A full rebuild (`args`, a subprocess) restarted while load phases still need one running."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env if env is not None else child_env()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.completed = 0
        self.failures: list[str] = []
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()

    def ensure_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._reap()
        if self.proc is None:
            self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=self._log, env=self.env)

    def _reap(self) -> None:
        assert self.proc is not None
        if self.proc.returncode == 0:
            self.completed += 1
        else:
            self.failures.append(f"rebuild exited with {self.proc.returncode} (see {self.log_path})")
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> bool:
        """Let the current rebuild finish (True) or stop it after `timeout` (False)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None
            return False
        self._reap()
        return True

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._log.close()


@dataclass
class LoadPlan:
    """The phases one HTTP measurement runs: (endpoint, clients) pairs, each bounded in requests and seconds."""

    order: list[tuple[str, int]]
    requests: int
    seconds: float
    reindex_timeout: float


def run_phases(servers: Sequence[Server], paths: dict[str, list[str]], plan: LoadPlan, reindexer: Reindexer,
               echo: Callable[[str], None]) -> dict[str, Any]:
    """Idle phases, then the same phases while full rebuilds run, then a watch across the swap.

    Every phase spreads its clients over `servers` (one or several nodes of one site). Returns the rows of
    each phase, the swap watch, and each server's memory after the idle phases and at the end.
    """
    ports = [s.port for s in servers]

    def phase(endpoint: str, clients: int, seconds: float | None = None, most: int | None = None) -> LoadResult:
        return run_load(LOOPBACK, ports, paths[endpoint], clients=clients, max_requests=most or plan.requests,
                        seconds=seconds or plan.seconds, endpoint=endpoint, expect_json=endpoint == "/api/search")

    out: dict[str, Any] = {"idle": [], "reindex": []}
    try:
        _idle_phases(servers, plan, phase, out, echo)
        _reindex_phases(servers, plan, phase, reindexer, out, echo)
    finally:
        reindexer.close()
    out["memory"] = [s.memory() for s in servers]
    return out


#: One bounded load phase of run_phases: (endpoint, clients, seconds=None, most=None) -> its result.
Phase = Callable[..., LoadResult]


def _idle_phases(servers: Sequence[Server], plan: LoadPlan, phase: Phase, out: dict[str, Any],
                 echo: Callable[[str], None]) -> None:
    # Warm up at the highest concurrency so every pooled searcher is open before the idle phases:
    # they measure the steady state; opening searchers after a swap is measured under reindex.
    most = max(max(c for _, c in plan.order), len(servers))
    out["warmup_errors"] = phase("/api/search", most, seconds=3.0, most=4 * most).errors
    for endpoint, clients in plan.order:
        result = phase(endpoint, clients)
        out["idle"].append(result.to_dict())
        echo(f"  http idle    {endpoint:<12} {clients:>2} clients: {result.rps:7.1f} req/s "
             f"p95 {result.p95_ms:7.1f} ms errors {result.errors}")
    out["memory_idle"] = [s.memory() for s in servers]


def _reindex_phases(servers: Sequence[Server], plan: LoadPlan, phase: Phase, reindexer: Reindexer,
                    out: dict[str, Any], echo: Callable[[str], None]) -> None:
    # The headline figure (/api/search, 8 clients) first, while the rebuild surely runs.
    headline_phase = ("/api/search", HEADLINE_CLIENTS)
    for endpoint, clients in sorted(plan.order, key=lambda p: (p != headline_phase, plan.order.index(p))):
        reindexer.ensure_running()
        result = phase(endpoint, clients)
        result.rebuild_running_at_end = reindexer.running
        out["reindex"].append(result.to_dict())
        echo(f"  http reindex {endpoint:<12} {clients:>2} clients: {result.rps:7.1f} req/s "
             f"p95 {result.p95_ms:7.1f} ms errors {result.errors}")
    # Keep light traffic going (a client per server) until the rebuild swaps generations, to catch errors there.
    watch_requests = watch_errors = 0
    deadline = time.monotonic() + plan.reindex_timeout
    samples: list[str] = []
    while reindexer.running and time.monotonic() < deadline:
        r = phase("/api/search", len(servers), seconds=1.0, most=200)
        watch_requests += r.requests
        watch_errors += r.errors
        samples += r.error_samples[: max(0, 5 - len(samples))]
    finished = reindexer.wait(max(1.0, deadline - time.monotonic()))
    after = phase("/api/search", max(2, len(servers)), seconds=1.0, most=60)
    out["swap_watch"] = {"requests": watch_requests + after.requests, "errors": watch_errors + after.errors,
                         "error_samples": samples + after.error_samples, "rebuild_finished": finished,
                         "rebuilds_completed": reindexer.completed, "rebuild_failures": reindexer.failures}


def headline(http: dict[str, Any], phase: str) -> dict[str, Any]:
    """The /api/search row at HEADLINE_CLIENTS of a phase ("idle" or "reindex"), else its middle /api/search row."""
    for row in http[phase]:
        if row["endpoint"] == "/api/search" and row["clients"] == HEADLINE_CLIENTS:
            return row
    rows = [r for r in http[phase] if r["endpoint"] == "/api/search"]
    return rows[len(rows) // 2] if rows else {"rps": 0.0, "p95_ms": 0.0}
