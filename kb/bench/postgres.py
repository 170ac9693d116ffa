"""`kb bench`'s fourth engine, "kb-pg": kb on PostgreSQL beside the embedded backend and FTS5 (issue #14).

When the settings select PostgreSQL (DATABASE_URL), each corpus size is also measured there, on the same corpus
and query file: the generated SQLite store is copied into a scratch schema of that database with kb's own store
transfer (what `kb migrate-store` runs: "store load"), the search generation is built there (kb.index.rebuild on
a PostgresStore), the query file is timed through PgSearcher, the incremental update through kb.index.update,
and /api/search through two `kb serve` nodes sharing that schema and one KB_SECRET_KEY, idle and during a
`kb reindex`. The scratch schema is dropped afterwards, after an error or Ctrl-C too; nothing else in the
database is read or written, so it may be a production database's (the role needs CREATE on it).

Builds and query runs are kb's processes only: CPU seconds and peak RSS leave out the PostgreSQL server's
own work (GIN builds, query execution), which wall times include.
"""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kb.bench import corpus as corpus_mod
from kb.bench.load import LoadPlan, Reindexer, Server, child_env, headline, kb_args, ratio, run_phases, search_path
from kb.bench.workers import run_updates, run_worker, summarise_queries

ENGINE = "kb-pg"
#: Prefix of the scratch schemas `kb bench` creates (kb_bench_<pid>_<random>); each is dropped at the end.
SCRATCH_PREFIX = "kb_bench"
NODES = 2

Echo = Callable[[str], None]


@dataclass
class PgPlan:
    """What the kb-pg engine measures for one corpus size (filled in from BenchConfig by kb.bench.perf)."""

    http: LoadPlan
    skip: tuple[str, ...] = ()
    workers: int | None = None  # kb serve workers per node (None: the WORKERS setting)
    threads: int | None = None
    variant: int = 1  # corpus edit variant of the update (the embedded update used the ones before)
    update_share: float = 0.01
    seed: int = 0
    nodes: int = NODES


def run(database_url: str, count: int, store_path: Path, queries_file: Path, queries: list[dict[str, Any]],
        pool: corpus_mod.SentencePool, plan: PgPlan, size_dir: Path, res: dict[str, Any], echo: Echo) -> dict[str, Any]:
    """Every kb-pg measurement for one corpus size, in a scratch schema of `database_url` dropped afterwards."""
    from kb.store.postgres_search import scratch_schema
    from kb.store.transfer import shown_url

    out: dict[str, Any] = {"engine": ENGINE, "database": shown_url(database_url), "articles": count,
                           "sections": res.get("sections", 0)}
    echo(f"[{count}] {ENGINE}: scratch schema in {shown_url(database_url)} ...")
    with scratch_schema(database_url, prefix=SCRATCH_PREFIX) as url:
        out["store_load"] = load_store(store_path, url)
        sl = out["store_load"]
        echo(f"[{count}] {ENGINE}: store load {sl['articles']} articles ({sl['rows']} rows) in {sl['seconds']:.1f} s")
        unused = size_dir / "pg-no-index-dir"  # kb.index wants an index root; on PostgreSQL it stays unused
        b = run_worker({"job": "build-kb-pg", "store": url, "path": str(unused)})
        b["rate"] = b["docs"] / b["seconds"] if b["seconds"] else 0.0
        b["schema_bytes"] = b["database_bytes"] - sl["database_bytes_before"]
        out["build"] = b
        echo(f"[{count}] {ENGINE}: {b['docs']} docs in {b['seconds']:.1f} s = {b['rate']:.0f}/s, generation "
             f"{b['size_bytes'] / 1e6:.1f} MB, schema {b['schema_bytes'] / 1e6:.1f} MB; querying ...")
        out["query"] = summarise_queries(run_worker({"job": "query", "engine": ENGINE, "path": url,
                                                     "queries": str(queries_file)}))
        echo(f"[{count}] {ENGINE}: worst query p95 {out['query']['worst_p95_ms']:.1f} ms, "
             f"errors {out['query']['errors']}")
        if "update" in plan.skip:
            out["update"] = out["update_1000"] = None
        else:
            changed = max(1, round(count * plan.update_share))
            out["update"], out["update_1000"] = run_updates(url, unused, pool, count, changed, plan.seed, plan.variant,
                                                            echo, job="update-kb-pg", label=f"{ENGINE}: ")
        if "http" in plan.skip:
            out["http"] = None
        else:
            echo(f"[{count}] {ENGINE}: HTTP against {plan.nodes} kb serve nodes on the scratch schema ...")
            out["http"] = run_http(url, queries, plan, size_dir, echo)
    out["summary"] = summarise(out)
    return out


def load_store(store_path: Path, url: str) -> dict[str, Any]:
    """Copy the SQLite store into the scratch schema as `kb migrate-store` does; timed without the schema setup."""
    from kb.store import open_store
    from kb.store.transfer import migrate_data_dir

    with open_store(url) as store:  # runs kb's migrations: empty tables, as migrate-store's target has them
        before = store.database_size()
    start = time.perf_counter()
    counts = migrate_data_dir(Path(store_path), url)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "articles": counts.get("articles", 0), "rows": sum(counts.values()),
            "tables": counts, "rate": counts.get("articles", 0) / seconds if seconds else 0.0,
            "database_bytes_before": before}


def run_http(url: str, queries: list[dict[str, Any]], plan: PgPlan, size_dir: Path, echo: Echo) -> dict[str, Any]:
    """/api/search through `plan.nodes` kb serve processes on one database, as several hosts behind a load balancer
    (clients spread round-robin), idle and while `kb reindex` rebuilds the generation on PostgreSQL."""
    env = {"KB_DATABASE_URL": url, "KB_DATABASE_REPLICA_URLS": "", "KB_SECRET_KEY": secrets.token_hex(32)}
    paths = {"/api/search": [search_path("/api/search", q) for q in queries]}
    out: dict[str, Any] = {"nodes": plan.nodes, "threads": plan.threads, "workers": plan.workers}
    with ExitStack() as stack:
        servers: list[Server] = []
        for n in range(1, plan.nodes + 1):
            node_dir = size_dir / f"pg-node-{n}"
            node_dir.mkdir(parents=True, exist_ok=True)
            server = stack.enter_context(Server(node_dir, workers=plan.workers, threads=plan.threads, env=env,
                                                log_path=size_dir / f"pg-serve-{n}.log"))
            servers.append(server.start())
        out["server"] = servers[0].command
        out["ports"] = [s.port for s in servers]
        out["server_processes"] = sum(1 + len(s.worker_pids()) for s in servers)
        admin = size_dir / "pg-admin"
        admin.mkdir(parents=True, exist_ok=True)
        reindexer = Reindexer(kb_args(admin, "reindex"), size_dir / "pg-reindex.log",
                              env=child_env(KB_DATA_DIR=str(admin), **env))
        phases = run_phases(servers, paths, plan.http, reindexer, echo)
    out.update(phases)
    return out


# -- summary, contract line, checks and the report table -------------------------------------------------------

def total_errors(pg: dict[str, Any]) -> int:
    errors = pg["query"]["errors"]
    http = pg.get("http")
    if http:
        errors += sum(r["errors"] for r in http["idle"] + http["reindex"]) + http.get("warmup_errors", 0)
        errors += http["swap_watch"]["errors"] + len(http["swap_watch"]["rebuild_failures"])
    return errors


def reindex_failures(http: dict[str, Any]) -> int:
    """Failed requests while a PostgreSQL reindex ran (the reindex phases and the swap watch), failed rebuilds too."""
    sw = http["swap_watch"]
    return sum(r["errors"] for r in http["reindex"]) + sw["errors"] + len(sw["rebuild_failures"])


def summarise(pg: dict[str, Any]) -> dict[str, Any]:
    http = pg.get("http")
    idle = headline(http, "idle") if http else {"rps": 0.0, "p95_ms": 0.0}
    busy = headline(http, "reindex") if http else {"rps": 0.0, "p95_ms": 0.0}
    return {"articles": pg["articles"], "sections": pg["sections"], "build_rate": pg["build"]["rate"],
            "query_p95": pg["query"]["worst_p95_ms"], "http_rps": idle["rps"], "http_p95": idle["p95_ms"],
            "http_p95_reindex": busy["p95_ms"], "errors": total_errors(pg)}


def line(summary: dict[str, Any]) -> str:
    """The kb-pg contract line, printed just before the embedded backend's `bench:` line (which stays last)."""
    s = summary
    return (f"bench-postgresql: articles={s['articles']} build_rate={s['build_rate']:.0f}/s "
            f"query_p95={s['query_p95']:.1f}ms http_rps={s['http_rps']:.0f} http_p95={s['http_p95']:.0f}ms "
            f"http_p95_reindex={s['http_p95_reindex']:.0f}ms errors={s['errors']}")


def checks(res: dict[str, Any], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's PostgreSQL targets: query p95 per type no worse than the embedded backend (or, without it, the
    embedded target), 0 failed requests during a reindex, no errors."""
    pg = res["postgresql"]
    kb_types = res["query"].get("kb", {}).get("types")
    out = []
    for qtype in corpus_mod.QUERY_TYPES:
        if qtype not in pg["query"]["types"]:
            continue
        p95 = pg["query"]["types"][qtype]["p95_ms"]
        if kb_types and qtype in kb_types:
            base = kb_types[qtype]["p95_ms"]
            out.append({"name": f"{ENGINE} query p95 {qtype}", "value": f"{p95:.1f} ms ({ratio(p95, base)} kb)",
                        "target": "<= embedded kb p95", "ok": p95 <= targets["pg_query_vs_kb"] * base})
        else:
            out.append({"name": f"{ENGINE} query p95 {qtype}", "value": f"{p95:.1f} ms",
                        "target": f"<= {targets['query_p95_ms']:.0f} ms", "ok": p95 <= targets["query_p95_ms"]})
    if pg.get("http"):
        failed = reindex_failures(pg["http"])
        out.append({"name": f"{ENGINE} failed requests in reindex", "value": str(failed),
                    "target": str(targets["pg_reindex_errors"]), "ok": failed <= targets["pg_reindex_errors"]})
    errors = total_errors(pg)
    out.append({"name": f"{ENGINE} errors", "value": str(errors), "target": "0", "ok": errors == 0})
    return out


def format_table(res: dict[str, Any]) -> list[str]:
    """kb-pg beside embedded kb and FTS5 with ratios, then its HTTP rows (two nodes) and the swap watch."""
    pg, build, query = res["postgresql"], res["build"], res["query"]
    kb_b, fts_b = build.get("kb"), build.get("fts5")
    kb_q, fts_q = query.get("kb"), query.get("fts5")
    lines = [f"-- {ENGINE}: kb on PostgreSQL ({pg['database']}, scratch schema) --",
             f"{'measure':<32}{ENGINE:>12}{'kb':>12}{ENGINE + '/kb':>11}{'fts5':>12}{ENGINE + '/fts5':>13}"]

    def row(name: str, value: float, kb: float | None, fts: float | None, fmt: str = "{:.0f}") -> None:
        ks = fmt.format(kb) if kb is not None else "-"
        fs = fmt.format(fts) if fts is not None else "-"
        lines.append(f"{name:<32}{fmt.format(value):>12}{ks:>12}{ratio(value, kb or 0):>11}{fs:>12}"
                     f"{ratio(value, fts or 0):>13}")

    def of(b: dict[str, Any] | None, key: str) -> float | None:
        return b[key] if b else None

    b, sl = pg["build"], pg["store_load"]
    text = max(1, res["corpus"]["text_bytes"])
    lines.append(f"{'store load (s)':<32}{sl['seconds']:>12.1f}  ({sl['rate']:.0f} articles/s, {sl['rows']} rows: "
                 "kb migrate-store from the SQLite store)")
    row("build rate (articles/s)", b["rate"], of(kb_b, "rate"), of(fts_b, "rate"))
    row("build time (s)", b["seconds"], of(kb_b, "seconds"), of(fts_b, "seconds"), "{:.1f}")
    per_cpu = {name: x["docs"] / max(x["cpu_seconds"], 1e-9) if x else None
               for name, x in (("pg", b), ("kb", kb_b), ("fts5", fts_b))}
    row("build rate per CPU-second", per_cpu["pg"], per_cpu["kb"], per_cpu["fts5"])
    row("build peak RSS (MB)", b["peak_rss_mb"], of(kb_b, "peak_rss_mb"), of(fts_b, "peak_rss_mb"))
    row("index size (MB)", b["size_bytes"] / 1e6, kb_b and kb_b["size_bytes"] / 1e6,
        fts_b and fts_b["size_bytes"] / 1e6, "{:.1f}")
    row("index size / stored text", b["size_bytes"] / text, kb_b and kb_b["size_bytes"] / text,
        fts_b and fts_b["size_bytes"] / text, "{:.2f}")
    lines.append(f"{'schema size, store + index (MB)':<32}{b['schema_bytes'] / 1e6:>12.1f}  (database growth; "
                 f"SQLite store {res['corpus'].get('store_bytes', 0) / 1e6:.1f} MB)")
    if pg.get("update"):
        upd, kb_upd = pg["update"], res.get("update")
        row(f"update {upd['changed']} changed (s)", upd["seconds"], kb_upd and kb_upd["seconds"], None, "{:.2f}")
        u1000, kb_u1000 = pg["update_1000"], res.get("update_1000")
        if not u1000["estimated"] and u1000["changed"] != upd["changed"]:
            row("update 1000 changed (s)", u1000["seconds"], kb_u1000 and kb_u1000["seconds"], None, "{:.2f}")
    for qtype in corpus_mod.QUERY_TYPES:
        if qtype not in pg["query"]["types"]:
            continue
        for pct in ("p50", "p95", "p99", "cpu_p95"):
            key = f"{pct}_ms"
            row(f"query {qtype} {pct} (ms)", pg["query"]["types"][qtype][key],
                kb_q["types"].get(qtype, {}).get(key) if kb_q else None,
                fts_q["types"].get(qtype, {}).get(key) if fts_q else None, "{:.1f}")
        t = pg["query"]["types"][qtype]
        kz = kb_q["types"].get(qtype, {}).get("zero_hits", "-") if kb_q else "-"
        lines.append(f"    zero hits {t['zero_hits']}/{t['n']} (kb {kz})"
                     + (f"; suggested a correction for {t['suggested']}/{t['n']}" if qtype == "misspelled" else ""))
    row("query worker peak RSS (MB)", pg["query"]["peak_rss_mb"], of(kb_q, "peak_rss_mb"), of(fts_q, "peak_rss_mb"))
    lines += _http_lines(pg.get("http"), res.get("http"))
    return lines


def _http_lines(http: dict[str, Any] | None, embedded: dict[str, Any] | None) -> list[str]:
    if not http:
        return ["HTTP phases skipped"]
    kb_rows = {(phase, r["endpoint"], r["clients"]): r for phase in ("idle", "reindex")
               for r in (embedded or {}).get(phase, [])}
    lines = [f"{'HTTP (' + str(http['nodes']) + ' kb serve nodes)':<32}{'req/s':>12}{'p50 ms':>12}{'p95 ms':>9}"
             f"{'p99 ms':>12}{'errors':>10}{'p95 vs kb':>13}{'per node':>16}"]
    for phase in ("idle", "reindex"):
        for r in http[phase]:
            kb = kb_rows.get((phase, r["endpoint"], r["clients"]))
            spread = "/".join(str(n) for n in r.get("ports", {}).values())
            lines.append(f"{phase + ' ' + r['endpoint'] + ' x' + str(r['clients']):<32}{r['rps']:>12.1f}"
                         f"{r['p50_ms']:>12.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>12.1f}{r['errors']:>10}"
                         f"{ratio(r['p95_ms'], kb['p95_ms'] if kb else 0):>13}{spread:>16}")
    sw = http["swap_watch"]
    lines.append(f"swap watch ({http['nodes']} nodes, kb reindex on PostgreSQL): {sw['requests']} requests, "
                 f"{sw['errors']} errors, rebuilds completed {sw['rebuilds_completed']}, "
                 f"finished={sw['rebuild_finished']}")
    peaks = ", ".join(f"{m['peak_rss_mb']:.0f}" for m in http["memory"])
    lines.append(f"servers: {http['nodes']} x {http['server']} ({http['server_processes']} processes); "
                 f"largest process peak RSS per node (MB): {peaks}")
    return lines


def error_samples(pg: dict[str, Any]) -> list[str]:
    samples = list(pg["query"]["error_samples"])
    http = pg.get("http")
    if http:
        samples += [s for r in http["idle"] + http["reindex"] for s in r["error_samples"]]
        samples += http["swap_watch"]["error_samples"] + http["swap_watch"]["rebuild_failures"]
    return [f"{ENGINE}: {s}" for s in samples]

