"""kb bench with DATABASE_URL: kb on PostgreSQL ("kb-pg") beside the embedded backend and FTS5, in a scratch schema.

Real runs on the test cluster: the store load, the generation build, the query file through PgSearcher, the update,
two `kb serve` nodes under load idle and during `kb reindex`, the report, the contract lines, and the scratch
schema dropped afterwards. The report logic (checks, the line) is also tested on figures made up to the point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kb.bench import corpus
from kb.bench import postgres as pg_bench
from kb.bench.perf import TARGETS, bench, checks
from kb.bench.workers import job_env

PG_LINE = re.compile(r"^bench-postgresql: articles=(\d+) build_rate=(\d+)/s query_p95=(\d+\.\d)ms http_rps=(\d+) "
                     r"http_p95=(\d+)ms http_p95_reindex=(\d+)ms errors=(\d+)$")
EMBEDDED_LINE = re.compile(r"^bench: articles=\d+ index_rate=\d+/s .* errors=\d+$")
ARTICLES = 150


def scratch_schemas(url: str) -> list[str]:
    from tests.pgcluster import connect

    with connect(url) as conn:
        return [r[0] for r in conn.execute(
            r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kb\_bench%' OR nspname LIKE 'kb\_scratch%'")]


@pytest.mark.postgresql
def test_bench_measures_kb_on_postgresql_beside_the_embedded_backend(pg_database, tmp_path: Path, runner,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("KB_DATABASE_URL", pg_database.url)  # also what the embedded kb serve must not follow
    out = tmp_path / "bench.json"
    result = runner.invoke(bench, [
        "--articles", str(ARTICLES), "--quick", "--queries", "2", "--http-seconds", "0.3", "--http-requests", "30",
        "--workers", "1", "--skip", "whoosh", "--json", str(out), "--work-dir", str(tmp_path / "work"),
    ])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert EMBEDDED_LINE.match(lines[-1]), lines[-1]  # the embedded backend's line stays last
    pg_line = PG_LINE.match(lines[-2])
    assert pg_line, lines[-2]
    assert pg_line.group(1) == str(ARTICLES) and int(pg_line.group(2)) > 0 and float(pg_line.group(3)) > 0
    assert pg_line.group(7) == "0", result.output
    assert "-- kb-pg: kb on PostgreSQL" in result.output and "kb-pg query p95 phrase" in result.output
    assert pg_database.url.split("@")[0].split(":")[-1] not in result.output  # the password is never printed

    size = json.loads(out.read_text())["sizes"][0]
    pg = size["postgresql"]
    primaries = size["build"]["kb"]["docs"]
    assert primaries == ARTICLES and pg["build"]["docs"] == primaries
    assert pg["store_load"]["articles"] == ARTICLES and pg["store_load"]["seconds"] > 0
    assert pg["build"]["size_bytes"] > 0 and pg["build"]["schema_bytes"] >= pg["build"]["size_bytes"]
    assert set(pg["query"]["types"]) == set(corpus.QUERY_TYPES) and pg["query"]["errors"] == 0
    assert all(t["p95_ms"] > 0 for t in pg["query"]["types"].values())
    assert pg["update"]["changed"] == 2 and pg["update"]["indexed"] == 2
    http = pg["http"]
    assert http["nodes"] == 2 and len(http["ports"]) == 2 and len(http["memory"]) == 2
    for row in http["idle"] + http["reindex"]:
        assert (row["endpoint"], row["clients"], row["errors"]) == ("/api/search", 8, 0)
        assert set(row["ports"]) == {str(p) for p in http["ports"]} and all(n > 0 for n in row["ports"].values())
    watch = http["swap_watch"]
    assert watch["errors"] == 0 and watch["rebuilds_completed"] >= 1 and watch["rebuild_failures"] == []
    assert size["sections"] == pg["sections"] > ARTICLES * 4
    names = {c["name"]: c for c in size["checks"]}
    assert names["kb-pg failed requests in reindex"]["ok"] and names["kb-pg errors"]["ok"]
    assert {f"kb-pg query p95 {t}" for t in corpus.QUERY_TYPES} <= set(names)
    assert scratch_schemas(pg_database.url) == []
    assert not any((tmp_path / "work").iterdir()), "work directory not cleaned up"


@pytest.mark.postgresql
def test_postgresql_only_scale_run_leaves_the_embedded_engine_out(pg_database, tmp_path: Path, runner,
                                                                  monkeypatch) -> None:
    """`--skip kb --skip whoosh --skip http --skip update`: the 1M-sections run, with sections in header and JSON."""
    monkeypatch.setenv("KB_DATABASE_URL", pg_database.url)
    out = tmp_path / "bench.json"
    result = runner.invoke(bench, ["--articles", "120", "--quick", "--queries", "2", "--json", str(out),
                                   "--work-dir", str(tmp_path / "work"), "--skip", "kb", "--skip", "whoosh",
                                   "--skip", "http", "--skip", "update"])
    assert result.exit_code == 0, result.output
    assert PG_LINE.match(result.output.strip().splitlines()[-1])
    assert "\nbench: " not in result.output and "kb: building" not in result.output
    size = json.loads(out.read_text())["sizes"][0]
    assert set(size["build"]) == {"fts5"} and size["postgresql"]["build"]["docs"] == 120
    assert re.search(rf"== kb bench: 120 articles, {size['sections']} sections,", result.output)
    assert size["postgresql"]["http"] is None and size["postgresql"]["update"] is None
    # Without the embedded engine the query rows are judged against the embedded target instead.
    assert next(c for c in size["checks"] if c["name"] == "kb-pg query p95 single")["target"] == "<= 50 ms"
    assert scratch_schemas(pg_database.url) == []


def test_scratch_schema_is_dropped_when_a_step_fails(monkeypatch, tmp_path: Path) -> None:
    """An error (or Ctrl-C) inside the run leaves the `scratch_schema` context, which drops the schema."""
    entered: list[str] = []
    left: list[str] = []

    from contextlib import contextmanager

    @contextmanager
    def fake_scratch(url: str, prefix: str):
        entered.append(prefix)
        try:
            yield url + "?options=-csearch_path%3Dx"
        finally:
            left.append(prefix)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("kb.store.postgres_search.scratch_schema", fake_scratch)
    monkeypatch.setattr(pg_bench, "load_store", interrupted)
    plan = pg_bench.PgPlan(http=None)  # type: ignore[arg-type] - never reached
    with pytest.raises(KeyboardInterrupt):
        pg_bench.run("postgresql://kb:pw@127.0.0.1:1/db", 10, tmp_path / "s.sqlite3", tmp_path / "q.json", [],
                     None, plan, tmp_path, {}, lambda m: None)  # type: ignore[arg-type]
    assert entered == left == [pg_bench.SCRATCH_PREFIX]


def _types(p95: float) -> dict:
    return {t: {"p95_ms": p95, "n": 3, "zero_hits": 0} for t in corpus.QUERY_TYPES}


def test_postgresql_checks_compare_each_query_type_with_the_embedded_backend() -> None:
    swap = {"requests": 50, "errors": 1, "error_samples": ["x"], "rebuild_failures": []}
    pg = {"articles": 10, "sections": 50, "build": {"rate": 5.0}, "update": None,
          "query": {"types": _types(10.0) | {"phrase": {"p95_ms": 30.0, "n": 3, "zero_hits": 0}}, "errors": 0,
                    "worst_p95_ms": 30.0, "error_samples": []},
          "http": {"idle": [{"endpoint": "/api/search", "clients": 8, "errors": 0, "rps": 40.0, "p95_ms": 90.0}],
                   "reindex": [{"endpoint": "/api/search", "clients": 8, "errors": 2, "rps": 30.0, "p95_ms": 120.0}],
                   "warmup_errors": 0, "swap_watch": swap}}
    res = {"build": {"fts5": {}}, "query": {"kb": {"types": _types(20.0)}}, "postgresql": pg}
    found = {c["name"]: c for c in pg_bench.checks(res, TARGETS)}
    assert found["kb-pg query p95 single"]["ok"] and found["kb-pg query p95 single"]["value"] == "10.0 ms (0.50x kb)"
    assert not found["kb-pg query p95 phrase"]["ok"]  # 30 ms against the embedded 20 ms: worse, so MISS
    failed = found["kb-pg failed requests in reindex"]
    assert failed["value"] == "3" and not failed["ok"]
    assert found["kb-pg errors"]["value"] == "3"
    assert pg_bench.line(pg_bench.summarise(pg)) == (
        "bench-postgresql: articles=10 build_rate=5/s query_p95=30.0ms http_rps=40 http_p95=90ms "
        "http_p95_reindex=120ms errors=3")
    # perf.checks: no embedded kb engine measured, only the kb-pg rows.
    assert [c["name"] for c in checks({"build": {"fts5": {}}, "query": {}, "postgresql": pg})][0].startswith("kb-pg")


def test_database_urls_reach_workers_through_the_environment_not_argv() -> None:
    public, env = job_env({"job": "query", "engine": "kb-pg", "path": "postgresql://kb:s3cret@127.0.0.1/db",
                           "queries": "/tmp/q.json"})
    assert "s3cret" not in json.dumps(public) and public["queries"] == "/tmp/q.json"
    assert env == {"KB_BENCH_JOB_PATH": "postgresql://kb:s3cret@127.0.0.1/db"}
    assert public["path"] == "env:KB_BENCH_JOB_PATH"
