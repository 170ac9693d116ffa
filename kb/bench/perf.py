"""`kb bench`: index build, query latency and HTTP load on a realistic corpus, against baselines.

Every figure is measured in the same run on the same corpus for kb, SQLite FTS5 and
plain Whoosh (kb.bench.baselines, shared with `kb eval`), because absolute numbers mean
little across machines while ratios do. When the settings select PostgreSQL (DATABASE_URL),
kb on PostgreSQL joins the same run as a fourth engine, "kb-pg", in a scratch schema it drops
afterwards (kb.bench.postgres).
Builds and query runs happen in fresh subprocesses (kb.bench.workers) so each reports its own
peak RSS and nothing warms up another's caches. The last output line is a stable contract
(`bench: articles=... errors=0`, the embedded backend) that scripts and CI parse; with PostgreSQL a
`bench-postgresql: ...` line comes just before it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import pstats
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Callable

import click

from kb.bench import baselines
from kb.bench import corpus as corpus_mod
from kb.bench import postgres as pg_bench
from kb.bench.load import (
    HEADLINE_CLIENTS,
    LoadPlan,
    Reindexer,
    Server,
    headline,
    ratio,
    run_phases,
    search_path,
    verdict,
)
from kb.bench.workers import (
    baseline_query,
    count_sections,
    dir_size,
    iter_store,
    run_updates,
    run_worker,
    summarise_queries,
    worker_args,
    worker_main,
)
from kb.errors import KBError
from kb.models import Article

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZE = 10_000
#: Importable from here as before the measurement jobs moved to kb.bench.workers (scripts, running benches).
__all__ = ["HEADLINE_CLIENTS", "baseline_query", "bench", "bench_command", "bench_line", "dir_size", "iter_store",
           "run_bench", "worker_main"]

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
    "pg_query_vs_kb": 1.0,        # kb-pg p95 <= embedded kb p95, every type (issue #14)
    "pg_reindex_errors": 0,       # failed requests against two kb serve nodes during a PostgreSQL reindex
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
    #: Phases or engines left out: "http", "update", "whoosh", "kb" (the embedded kb engine: a PostgreSQL-only
    #: scale run), "postgresql" (the kb-pg engine when DATABASE_URL is set).
    skip: tuple[str, ...] = ()

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> "BenchConfig":
        base = dict(sizes=(QUICK_SIZE,), queries_per_type=30, http_seconds=4.0, http_requests=1_500,
                    reindex_timeout=60.0, quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# --------------------------------------------------------------------------- orchestration

def _echo(message: str) -> None:
    click.echo(message, err=True)


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


#: kb serve for the embedded backend must not follow a DATABASE_URL of the environment to PostgreSQL.
EMBEDDED_ENV = {"KB_DATABASE_URL": "", "KB_DATABASE_REPLICA_URLS": ""}


def load_plan(config: BenchConfig, order: list[tuple[str, int]]) -> LoadPlan:
    return LoadPlan(order=order, requests=config.http_requests, seconds=config.http_seconds,
                    reindex_timeout=config.reindex_timeout)


def run_http(data_dir: Path, index_root: Path, store_path: Path, queries: list[dict[str, Any]],
             config: BenchConfig, work: Path) -> dict[str, Any]:
    """Idle phases, then the same phases while full rebuilds run, then a watch across the swap (load.run_phases)."""
    out: dict[str, Any] = {"server": "kb serve", "threads": config.server_threads, "workers": config.server_workers}
    paths = {ep: [search_path(ep, q) for q in queries] for ep in ("/api/search", "/search")}
    order = [("/api/search", c) for c in config.http_clients] + [("/search", c) for c in config.http_clients]
    with Server(data_dir, workers=config.server_workers, threads=config.server_threads, env=EMBEDDED_ENV,
                log_path=work / "serve.log").start() as server:
        out["server"] = server.command
        out["server_processes"] = 1 + len(server.worker_pids())
        job = {"job": "build-kb", "store": str(store_path), "path": str(index_root)}
        reindexer = Reindexer(worker_args(job), work / "reindex.log")
        phases = run_phases([server], paths, load_plan(config, order), reindexer, _echo)
    memory_idle, memory = phases.pop("memory_idle"), phases.pop("memory")
    out.update(phases, server_memory_idle=memory_idle[0], server_memory=memory[0])
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


def run_size(count: int, config: BenchConfig, pool: corpus_mod.SentencePool, work: Path,
             database_url: str | None = None) -> dict[str, Any]:
    """All measurements for one corpus size; with `database_url` (DATABASE_URL) the kb-pg engine too."""
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

    if "sections" not in res["corpus"]:  # a manifest written before sections were counted
        res["corpus"]["sections"] = saved["corpus"]["sections"] = count_sections(paths["store"])
        manifest.write_text(json.dumps(saved), "utf-8")
    res["sections"] = res["corpus"]["sections"]

    builds = {
        "fts5": {"job": "build-fts5", "store": str(paths["store"]), "path": str(size_dir / "fts5.sqlite3")},
        "whoosh": {"job": "build-whoosh", "store": str(paths["store"]), "path": str(size_dir / "whoosh-plain")},
        "kb": {"job": "build-kb", "store": str(paths["store"]), "path": str(paths["index"])},
    }
    res["build"] = {}
    res["query"] = {}
    for engine, job in builds.items():
        if engine in ("whoosh", "kb") and engine in config.skip:
            if engine == "whoosh" and "query_whoosh" in saved:  # --reuse: the earlier run's figures
                res["build"][engine] = saved["build"][engine]
                res["query"][engine] = saved["query_whoosh"]
            continue
        _build_and_query(engine, job, count, config, saved, manifest, paths["index"], queries_file, res)

    embedded = "kb" in res["build"]
    variant = int(saved.get("next_variant", 1))
    changed = max(1, round(count * config.update_share))
    if not embedded:
        _echo(f"[{count}] the embedded kb engine is skipped: no update or HTTP figures for it")
    elif "update" in config.skip and "update" in saved:
        _echo(f"[{count}] update skipped: reporting the figures of the earlier run")
        res["update"], res["update_1000"] = saved["update"], saved["update_1000"]
    else:
        # Each run edits different articles (a new variant): re-applying an earlier edit changes nothing.
        res["update"], res["update_1000"] = run_updates(paths["store"], paths["index"], pool, count, changed,
                                                        config.seed, variant, _echo)
        variant += 2
        saved.update(update=res["update"], update_1000=res["update_1000"], next_variant=variant)
        manifest.write_text(json.dumps(saved), "utf-8")

    if embedded:
        if "http" in config.skip:
            _echo(f"[{count}] HTTP phases skipped")
            res["http"] = _skipped_http()
        else:
            _echo(f"[{count}] HTTP against kb serve ...")
            res["http"] = run_http(data_dir, paths["index"], paths["store"], queries, config, size_dir)
        res["summary"] = summarise(res)

    if database_url and "postgresql" not in config.skip:
        plan = pg_bench.PgPlan(skip=config.skip, workers=config.server_workers, threads=config.server_threads,
                               http=load_plan(config, [("/api/search", HEADLINE_CLIENTS)]), variant=variant,
                               update_share=config.update_share, seed=config.seed)
        res["postgresql"] = pg_bench.run(database_url, count, paths["store"], queries_file, queries, pool, plan,
                                         size_dir, res, _echo)
        saved["next_variant"] = variant + 2
        manifest.write_text(json.dumps(saved), "utf-8")
    return res


def _build_and_query(engine: str, job: dict[str, Any], count: int, config: BenchConfig, saved: dict[str, Any],
                     manifest: Path, index_root: Path, queries_file: Path, res: dict[str, Any]) -> None:
    """Build one embedded engine (or reuse an earlier build of it), then time the query file against it."""
    if _reusable(saved, engine, index_root):
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
    res["query"][engine] = summarise_queries(run_worker(qjob))
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


def _skipped_http() -> dict[str, Any]:
    """The shape of run_http's result with nothing measured (`--skip http`); checks leave it out."""
    memory = {"rss_mb": 0.0, "anon_mb": 0.0, "file_mb": 0.0, "peak_rss_mb": 0.0, "pss_mb": 0.0, "processes": 0,
              "sum_rss_mb": 0.0, "sum_pss_mb": 0.0, "per_process": {}}
    return {"skipped": True, "idle": [], "reindex": [], "warmup_errors": 0, "server_memory": memory,
            "server_memory_idle": memory,
            "swap_watch": {"requests": 0, "errors": 0, "error_samples": [], "rebuild_finished": False,
                           "rebuilds_completed": 0, "rebuild_failures": []}}


def profile_summary(path: Path, limit: int = 25) -> str:
    stream = StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return stream.getvalue()


def total_errors(res: dict[str, Any]) -> int:
    http = res["http"]
    errors = sum(q["errors"] for q in res["query"].values())
    errors += sum(r["errors"] for r in http["idle"] + http["reindex"]) + http.get("warmup_errors", 0)
    errors += http["swap_watch"]["errors"] + len(http["swap_watch"]["rebuild_failures"])
    return errors


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    kb_build, fts_build = res["build"]["kb"], res["build"]["fts5"]
    idle, busy = headline(res["http"], "idle"), headline(res["http"], "reindex")
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

def checks(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/MISS: the embedded backend's, then kb-pg's (when measured)."""
    out = _embedded_checks(res) if "kb" in res["build"] else []
    if res.get("postgresql"):
        out += pg_bench.checks(res, TARGETS)
    return out


def _embedded_checks(res: dict[str, Any]) -> list[dict[str, Any]]:
    kb_q, fts_q = res["query"]["kb"]["types"], res["query"]["fts5"]["types"]
    idle, busy = headline(res["http"], "idle"), headline(res["http"], "reindex")
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
        out.append({"name": f"query p95 {qtype}", "value": f"{p95:.1f} ms ({ratio(p95, base)} fts5)",
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
    """The human tables: kb next to FTS5 and plain Whoosh with ratios, kb-pg next to kb and FTS5 (when measured),
    then targets with PASS/MISS."""
    header = (f"== kb bench: {res['articles']} articles, {res.get('sections', 0)} sections, "
              f"{res['corpus']['text_bytes'] / 1e6:.1f} MB stored text ==")
    lines = [header] + (_embedded_table(res) if "kb" in res["build"] else [])
    if res.get("postgresql"):
        lines += pg_bench.format_table(res)
    lines.append("")
    lines.append(f"{'target':<40}{'measured':>24}  {'goal':<34}result")
    for c in checks(res):
        lines.append(f"{c['name']:<40}{c['value']:>24}  {c['target']:<34}{verdict(c['ok'])}")
    samples = [s for qq in res["query"].values() for s in qq["error_samples"]]
    if "http" in res:
        http = res["http"]
        samples += [s for r in http["idle"] + http["reindex"] for s in r["error_samples"]]
        samples += http["swap_watch"]["error_samples"]
    if res.get("postgresql"):
        samples += pg_bench.error_samples(res["postgresql"])
    if samples:
        lines.append("error samples:")
        lines += [f"  {s}" for s in samples[:10]]
    return "\n".join(lines)


def _embedded_table(res: dict[str, Any]) -> list[str]:
    """kb on the embedded backend next to FTS5 and plain Whoosh (absent with --skip whoosh), then its HTTP rows."""
    b, q = res["build"], res["query"]
    lines = [f"{'measure':<32}{'kb':>12}{'fts5':>12}{'kb/fts5':>9}{'whoosh':>12}{'kb/whoosh':>10}"]
    no_whoosh = {"rate": None, "seconds": None, "peak_rss_mb": None, "size_bytes": None, "docs": 0, "cpu_seconds": 0,
                 "types": {}, "error_samples": []}
    bw, qw = b.get("whoosh", no_whoosh), q.get("whoosh", no_whoosh)

    def row(name: str, k: float, f: float | None, w: float | None, fmt: str = "{:.0f}") -> None:
        fs = fmt.format(f) if f is not None else "-"
        ws = fmt.format(w) if w is not None else "-"
        lines.append(f"{name:<32}{fmt.format(k):>12}{fs:>12}{ratio(k, f or 0):>9}{ws:>12}{ratio(k, w or 0):>10}")

    row("build rate (articles/s)", b["kb"]["rate"], b["fts5"]["rate"], bw["rate"])
    row("build time (s)", b["kb"]["seconds"], b["fts5"]["seconds"], bw["seconds"], "{:.1f}")
    per_cpu = {e: x["docs"] / max(x["cpu_seconds"], 1e-9) if x["cpu_seconds"] else None
               for e, x in (("kb", b["kb"]), ("fts5", b["fts5"]), ("whoosh", bw))}
    row("build rate per CPU-second", per_cpu["kb"], per_cpu["fts5"], per_cpu["whoosh"])
    row("build peak RSS (MB)", b["kb"]["peak_rss_mb"], b["fts5"]["peak_rss_mb"], bw["peak_rss_mb"])
    mb = 1e6
    row("index size (MB)", b["kb"]["size_bytes"] / mb, b["fts5"]["size_bytes"] / mb,
        bw["size_bytes"] and bw["size_bytes"] / mb, "{:.1f}")
    text = max(1, res["corpus"]["text_bytes"])
    row("index size / stored text", b["kb"]["size_bytes"] / text, b["fts5"]["size_bytes"] / text,
        bw["size_bytes"] and bw["size_bytes"] / text, "{:.2f}")
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
                q["fts5"]["types"].get(qtype, {}).get(key), qw["types"].get(qtype, {}).get(key), "{:.1f}")
        kt, n = q["kb"]["types"][qtype], q["kb"]["types"][qtype]["n"]
        fz = q["fts5"]["types"].get(qtype, {}).get("zero_hits", "-")
        wz = qw["types"].get(qtype, {}).get("zero_hits", "-")
        extra = f"    zero hits {kt['zero_hits']}/{n} (fts5 {fz}, whoosh {wz})"
        if qtype == "misspelled":
            extra += f"; kb suggested a correction for {kt['suggested']}/{n}"
        lines.append(extra)
    row("query worker peak RSS (MB)", q["kb"]["peak_rss_mb"], q["fts5"]["peak_rss_mb"], qw.get("peak_rss_mb"))
    http = res["http"]
    idle_by = {(r["endpoint"], r["clients"]): r for r in http["idle"]}
    lines.append(f"{'HTTP (kb serve)':<32}{'req/s':>12}{'p50 ms':>12}{'p95 ms':>9}{'p99 ms':>12}{'errors':>10}"
                 f"{'p95 vs idle':>13}{'client CPU':>12}")
    for phase in ("idle", "reindex"):
        for r in http[phase]:
            base = idle_by.get((r["endpoint"], r["clients"]), r)
            lines.append(f"{phase + ' ' + r['endpoint'] + ' x' + str(r['clients']):<32}{r['rps']:>12.1f}"
                         f"{r['p50_ms']:>12.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>12.1f}{r['errors']:>10}"
                         f"{ratio(r['p95_ms'], base['p95_ms']):>13}{r['client_cpu']:>12.2f}")
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
    return lines


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


def run_bench(config: BenchConfig, echo: Callable[[str], None] = click.echo,
              database_url: str | None = None) -> dict[str, Any]:
    """Run every size in `config`, echoing each size's table; returns everything measured (JSON-ready).

    With `database_url` (the DATABASE_URL setting) kb on PostgreSQL is measured too, in a scratch schema.
    `results["lines"]` holds the contract lines, per size the `bench-postgresql:` line (when measured) before
    the embedded `bench:` line, largest size last; the caller prints them last.
    """
    if "kb" in config.skip and not database_url:
        raise KBError("--skip kb leaves only the FTS5 baseline to measure.",
                      "Set DATABASE_URL to measure kb on PostgreSQL alone, or drop --skip kb.")
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
            res = run_size(count, config, pool, work, database_url)
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
    results["lines"] = [line for res in results["sizes"] for line in contract_lines(res)]
    return results


def contract_lines(res: dict[str, Any]) -> list[str]:
    """One size's machine-readable lines; the embedded backend's `bench:` line last, as scripts parse it."""
    lines = [pg_bench.line(res["postgresql"]["summary"])] if res.get("postgresql") else []
    return lines + ([bench_line(res["summary"])] if "summary" in res else [])


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
@click.option("--skip", type=click.Choice(["http", "update", "whoosh", "kb", "postgresql"]), multiple=True,
              help="Leave a phase or engine out (repeatable); with --reuse, skipped update and plain-Whoosh "
                   "figures are those of the earlier run. `kb` leaves the embedded kb engine out (a PostgreSQL-only "
                   "scale run: its `bench:` line is then not printed); `postgresql` leaves kb-pg out.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, articles: int | None, json_path: Path, eval_dir: Path | None, seed: int,
          work_dir: Path | None, keep: bool, queries_per_type: int | None, http_seconds: float | None,
          http_requests: int | None, profile_dir: Path | None, reuse: bool = False,
          skip: tuple[str, ...] = (), server_workers: int | None = None, server_threads: int | None = None) -> None:
    """Measure index build, query latency and HTTP serving against SQLite FTS5 and plain Whoosh.

    With DATABASE_URL set, kb on PostgreSQL ("kb-pg") joins the run, in a scratch schema of that database
    dropped afterwards, with two kb serve nodes under load. Loads only 127.0.0.1, bounded in requests and
    time. The last line is machine-readable.
    """
    if ctx.invoked_subcommand is not None:
        return
    from kb.bench.eval import _database_url

    database_url = None if "postgresql" in skip else _database_url()
    if database_url:
        _echo(f"kb bench: kb on PostgreSQL ({pg_bench.ENGINE}) joins the run, in a scratch schema dropped afterwards")
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
        results = run_bench(config, database_url=database_url)
    except KBError as exc:
        raise click.ClickException(str(exc)) from None
    json_path.write_text(json.dumps(results, indent=2, default=str), "utf-8")
    _echo(f"results written to {json_path}")
    for line in results["lines"]:
        click.echo(line)


bench_command = bench
