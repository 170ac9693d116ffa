"""`kb bench`: index build, query latency and HTTP load on a realistic corpus, against baselines.

Every figure is measured in the same run on the same corpus for kb, SQLite FTS5 and
plain Whoosh (kb.bench.baselines, shared with `kb eval`), because absolute numbers mean
little across machines while ratios do.
Builds and query runs happen in fresh subprocesses so each reports its own peak RSS
and nothing warms up another's caches. The last output line is a stable contract
(`bench: articles=... errors=0`) that scripts and CI parse.
"""

from __future__ import annotations

import cProfile
import json
import logging
import os
import platform
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from kb.bench import baselines
from kb.bench import corpus as corpus_mod
from kb.bench.load import LoadResult, Server, child_env, percentile, run_load, search_path
from kb.errors import KBError
from kb.models import Article

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZE = 10_000
HEADLINE_CLIENTS = 8
#: FTS5 ranks title hits this much above body hits, as kb ranks title matches first (see Fts5Baseline).
FTS5_TITLE_WEIGHT = 10.0

#: Targets from the issue; each row of the table reports PASS or MISS against one of these.
TARGETS = {
    "index_rate": 250.0,          # articles/s, full build
    "update_1000_s": 10.0,        # seconds for 1,000 changed articles
    "query_p95_ms": 50.0,         # every query type
    "query_vs_fts5": 2.0,         # kb p95 <= 2x FTS5 p95, every type
    "http_rps": 100.0,            # /api/search, 8 clients
    "http_p95_ms": 150.0,
    "http_p95_reindex_ms": 250.0,
    "server_rss_mb": 300.0,
    "index_size_ratio": 2.5,      # index bytes / stored text bytes
    "errors": 0,
}


@dataclass
class BenchConfig:
    """Everything one run needs; the CLI only fills this in."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    seed: int = 0
    eval_dir: Path | None = None
    work_dir: Path | None = None
    keep: bool = False
    queries_per_type: int = 150
    http_seconds: float = 10.0
    http_requests: int = 5_000
    http_clients: tuple[int, ...] = (1, 8, 32)
    server_workers: int | None = None  # None: `kb serve` runs the WORKERS setting (one per CPU), as in production
    server_threads: int | None = None  # None: kb serve's default threads per worker
    update_share: float = 0.01
    reindex_timeout: float = 1800.0
    profile_dir: Path | None = None
    quick: bool = False
    #: Reuse the corpus and builds a previous `--keep` run left in work_dir (kb's index is rebuilt
    #: only when its SCHEMA_VERSION changed): query runs at 100k then take minutes, not a quarter hour.
    reuse: bool = False
    skip: tuple[str, ...] = ()  # phases left out while iterating: "http", "update", "whoosh"

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> "BenchConfig":
        base = dict(sizes=(QUICK_SIZE,), queries_per_type=30, http_seconds=4.0, http_requests=1_500,
                    reindex_timeout=60.0, quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# --------------------------------------------------------------------------- workers (run in subprocesses)

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cpu_seconds() -> float:
    """CPU time of this process: unlike wall time it barely moves when other processes share the CPUs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dir_size(path: Path) -> int:
    """Bytes on disk of every file below `path` (or of the file itself)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def iter_store(store_path: str, chunk: int = 1000) -> Iterator[Article]:
    """Stream articles in id order through the Store API in chunks, so memory stays flat."""
    from kb.store import open_store

    with open_store(store_path) as store:
        ids = sorted(store.article_ids().values())
        for i in range(0, len(ids), chunk):
            yield from store.iter_articles(ids[i:i + chunk])


def _store_docs(store_path: str) -> Iterator[baselines.Doc]:
    """The store's articles as the baselines index them."""
    for article in iter_store(store_path):
        yield baselines.Doc(str(article.id), article.title, article.text, tuple(article.tags))


def _build_baseline(engine: str, job: dict[str, Any]) -> dict[str, Any]:
    """Build one baseline (FTS5 or plain Whoosh) from the store, timed like kb's own build."""
    cpu = _cpu_seconds()
    start = time.perf_counter()
    count = baselines.BASELINES[engine].build(Path(job["path"]), _store_docs(job["store"]))
    cpu = _cpu_seconds() - cpu
    seconds = time.perf_counter() - start
    return {"docs": count, "seconds": seconds, "cpu_seconds": cpu, "size_bytes": dir_size(Path(job["path"]))}


def _build_kb(job: dict[str, Any]) -> dict[str, Any]:
    from kb import index as kb_index
    from kb.store import open_store

    root = Path(job["path"])
    cpu = _cpu_seconds()
    start = time.perf_counter()
    with open_store(job["store"]) as store:
        count = kb_index.rebuild(store, root)
    cpu = _cpu_seconds() - cpu
    seconds = time.perf_counter() - start
    generation = kb_index.current_generation(root)
    return {"docs": count, "seconds": seconds, "cpu_seconds": cpu, "size_bytes": dir_size(generation or root),
            "generation": str(generation)}


def _update_kb(job: dict[str, Any]) -> dict[str, Any]:
    from kb import index as kb_index
    from kb.store import open_store

    root = Path(job["path"])
    cpu = _cpu_seconds()
    start = time.perf_counter()
    with open_store(job["store"]) as store:
        indexed, deleted = kb_index.update(store, root)
    cpu = _cpu_seconds() - cpu
    seconds = time.perf_counter() - start
    generation = kb_index.current_generation(root)
    return {"indexed": indexed, "deleted": deleted, "seconds": seconds, "cpu_seconds": cpu,
            "size_bytes": dir_size(generation or root)}


def baseline_query(item: dict[str, Any]) -> baselines.Query:
    """What a bench query means to the plain engines: typed in a search box, AND of the words, OR for questions."""
    question = item["type"] == "question"
    tags = (item.get("filters") or {}).get("tag")
    return baselines.Query(item["q"], match_all=not question, syntax=True, drop_stop_words=question,
                           tag=tags[0] if tags else None)


class _Engine:
    """One engine under test; `search` returns (total, had_suggestion)."""

    def search(self, item: dict[str, Any]) -> tuple[int, bool]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _BaselineEngine(_Engine):
    """FTS5 or plain Whoosh, each rendering a results page (titles and snippets) as a search box would."""

    def __init__(self, engine: baselines.Baseline) -> None:
        self.engine = engine

    def search(self, item: dict[str, Any]) -> tuple[int, bool]:
        _, total = self.engine.page(baseline_query(item), item.get("page", 1), pagelen=10)
        return total, False

    def close(self) -> None:
        self.engine.close()


class _KbEngine(_Engine):
    def __init__(self, path: str) -> None:
        from kb.search import Searcher

        self.searcher = Searcher(Path(path))

    def search(self, item: dict[str, Any]) -> tuple[int, bool]:
        results = self.searcher.search(item["q"], page=item.get("page", 1), per_page=10,
                                       filters=item.get("filters"))
        return results.total, bool(results.suggestions)

    def close(self) -> None:
        self.searcher.close()


_ENGINES: dict[str, Callable[[str], _Engine]] = {
    "kb": _KbEngine,
    "fts5": lambda path: _BaselineEngine(baselines.Fts5Baseline(Path(path), title_weight=FTS5_TITLE_WEIGHT)),
    "whoosh": lambda path: _BaselineEngine(baselines.WhooshBaseline(Path(path))),
}


def _query(job: dict[str, Any]) -> dict[str, Any]:
    """Time every query once (after one untimed round of each type); per-type latencies in ms."""
    items: list[dict[str, Any]] = json.loads(Path(job["queries"]).read_text("utf-8"))
    engine = _ENGINES[job["engine"]](job["path"])
    latencies: dict[str, list[float]] = {}
    cpu_latencies: dict[str, list[float]] = {}
    zero: dict[str, int] = {}
    suggested: dict[str, int] = {}
    errors: list[str] = []
    error_count = 0
    profiler = cProfile.Profile() if job.get("profile") else None
    try:
        seen_types: set[str] = set()
        for item in items:  # warm-up: open files, fill OS and analyzer caches
            if item["type"] not in seen_types:
                seen_types.add(item["type"])
                try:
                    engine.search(item)
                except Exception:  # noqa: BLE001 - counted below when it happens again
                    pass
        if profiler:
            profiler.enable()
        for item in items:
            start = time.perf_counter()
            cpu_start = time.thread_time()
            try:
                total, had_suggestion = engine.search(item)
            except Exception as exc:  # noqa: BLE001 - a failing query is a measured error, not a crash
                error_count += 1
                if len(errors) < 5:
                    errors.append(f"{item['type']} {item['q']!r}: {type(exc).__name__}: {exc}")
                continue
            elapsed = (time.perf_counter() - start) * 1000.0
            latencies.setdefault(item["type"], []).append(elapsed)
            cpu_latencies.setdefault(item["type"], []).append((time.thread_time() - cpu_start) * 1000.0)
            zero[item["type"]] = zero.get(item["type"], 0) + (total == 0)
            suggested[item["type"]] = suggested.get(item["type"], 0) + had_suggestion
        if profiler:
            profiler.disable()
            profiler.dump_stats(job["profile"])
    finally:
        engine.close()
    return {"latencies": latencies, "cpu_latencies": cpu_latencies, "zero_hits": zero, "suggested": suggested,
            "errors": error_count, "error_samples": errors}


_JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build-fts5": partial(_build_baseline, "fts5"), "build-whoosh": partial(_build_baseline, "whoosh"),
    "build-kb": _build_kb, "update-kb": _update_kb,
    "query": _query,
}


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a measurement subprocess: one JSON job in argv, one JSON line out."""
    job = json.loads((argv or sys.argv)[-1])
    result = _JOBS[job["job"]](job)
    result["peak_rss_mb"] = _peak_rss_mb()
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


_WORKER_CODE = "from kb.bench.perf import worker_main; worker_main()"


def _worker_args(job: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", _WORKER_CODE, json.dumps(job)]


def run_worker(job: dict[str, Any], timeout: float = 7200.0) -> dict[str, Any]:
    """Run one job in a fresh interpreter so its peak RSS is its own; a failure becomes a clear KBError."""
    try:
        proc = subprocess.run(_worker_args(job), capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        raise KBError(f"Benchmark step {job['job']} took longer than {timeout:.0f} s.",
                      "Use a smaller --articles size.") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-6:]
        raise KBError(f"Benchmark step {job['job']} ({job.get('engine', '')}) failed: " + " | ".join(tail),
                      "Fix the failing module (see the error) and run kb bench again.")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- orchestration

def _echo(message: str) -> None:
    click.echo(message, err=True)


def _latency_stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99), "mean_ms": sum(values) / len(values) if values else 0.0}


def _summarise_queries(raw: dict[str, Any]) -> dict[str, Any]:
    types = {t: _latency_stats(v) | {"zero_hits": raw["zero_hits"].get(t, 0), "suggested": raw["suggested"].get(t, 0),
                                     "cpu_p95_ms": percentile(raw["cpu_latencies"].get(t, []), 95)}
             for t, v in raw["latencies"].items()}
    worst = max((s["p95_ms"] for s in types.values()), default=0.0)
    return {"types": types, "worst_p95_ms": worst, "errors": raw["errors"], "error_samples": raw["error_samples"],
            "peak_rss_mb": raw["peak_rss_mb"]}


def populate_store(store_path: Path, pool: corpus_mod.SentencePool, count: int, seed: int) -> dict[str, Any]:
    """Write the corpus into a fresh store in batches of 1,000 (one transaction each)."""
    from kb.store import open_store

    start = time.perf_counter()
    text_bytes = 0
    with open_store(store_path) as store:
        batch: list[Article] = []
        for article in corpus_mod.iter_corpus(pool, count, seed):
            batch.append(article)
            if len(batch) == 1000:
                text_bytes += _save_batch(store, batch)
                batch = []
        if batch:
            text_bytes += _save_batch(store, batch)
    return {"articles": count, "seconds": time.perf_counter() - start, "text_bytes": text_bytes,
            "store_bytes": dir_size(store_path)}


def _save_batch(store: Any, batch: list[Article]) -> int:
    with store.transaction():
        for article in batch:
            store.save_article(article, source=article.site)
    return sum(len(a.title.encode()) + len(a.text.encode()) for a in batch)


def change_articles(store_path: Path, pool: corpus_mod.SentencePool, count: int, changed: int, seed: int,
                    variant: int = 1) -> int:
    """Edit `changed` articles in place (same URL, new text), as a re-crawl would; returns how many."""
    from kb.store import open_store

    changed = max(1, min(count, changed))
    numbers = random.Random(f"kb-bench-update:{seed}:{count}:{variant}").sample(range(count), changed)
    with open_store(store_path) as store:
        with store.transaction():
            for number in numbers:
                store.save_article(corpus_mod.make_article(pool, number, seed, variant=variant))
    return changed


def measure_update(store_path: Path, index_root: Path, pool: corpus_mod.SentencePool, count: int, changed: int,
                   seed: int, variant: int) -> dict[str, Any]:
    """Change articles in the store, then time kb.index.update in a fresh process."""
    start = time.perf_counter()
    changed = change_articles(store_path, pool, count, changed, seed, variant)
    store_seconds = time.perf_counter() - start
    upd = run_worker({"job": "update-kb", "store": str(store_path), "path": str(index_root)})
    upd.update(changed=changed, store_seconds=store_seconds)
    return upd


def _http_phase(server: Server, endpoint: str, clients: int, paths: list[str], config: BenchConfig,
                *, seconds: float | None = None, max_requests: int | None = None) -> LoadResult:
    return run_load("127.0.0.1", server.port, paths, clients=clients,
                    max_requests=max_requests or config.http_requests, seconds=seconds or config.http_seconds,
                    endpoint=endpoint, expect_json=endpoint == "/api/search")


class _Reindexer:
    """A full rebuild in another process, restarted while load phases still need one running."""

    def __init__(self, job: dict[str, Any], log_path: Path) -> None:
        self.job = job
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.completed = 0
        self.failures: list[str] = []
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()

    def ensure_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._reap()
        if self.proc is None:
            self.proc = subprocess.Popen(_worker_args(self.job), stdout=subprocess.DEVNULL, stderr=self._log,
                                         env=child_env())

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


def run_http(data_dir: Path, index_root: Path, store_path: Path, queries: list[dict[str, Any]],
             config: BenchConfig, work: Path) -> dict[str, Any]:
    """Idle phases, then the same phases while full rebuilds run, then a watch across the swap."""
    out: dict[str, Any] = {"idle": [], "reindex": [], "server": "kb serve", "threads": config.server_threads,
                           "workers": config.server_workers}
    paths = {ep: [search_path(ep, q) for q in queries] for ep in ("/api/search", "/search")}
    order = [("/api/search", c) for c in config.http_clients] + [("/search", c) for c in config.http_clients]
    with Server(data_dir, workers=config.server_workers, threads=config.server_threads,
                log_path=work / "serve.log").start() as server:
        out["server"] = server.command
        out["server_processes"] = 1 + len(server.worker_pids())
        # Warm up at the highest concurrency so every pooled searcher is open before the idle phases:
        # they measure the steady state; opening searchers after a swap is measured under reindex.
        most = max(config.http_clients)
        warm = _http_phase(server, "/api/search", most, paths["/api/search"], config, seconds=3.0,
                           max_requests=4 * most)
        out["warmup_errors"] = warm.errors
        for endpoint, clients in order:
            result = _http_phase(server, endpoint, clients, paths[endpoint], config)
            out["idle"].append(result.to_dict())
            _echo(f"  http idle    {endpoint:<12} {clients:>2} clients: {result.rps:7.1f} req/s "
                  f"p95 {result.p95_ms:7.1f} ms errors {result.errors}")
        out["server_memory_idle"] = server.memory()
        job = {"job": "build-kb", "store": str(store_path), "path": str(index_root)}
        reindexer = _Reindexer(job, work / "reindex.log")
        try:
            # The headline figure (/api/search, 8 clients) first, while the rebuild surely runs.
            reorder = sorted(order, key=lambda p: (p != ("/api/search", HEADLINE_CLIENTS), order.index(p)))
            for endpoint, clients in reorder:
                reindexer.ensure_running()
                result = _http_phase(server, endpoint, clients, paths[endpoint], config)
                result.rebuild_running_at_end = reindexer.running
                out["reindex"].append(result.to_dict())
                _echo(f"  http reindex {endpoint:<12} {clients:>2} clients: {result.rps:7.1f} req/s "
                      f"p95 {result.p95_ms:7.1f} ms errors {result.errors}")
            # Keep light traffic going until the rebuild swaps generations, to catch errors at the swap.
            watch_requests = 0
            watch_errors = 0
            deadline = time.monotonic() + config.reindex_timeout
            samples: list[str] = []
            while reindexer.running and time.monotonic() < deadline:
                r = _http_phase(server, "/api/search", 1, paths["/api/search"], config, seconds=1.0,
                                max_requests=200)
                watch_requests += r.requests
                watch_errors += r.errors
                samples += r.error_samples[: max(0, 5 - len(samples))]
            finished = reindexer.wait(max(1.0, deadline - time.monotonic()))
            after = _http_phase(server, "/api/search", 2, paths["/api/search"], config, seconds=1.0,
                                max_requests=60)
            out["swap_watch"] = {"requests": watch_requests + after.requests, "errors": watch_errors + after.errors,
                                 "error_samples": samples + after.error_samples, "rebuild_finished": finished,
                                 "rebuilds_completed": reindexer.completed, "rebuild_failures": reindexer.failures}
        finally:
            reindexer.close()
        out["server_memory"] = server.memory()
    return out


def _reusable(saved: dict[str, Any], engine: str, index_root: Path) -> bool:
    """Whether a --reuse run may query `engine`'s earlier build instead of building again."""
    build = saved.get("build", {}).get(engine)
    if not build:
        return False
    if engine != "kb":
        return True
    from kb.schema import SCHEMA_VERSION, read_meta
    from kb.search.check import current_generation

    generation = current_generation(index_root)
    return (generation is not None and build.get("schema") == SCHEMA_VERSION
            and read_meta(generation).get("schema") == SCHEMA_VERSION)


def run_size(count: int, config: BenchConfig, pool: corpus_mod.SentencePool, work: Path) -> dict[str, Any]:
    """All measurements for one corpus size."""
    from kb.config import data_paths

    size_dir = work / f"n{count}"
    manifest = size_dir / "bench-build.json"
    saved: dict[str, Any] = {}
    if config.reuse and manifest.exists():
        saved = json.loads(manifest.read_text("utf-8"))
        if saved.get("seed") != config.seed or saved.get("corpus_version") != corpus_mod.CORPUS_VERSION:
            saved = {}
    data_dir = size_dir / "data"
    paths = data_paths(data_dir)
    res: dict[str, Any] = {"articles": count}

    if saved:
        _echo(f"[{count}] reusing the corpus and builds in {size_dir}")
        res["corpus"] = saved["corpus"]
    else:
        shutil.rmtree(size_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        _echo(f"[{count}] generating corpus ...")
        res["corpus"] = populate_store(paths["store"], pool, count, config.seed)
        saved = {"seed": config.seed, "corpus_version": corpus_mod.CORPUS_VERSION, "corpus": res["corpus"],
                 "build": {}}
        manifest.write_text(json.dumps(saved), "utf-8")
    queries = corpus_mod.make_queries(pool, config.queries_per_type, config.seed)
    queries_file = size_dir / "queries.json"
    queries_file.write_text(json.dumps(queries), "utf-8")
    res["queries"] = {"per_type": config.queries_per_type, "types": list(corpus_mod.QUERY_TYPES)}
    _echo(f"[{count}] corpus: {res['corpus']['text_bytes'] / 1e6:.1f} MB text in {res['corpus']['seconds']:.1f} s")

    builds = {
        "fts5": {"job": "build-fts5", "store": str(paths["store"]), "path": str(size_dir / "fts5.sqlite3")},
        "whoosh": {"job": "build-whoosh", "store": str(paths["store"]), "path": str(size_dir / "whoosh-plain")},
        "kb": {"job": "build-kb", "store": str(paths["store"]), "path": str(paths["index"])},
    }
    res["build"] = {}
    res["query"] = {}
    for engine, job in builds.items():
        if engine == "whoosh" and "whoosh" in config.skip and "query_whoosh" in saved:
            res["build"][engine] = saved["build"][engine]
            res["query"][engine] = saved["query_whoosh"]
            continue
        if _reusable(saved, engine, paths["index"]):
            b = saved["build"][engine]
            _echo(f"[{count}] {engine}: reusing the build; querying ...")
        else:
            _echo(f"[{count}] {engine}: building ...")
            b = run_worker(job)
            b["rate"] = b["docs"] / b["seconds"] if b["seconds"] else 0.0
            if engine == "kb":
                from kb.schema import SCHEMA_VERSION

                b["schema"] = SCHEMA_VERSION
            saved["build"][engine] = b
            manifest.write_text(json.dumps(saved), "utf-8")
        res["build"][engine] = b
        _echo(f"[{count}] {engine}: {b['docs']} docs in {b['seconds']:.1f} s = {b['rate']:.0f}/s, "
              f"peak {b['peak_rss_mb']:.0f} MB, {b['size_bytes'] / 1e6:.1f} MB on disk; querying ...")
        qjob = {"job": "query", "engine": engine, "path": job["path"], "queries": str(queries_file)}
        res["query"][engine] = _summarise_queries(run_worker(qjob))
        if engine == "whoosh":
            saved["query_whoosh"] = res["query"][engine]
            manifest.write_text(json.dumps(saved), "utf-8")
        _echo(f"[{count}] {engine}: worst query p95 {res['query'][engine]['worst_p95_ms']:.1f} ms, "
              f"errors {res['query'][engine]['errors']}")
        if engine == "kb" and config.profile_dir:
            config.profile_dir.mkdir(parents=True, exist_ok=True)
            prof = config.profile_dir / f"kb-query-{count}.prof"
            run_worker(qjob | {"profile": str(prof)})
            res["profile"] = {"path": str(prof), "top": profile_summary(prof)}

    changed = max(1, round(count * config.update_share))
    if "update" in config.skip and "update" in saved:
        _echo(f"[{count}] update skipped: reporting the figures of the earlier run")
        res["update"], res["update_1000"] = saved["update"], saved["update_1000"]
    else:
        # Each run edits different articles (a new variant): re-applying an earlier edit changes nothing.
        variant = int(saved.get("next_variant", 1))
        _run_updates(res, count, changed, config, pool, paths, variant)
        saved.update(update=res["update"], update_1000=res["update_1000"], next_variant=variant + 2)
        manifest.write_text(json.dumps(saved), "utf-8")

    if "http" in config.skip:
        _echo(f"[{count}] HTTP phases skipped")
        res["http"] = _skipped_http()
    else:
        _echo(f"[{count}] HTTP against kb serve ...")
        res["http"] = run_http(data_dir, paths["index"], paths["store"], queries, config, size_dir)
    res["summary"] = summarise(res)
    return res


def _skipped_http() -> dict[str, Any]:
    """The shape of run_http's result with nothing measured (`--skip http`); checks leave it out."""
    memory = {"rss_mb": 0.0, "anon_mb": 0.0, "file_mb": 0.0, "peak_rss_mb": 0.0, "pss_mb": 0.0, "processes": 0,
              "sum_rss_mb": 0.0, "sum_pss_mb": 0.0, "per_process": {}}
    return {"skipped": True, "idle": [], "reindex": [], "warmup_errors": 0, "server_memory": memory,
            "server_memory_idle": memory,
            "swap_watch": {"requests": 0, "errors": 0, "error_samples": [], "rebuild_finished": False,
                           "rebuilds_completed": 0, "rebuild_failures": []}}


def _run_updates(res: dict[str, Any], count: int, changed: int, config: BenchConfig, pool: corpus_mod.SentencePool,
                 paths: dict[str, Path], variant: int = 1) -> None:
    _echo(f"[{count}] incremental update of {changed} changed articles ({config.update_share:.0%}) ...")
    upd = measure_update(paths["store"], paths["index"], pool, count, changed, config.seed, variant=variant)
    _echo(f"[{count}] update: indexed {upd['indexed']} in {upd['seconds']:.2f} s")
    if changed == 1000:
        upd1000 = dict(upd, estimated=False)
    elif count >= 5000:
        _echo(f"[{count}] incremental update of 1,000 changed articles ...")
        upd1000 = measure_update(paths["store"], paths["index"], pool, count, 1000, config.seed, variant=variant + 1)
        upd1000["estimated"] = False
        _echo(f"[{count}] update: indexed {upd1000['indexed']} in {upd1000['seconds']:.2f} s")
    else:  # too few articles to change 1,000 of them: scale linearly (pessimistic, fixed costs included)
        upd1000 = {"changed": 1000, "seconds": upd["seconds"] * 1000.0 / upd["changed"], "estimated": True,
                   "from_changed": upd["changed"]}
    res["update"] = upd
    res["update_1000"] = upd1000


def profile_summary(path: Path, limit: int = 25) -> str:
    stream = StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return stream.getvalue()


def _headline(http: dict[str, Any], phase: str) -> dict[str, Any]:
    for row in http[phase]:
        if row["endpoint"] == "/api/search" and row["clients"] == HEADLINE_CLIENTS:
            return row
    rows = [r for r in http[phase] if r["endpoint"] == "/api/search"]
    return rows[len(rows) // 2] if rows else {"rps": 0.0, "p95_ms": 0.0}


def total_errors(res: dict[str, Any]) -> int:
    http = res["http"]
    errors = sum(q["errors"] for q in res["query"].values())
    errors += sum(r["errors"] for r in http["idle"] + http["reindex"]) + http.get("warmup_errors", 0)
    errors += http["swap_watch"]["errors"] + len(http["swap_watch"]["rebuild_failures"])
    return errors


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    kb_build, fts_build = res["build"]["kb"], res["build"]["fts5"]
    idle, busy = _headline(res["http"], "idle"), _headline(res["http"], "reindex")
    return {
        "articles": res["articles"],
        "index_rate": kb_build["rate"],
        "fts5_index_rate": fts_build["rate"],
        "query_p95": res["query"]["kb"]["worst_p95_ms"],
        "fts5_query_p95": res["query"]["fts5"]["worst_p95_ms"],
        "http_rps": idle["rps"],
        "http_p95": idle["p95_ms"],
        "http_p95_reindex": busy["p95_ms"],
        "errors": total_errors(res),
    }


def bench_line(summary: dict[str, Any]) -> str:
    """The machine-readable last line (format fixed by the issue)."""
    s = summary
    return (f"bench: articles={s['articles']} index_rate={s['index_rate']:.0f}/s "
            f"fts5_index_rate={s['fts5_index_rate']:.0f}/s query_p95={s['query_p95']:.1f}ms "
            f"fts5_query_p95={s['fts5_query_p95']:.1f}ms http_rps={s['http_rps']:.0f} "
            f"http_p95={s['http_p95']:.0f}ms http_p95_reindex={s['http_p95_reindex']:.0f}ms errors={s['errors']}")


# --------------------------------------------------------------------------- report

def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def checks(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/MISS."""
    kb_q, fts_q = res["query"]["kb"]["types"], res["query"]["fts5"]["types"]
    idle, busy = _headline(res["http"], "idle"), _headline(res["http"], "reindex")
    upd = res["update_1000"]
    index_ratio = res["build"]["kb"]["size_bytes"] / max(1, res["corpus"]["text_bytes"])
    out = [
        {"name": "index build rate", "value": f"{res['build']['kb']['rate']:.0f}/s",
         "target": f">= {TARGETS['index_rate']:.0f}/s", "ok": res["build"]["kb"]["rate"] >= TARGETS["index_rate"]},
        {"name": "update of 1,000 changed" + (f" (est. from {upd['from_changed']})" if upd["estimated"] else ""),
         "value": f"{upd['seconds']:.1f} s", "target": f"<= {TARGETS['update_1000_s']:.0f} s",
         "ok": upd["seconds"] <= TARGETS["update_1000_s"]},
    ]
    for qtype in corpus_mod.QUERY_TYPES:
        if qtype not in kb_q:
            continue
        p95, fts = kb_q[qtype]["p95_ms"], fts_q.get(qtype, {})
        base = fts.get("p95_ms", 0.0)
        # Where FTS5 finds nothing (lay terms without expansion, typos without suggestions) it does no
        # comparable work, so only the absolute bound applies; the ratio is still shown.
        comparable = bool(base) and fts.get("zero_hits", 0) * 2 < max(1, fts.get("n", 0))
        ok = p95 <= TARGETS["query_p95_ms"] and (not comparable or p95 <= TARGETS["query_vs_fts5"] * base)
        goal = f"<= {TARGETS['query_p95_ms']:.0f} ms" + (
            f" and <= {TARGETS['query_vs_fts5']:.0f}x fts5" if comparable else " (fts5 finds nothing)")
        out.append({"name": f"query p95 {qtype}", "value": f"{p95:.1f} ms ({_ratio(p95, base)} fts5)",
                    "target": goal, "ok": ok})
    server_mb = res["http"]["server_memory"]["peak_rss_mb"]
    errors = total_errors(res)
    out += [
        {"name": "/api/search 8 clients rps", "value": f"{idle['rps']:.0f}",
         "target": f">= {TARGETS['http_rps']:.0f}", "ok": idle["rps"] >= TARGETS["http_rps"]},
        {"name": "/api/search 8 clients p95", "value": f"{idle['p95_ms']:.0f} ms",
         "target": f"<= {TARGETS['http_p95_ms']:.0f} ms", "ok": idle["p95_ms"] <= TARGETS["http_p95_ms"]},
        {"name": "  ... during reindex p95", "value": f"{busy['p95_ms']:.0f} ms",
         "target": f"<= {TARGETS['http_p95_reindex_ms']:.0f} ms",
         "ok": busy["p95_ms"] <= TARGETS["http_p95_reindex_ms"]},
        {"name": "serving worker peak RSS", "value": f"{server_mb:.0f} MB",
         "target": f"<= {TARGETS['server_rss_mb']:.0f} MB", "ok": server_mb <= TARGETS["server_rss_mb"]},
        {"name": "index size / stored text", "value": f"{index_ratio:.2f}x",
         "target": f"<= {TARGETS['index_size_ratio']}x", "ok": index_ratio <= TARGETS["index_size_ratio"]},
        {"name": "errors", "value": str(errors), "target": "0", "ok": errors == 0},
    ]
    if res["http"].get("skipped"):  # --skip http: no HTTP figure was measured, so none is judged
        out = [c for c in out if not c["name"].startswith(("/api/search", "  ... during", "serving worker"))]
    return out


def format_report(res: dict[str, Any]) -> str:
    """The human table: kb next to FTS5 and plain Whoosh with ratios, then targets with PASS/MISS."""
    b, q = res["build"], res["query"]
    lines = [f"== kb bench: {res['articles']} articles, {res['corpus']['text_bytes'] / 1e6:.1f} MB stored text ==",
             f"{'measure':<32}{'kb':>12}{'fts5':>12}{'kb/fts5':>9}{'whoosh':>12}{'kb/whoosh':>10}"]

    def row(name: str, k: float, f: float | None, w: float | None, fmt: str = "{:.0f}") -> None:
        fs = fmt.format(f) if f is not None else "-"
        ws = fmt.format(w) if w is not None else "-"
        lines.append(f"{name:<32}{fmt.format(k):>12}{fs:>12}{_ratio(k, f or 0):>9}{ws:>12}{_ratio(k, w or 0):>10}")

    row("build rate (articles/s)", b["kb"]["rate"], b["fts5"]["rate"], b["whoosh"]["rate"])
    row("build time (s)", b["kb"]["seconds"], b["fts5"]["seconds"], b["whoosh"]["seconds"], "{:.1f}")
    per_cpu = {e: b[e]["docs"] / max(b[e]["cpu_seconds"], 1e-9) for e in ("kb", "fts5", "whoosh")}
    row("build rate per CPU-second", per_cpu["kb"], per_cpu["fts5"], per_cpu["whoosh"])
    row("build peak RSS (MB)", b["kb"]["peak_rss_mb"], b["fts5"]["peak_rss_mb"], b["whoosh"]["peak_rss_mb"])
    row("index size (MB)", b["kb"]["size_bytes"] / 1e6, b["fts5"]["size_bytes"] / 1e6,
        b["whoosh"]["size_bytes"] / 1e6, "{:.1f}")
    text = max(1, res["corpus"]["text_bytes"])
    row("index size / stored text", b["kb"]["size_bytes"] / text, b["fts5"]["size_bytes"] / text,
        b["whoosh"]["size_bytes"] / text, "{:.2f}")
    updates = [res["update"]]
    if not res["update_1000"]["estimated"] and res["update_1000"]["changed"] != res["update"]["changed"]:
        updates.append(res["update_1000"])
    for upd in updates:
        lines.append(f"{'update ' + str(upd['changed']) + ' changed (s)':<32}{upd['seconds']:>12.2f}"
                     f"{'':>12}{'':>9}{'':>12}{'':>10}  (store write {upd['store_seconds']:.2f} s, "
                     f"{upd['changed'] / upd['seconds']:.0f} articles/s)")
    for qtype in corpus_mod.QUERY_TYPES:
        if qtype not in q["kb"]["types"]:
            continue
        for pct in ("p50", "p95", "p99", "cpu_p95"):
            key = f"{pct}_ms"
            row(f"query {qtype} {pct} (ms)", q["kb"]["types"][qtype][key],
                q["fts5"]["types"].get(qtype, {}).get(key), q["whoosh"]["types"].get(qtype, {}).get(key), "{:.1f}")
        kt, n = q["kb"]["types"][qtype], q["kb"]["types"][qtype]["n"]
        fz = q["fts5"]["types"].get(qtype, {}).get("zero_hits", "-")
        wz = q["whoosh"]["types"].get(qtype, {}).get("zero_hits", "-")
        extra = f"    zero hits {kt['zero_hits']}/{n} (fts5 {fz}, whoosh {wz})"
        if qtype == "misspelled":
            extra += f"; kb suggested a correction for {kt['suggested']}/{n}"
        lines.append(extra)
    row("query worker peak RSS (MB)", q["kb"]["peak_rss_mb"], q["fts5"]["peak_rss_mb"], q["whoosh"]["peak_rss_mb"])
    http = res["http"]
    idle_by = {(r["endpoint"], r["clients"]): r for r in http["idle"]}
    lines.append(f"{'HTTP (kb serve)':<32}{'req/s':>12}{'p50 ms':>12}{'p95 ms':>9}{'p99 ms':>12}{'errors':>10}"
                 f"{'p95 vs idle':>13}{'client CPU':>12}")
    for phase in ("idle", "reindex"):
        for r in http[phase]:
            base = idle_by.get((r["endpoint"], r["clients"]), r)
            lines.append(f"{phase + ' ' + r['endpoint'] + ' x' + str(r['clients']):<32}{r['rps']:>12.1f}"
                         f"{r['p50_ms']:>12.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>12.1f}{r['errors']:>10}"
                         f"{_ratio(r['p95_ms'], base['p95_ms']):>13}{r['client_cpu']:>12.2f}")
    sw = http["swap_watch"]
    lines.append(f"swap watch: {sw['requests']} requests, {sw['errors']} errors, rebuilds completed "
                 f"{sw['rebuilds_completed']}, finished={sw['rebuild_finished']}")
    mem = http["server_memory"]
    idle_mem = http["server_memory_idle"]
    processes = mem.get("processes", 1)
    lines.append(f"server: {http.get('server', 'kb serve')}: " + (
        f"{processes - 1} worker processes and their master" if processes > 1 else "one process"))
    lines.append(f"largest server process RSS after idle phases {idle_mem['rss_mb']:.0f} MB (anonymous "
                 f"{idle_mem['anon_mb']:.0f}, mapped files {idle_mem['file_mb']:.0f}); at the end {mem['rss_mb']:.0f} MB, "
                 f"peak {mem['peak_rss_mb']:.0f} MB; all processes: RSS sum {mem.get('sum_rss_mb', 0):.0f} MB, "
                 f"PSS sum {mem.get('sum_pss_mb', 0):.0f} MB")
    lines.append("")
    lines.append(f"{'target':<40}{'measured':>24}  {'goal':<34}result")
    for c in checks(res):
        lines.append(f"{c['name']:<40}{c['value']:>24}  {c['target']:<34}{_verdict(c['ok'])}")
    samples = [s for qq in q.values() for s in qq["error_samples"]]
    samples += [s for r in http["idle"] + http["reindex"] for s in r["error_samples"]] + sw["error_samples"]
    if samples:
        lines.append("error samples:")
        lines += [f"  {s}" for s in samples[:10]]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Where the figures were measured: machine, engine versions, corpus version, load."""
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            **baselines.versions(), "corpus_version": corpus_mod.CORPUS_VERSION, "load_average": os.getloadavg()}


def busy_warning(before: tuple[float, ...]) -> str:
    """Other processes on the machine skew every figure: say so next to them.

    Only the load before the run counts: during it, the benchmark's own server, clients and
    rebuilds raise the load average themselves.
    """
    cpus = os.cpu_count() or 1
    if before[0] <= cpus * 0.5:
        return ""
    return (f"WARNING: the machine was busy before the run (load average {before[0]:.1f} on {cpus} CPUs): "
            "absolute figures are pessimistic; the CPU-time rows and the ratios to the baselines hold better.")


def run_bench(config: BenchConfig, echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    """Run every size in `config`, echoing each size's table; returns everything measured (JSON-ready).

    `results["lines"]` holds one contract line per size, largest last; the caller prints them last.
    """
    eval_dir = corpus_mod.resolve_eval_dir(config.eval_dir)
    pool = corpus_mod.load_pool(eval_dir)
    if config.work_dir:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    if config.reuse:  # a fixed place, kept, so the next --reuse run finds this one's builds
        if config.work_dir is None:
            raise KBError("--reuse needs --work-dir.", "Pass the --work-dir of an earlier run (or a new one).")
        work, config.keep = config.work_dir, True
    else:
        work = Path(tempfile.mkdtemp(prefix="kb-bench-", dir=config.work_dir))
    results: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
                               "environment": environment(), "eval_dir": str(eval_dir), "targets": TARGETS,
                               "work_dir": str(work), "sizes": []}
    started = time.perf_counter()
    try:
        for count in sorted(config.sizes):
            load_before = os.getloadavg()
            res = run_size(count, config, pool, work)
            res["checks"] = checks(res)
            res["load_average"] = {"before": load_before, "after": os.getloadavg()}
            results["sizes"].append(res)
            echo(format_report(res))
            warning = busy_warning(load_before)
            if warning:
                echo(warning)
    finally:
        if not config.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    results["lines"] = [bench_line(res["summary"]) for res in results["sizes"]]
    return results


# --------------------------------------------------------------------------- CLI

@click.group("bench", invoke_without_command=True)
@click.option("--quick", is_flag=True, help=f"One {QUICK_SIZE:,}-article run with short phases (under 5 minutes).")
@click.option("--articles", type=click.IntRange(50, 1_000_000),
              help="Benchmark one corpus size instead of 1k/10k/100k.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("kb-bench.json"),
              show_default=True, help="Write every measurement here as JSON.")
@click.option("--eval-dir", type=click.Path(file_okay=False, path_type=Path), envvar="KB_EVAL_DIR",
              help="Shared eval data (default ../shared/eval from the repository root; env KB_EVAL_DIR).")
@click.option("--seed", default=0, show_default=True, type=int, help="Corpus and query seed.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to build the corpus and indexes (default: a temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the work directory (stores, indexes, logs) for inspection.")
@click.option("--queries", "queries_per_type", type=click.IntRange(1, 10_000), help="Timed queries per query type.")
@click.option("--http-seconds", type=click.FloatRange(0.1, 600), help="Duration bound of each HTTP load phase.")
@click.option("--http-requests", type=click.IntRange(1, 1_000_000), help="Request bound of each HTTP load phase.")
@click.option("--workers", "server_workers", type=click.IntRange(1, 64),
              help="Worker processes of the kb serve under load (default: the WORKERS setting, one per CPU).")
@click.option("--threads", "server_threads", type=click.IntRange(1, 64),
              help="Threads per kb serve worker (default: kb serve's own).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also profile kb's query run with cProfile and save the stats here.")
@click.option("--reuse", is_flag=True,
              help="Keep the corpus and builds in --work-dir and reuse them on the next --reuse run "
                   "(kb's index is rebuilt when its schema version changed).")
@click.option("--skip", type=click.Choice(["http", "update", "whoosh"]), multiple=True,
              help="Leave a phase out while iterating (repeatable); with --reuse, skipped update and "
                   "plain-Whoosh figures are those of the earlier run.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, articles: int | None, json_path: Path, eval_dir: Path | None, seed: int,
          work_dir: Path | None, keep: bool, queries_per_type: int | None, http_seconds: float | None,
          http_requests: int | None, profile_dir: Path | None, reuse: bool = False,
          skip: tuple[str, ...] = (), server_workers: int | None = None, server_threads: int | None = None) -> None:
    """Measure index build, query latency and HTTP serving against SQLite FTS5 and plain Whoosh.

    Loads only 127.0.0.1, bounded in requests and time. The last line is machine-readable.
    """
    if ctx.invoked_subcommand is not None:
        return
    if os.environ.get("KB_DATABASE_URL"):
        _echo("note: kb bench measures the embedded backend (SQLite + Whoosh) in a scratch directory; "
              "DATABASE_URL is not used (a PostgreSQL benchmark is not built yet: `kb eval` does evaluate it)")
    overrides = dict(queries_per_type=queries_per_type, http_seconds=http_seconds, http_requests=http_requests,
                     server_workers=server_workers, server_threads=server_threads)
    common = dict(seed=seed, eval_dir=eval_dir, work_dir=work_dir, keep=keep, profile_dir=profile_dir,
                  reuse=reuse, skip=tuple(skip))
    if quick:
        config = BenchConfig.quick_defaults(**overrides, **common)
    else:
        config = BenchConfig(**{k: v for k, v in overrides.items() if v is not None}, **common)
    if articles:
        config.sizes = (articles,)
    try:
        results = run_bench(config)
    except KBError as exc:
        raise click.ClickException(str(exc)) from None
    json_path.write_text(json.dumps(results, indent=2, default=str), "utf-8")
    _echo(f"results written to {json_path}")
    for line in results["lines"]:
        click.echo(line)


bench_command = bench
