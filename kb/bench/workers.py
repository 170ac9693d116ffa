"""The measurement jobs of `kb bench`, each run in a fresh interpreter, and the store edits they time.

Builds, query runs and incremental updates of every engine (kb on the embedded backend, kb on PostgreSQL,
SQLite FTS5, plain Whoosh) run in subprocesses so each reports its own peak RSS and nothing warms up
another's caches: `run_worker` sends one JSON job, `worker_main` answers with one JSON line.
kb.bench.perf (the embedded run and the report) and kb.bench.postgres (the PostgreSQL engine) share them.
"""

from __future__ import annotations

import cProfile
import json
import os
import random
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from kb.bench import baselines
from kb.bench import corpus as corpus_mod
from kb.bench.load import child_env, percentile
from kb.errors import KBError
from kb.models import Article

#: FTS5 ranks title hits this much above body hits, as kb ranks title matches first (see Fts5Baseline).
FTS5_TITLE_WEIGHT = 10.0


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


def _build_kb_pg(job: dict[str, Any]) -> dict[str, Any]:
    """kb.index.rebuild on a PostgresStore: the search generation in that database (kb.search.pg_build)."""
    from kb import index as kb_index
    from kb.store import open_store
    from kb.store.postgres_search import generation_facts

    cpu = _cpu_seconds()
    start = time.perf_counter()
    with open_store(job["store"]) as store:
        count = kb_index.rebuild(store, Path(job["path"]))
        cpu = _cpu_seconds() - cpu
        seconds = time.perf_counter() - start
        database_bytes = store.database_size()
    facts = generation_facts(job["store"]) or {}
    return {"docs": count, "seconds": seconds, "cpu_seconds": cpu, "size_bytes": facts.get("size_bytes", 0),
            "generation": facts.get("generation"), "database_bytes": database_bytes}


def _update_kb_pg(job: dict[str, Any]) -> dict[str, Any]:
    """kb.index.update on a PostgresStore, whatever it does there (a whole rebuild until it is incremental)."""
    from kb import index as kb_index
    from kb.store import open_store
    from kb.store.postgres_search import generation_facts

    cpu = _cpu_seconds()
    start = time.perf_counter()
    with open_store(job["store"]) as store:
        indexed, deleted = kb_index.update(store, Path(job["path"]))
    cpu = _cpu_seconds() - cpu
    seconds = time.perf_counter() - start
    facts = generation_facts(job["store"]) or {}
    return {"indexed": indexed, "deleted": deleted, "seconds": seconds, "cpu_seconds": cpu,
            "size_bytes": facts.get("size_bytes", 0)}


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
    """kb's SearchService: the Whoosh searcher over an index directory, or PgSearcher on a database URL (the
    primary alone: what a node without replicas runs)."""

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher

    def search(self, item: dict[str, Any]) -> tuple[int, bool]:
        results = self.searcher.search(item["q"], page=item.get("page", 1), per_page=10,
                                       filters=item.get("filters"))
        return results.total, bool(results.suggestions)

    def close(self) -> None:
        self.searcher.close()


def _whoosh_engine(path: str) -> _Engine:
    from kb.search import Searcher

    return _KbEngine(Searcher(Path(path)))


def _pg_engine(url: str) -> _Engine:
    from kb.search.pg import PgSearcher

    return _KbEngine(PgSearcher(url))


_ENGINES: dict[str, Callable[[str], _Engine]] = {
    "kb": _whoosh_engine,
    "kb-pg": _pg_engine,
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
    "build-kb-pg": _build_kb_pg, "update-kb-pg": _update_kb_pg,
    "query": _query,
}


#: A job value naming this environment variable ("env:NAME") is that variable's value in the worker.
_FROM_ENV = "env:"


def job_env(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the job as argv carries it, environment): database URLs, passwords included, travel in the environment,
    not in the command line that `ps` shows every user of the machine."""
    public: dict[str, Any] = {}
    env: dict[str, str] = {}
    for key, value in job.items():
        if isinstance(value, str) and "://" in value:
            name = f"KB_BENCH_JOB_{key.upper()}"
            env[name], public[key] = value, _FROM_ENV + name
        else:
            public[key] = value
    return public, env


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a measurement subprocess: one JSON job in argv, one JSON line out."""
    job = json.loads((argv or sys.argv)[-1])
    job = {k: os.environ[v[len(_FROM_ENV):]] if isinstance(v, str) and v.startswith(_FROM_ENV) else v
           for k, v in job.items()}
    result = _JOBS[job["job"]](job)
    result["peak_rss_mb"] = _peak_rss_mb()
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


_WORKER_CODE = "from kb.bench.workers import worker_main; worker_main()"


def worker_args(job: dict[str, Any]) -> list[str]:
    """argv of a worker for a job without secrets (see job_env)."""
    return [sys.executable, "-c", _WORKER_CODE, json.dumps(job)]


def run_worker(job: dict[str, Any], timeout: float = 7200.0) -> dict[str, Any]:
    """Run one job in a fresh interpreter so its peak RSS is its own; a failure becomes a clear KBError."""
    public, env = job_env(job)
    try:
        proc = subprocess.run(worker_args(public), capture_output=True, text=True, timeout=timeout,
                              env=child_env(**env))
    except subprocess.TimeoutExpired:
        raise KBError(f"Benchmark step {job['job']} took longer than {timeout:.0f} s.",
                      "Use a smaller --articles size.") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-6:]
        raise KBError(f"Benchmark step {job['job']} ({job.get('engine', '')}) failed: " + " | ".join(tail),
                      "Fix the failing module (see the error) and run kb bench again.")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def latency_stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99), "mean_ms": sum(values) / len(values) if values else 0.0}


def summarise_queries(raw: dict[str, Any]) -> dict[str, Any]:
    """Per query type: p50/p95/p99 of wall time, p95 of CPU time, zero-hit and suggestion counts."""
    types = {t: latency_stats(v) | {"zero_hits": raw["zero_hits"].get(t, 0), "suggested": raw["suggested"].get(t, 0),
                                     "cpu_p95_ms": percentile(raw["cpu_latencies"].get(t, []), 95)}
             for t, v in raw["latencies"].items()}
    worst = max((s["p95_ms"] for s in types.values()), default=0.0)
    return {"types": types, "worst_p95_ms": worst, "errors": raw["errors"], "error_samples": raw["error_samples"],
            "peak_rss_mb": raw["peak_rss_mb"]}




def change_articles(store_path: Path | str, pool: corpus_mod.SentencePool, count: int, changed: int, seed: int,
                    variant: int = 1) -> int:
    """Edit `changed` articles in place (same URL, new text), as a re-crawl would; returns how many.

    `store_path` is any store location (a SQLite path or a PostgreSQL URL): the edits go through the Store API.
    """
    from kb.store import open_store

    changed = max(1, min(count, changed))
    numbers = random.Random(f"kb-bench-update:{seed}:{count}:{variant}").sample(range(count), changed)
    with open_store(store_path) as store:
        with store.transaction():
            for number in numbers:
                store.save_article(corpus_mod.make_article(pool, number, seed, variant=variant))
    return changed


def measure_update(store_path: Path | str, index_root: Path, pool: corpus_mod.SentencePool, count: int, changed: int,
                   seed: int, variant: int, job: str = "update-kb") -> dict[str, Any]:
    """Change articles in the store, then time kb.index.update (worker `job`) in a fresh process."""
    start = time.perf_counter()
    changed = change_articles(store_path, pool, count, changed, seed, variant)
    store_seconds = time.perf_counter() - start
    upd = run_worker({"job": job, "store": str(store_path), "path": str(index_root)})
    upd.update(changed=changed, store_seconds=store_seconds)
    return upd



def run_updates(store_path: Path | str, index_root: Path, pool: corpus_mod.SentencePool, count: int, changed: int,
                seed: int, variant: int, echo: Callable[[str], None], *, job: str = "update-kb",
                label: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The incremental update of `changed` articles, then of 1,000 (measured from 5,000 articles, else estimated)."""
    prefix = f"[{count}] {label}"
    echo(f"{prefix}incremental update of {changed} changed articles ({changed / count:.0%}) ...")
    upd = measure_update(store_path, index_root, pool, count, changed, seed, variant=variant, job=job)
    echo(f"{prefix}update: indexed {upd['indexed']} in {upd['seconds']:.2f} s")
    if changed == 1000:
        upd1000 = dict(upd, estimated=False)
    elif count >= 5000:
        echo(f"{prefix}incremental update of 1,000 changed articles ...")
        upd1000 = measure_update(store_path, index_root, pool, count, 1000, seed, variant=variant + 1, job=job)
        upd1000["estimated"] = False
        echo(f"{prefix}update: indexed {upd1000['indexed']} in {upd1000['seconds']:.2f} s")
    else:  # too few articles to change 1,000 of them: scale linearly (pessimistic, fixed costs included)
        upd1000 = {"changed": 1000, "seconds": upd["seconds"] * 1000.0 / upd["changed"], "estimated": True,
                   "from_changed": upd["changed"]}
    return upd, upd1000


def count_sections(store_path: Path | str) -> int:
    """Sections in the store: the issue states scale in sections (articles have 4 to 6)."""
    from kb.store import open_store

    with open_store(store_path) as store:
        return int(store.transfer_counts()["sections"])
