"""kb bench: a deterministic real-text corpus, fair baselines, bounded loopback load, and the contract line."""

from __future__ import annotations

import http.server
import json
import re
import threading
from datetime import date
from pathlib import Path

import click
import pytest

from kb.bench import corpus
from kb.bench.baselines import fts5_query
from kb.bench.load import percentile, run_load, search_path
from kb.bench.perf import baseline_query, bench, bench_command, bench_line
from kb.bench.workers import count_sections
from kb.config import data_paths
from kb.errors import KBError

LINE = re.compile(
    r"^bench: articles=(\d+) index_rate=(\d+)/s fts5_index_rate=(\d+)/s query_p95=(\d+\.\d)ms "
    r"fts5_query_p95=(\d+\.\d)ms http_rps=(\d+) http_p95=(\d+)ms http_p95_reindex=(\d+)ms errors=(\d+)$"
)


@pytest.fixture(scope="module")
def pool() -> corpus.SentencePool:
    return corpus.load_pool(corpus.resolve_eval_dir())


def test_articles_are_deterministic_for_a_seed(pool: corpus.SentencePool) -> None:
    first = [a.to_dict() for a in corpus.iter_corpus(pool, 30, seed=7)]
    again = [a.to_dict() for a in corpus.iter_corpus(pool, 30, seed=7)]
    other = [a.to_dict() for a in corpus.iter_corpus(pool, 30, seed=8)]
    assert first == again
    assert first != other
    # Article i does not depend on the run size, so 1k and 100k corpora share their first articles.
    assert corpus.make_article(pool, 12, seed=7).to_dict() == first[12]


def test_articles_look_like_real_pages(pool: corpus.SentencePool) -> None:
    articles = list(corpus.iter_corpus(pool, 200, seed=3))
    words = [len(a.text.split()) for a in articles]
    mean = sum(words) / len(words)
    assert 550 <= mean <= 650, mean
    assert min(words) >= 300 and max(words) <= 1000
    assert len({a.url for a in articles}) == len(articles)
    all_sentences = set(pool.sentences)
    tag_names = {name for name, _ in corpus.TAGS}
    for article in articles:
        assert article.title and article.site and article.url.startswith(f"https://{article.site}/")
        assert 4 <= len(article.sections) <= 6
        for section in article.sections:
            assert section.heading and section.anchor == corpus.slugify(section.heading)
            assert f"{section.heading}\n\n{section.text}" in article.text
        assert article.tags and set(article.tags) <= tag_names
        published = date.fromisoformat(article.published)
        assert date(2005, 1, 1) <= published <= date(2025, 12, 31)
        if article.modified:
            assert date.fromisoformat(article.modified) > published
        # Real text: every paragraph is made of sentences from the collection.
        first_paragraph = article.text.split("\n\n")[0]
        assert any(first_paragraph.startswith(s) for s in all_sentences)
    assert {a.audience for a in articles} == {"public", "staff"}


def test_edited_variant_keeps_url_and_changes_text(pool: corpus.SentencePool) -> None:
    original = corpus.make_article(pool, 4, seed=1)
    edited = corpus.make_article(pool, 4, seed=1, variant=1)
    assert edited.url == original.url and edited.published == original.published
    assert edited.text != original.text
    assert edited.content_hash != original.content_hash


def test_queries_cover_every_type_deterministically(pool: corpus.SentencePool) -> None:
    queries = corpus.make_queries(pool, 12, seed=2)
    assert queries == corpus.make_queries(pool, 12, seed=2)
    assert queries != corpus.make_queries(pool, 12, seed=3)
    by_type: dict[str, list[dict]] = {}
    for item in queries:
        by_type.setdefault(item["type"], []).append(item)
    assert set(by_type) == set(corpus.QUERY_TYPES) and all(len(v) == 12 for v in by_type.values())
    assert all(q["q"].startswith('"') and q["q"].endswith('"') for q in by_type["phrase"])
    assert all(q["q"] != q["intended"] and abs(len(q["q"]) - len(q["intended"])) <= 1 for q in by_type["misspelled"])
    assert all(q["page"] == 5 for q in by_type["page5"])
    assert all(q["filters"]["tag"][0] in dict(corpus.TAGS) for q in by_type["tag_filter"])
    questions = {q["query"] for q in pool.questions}
    assert all(q["q"] in questions for q in by_type["question"])
    assert {q["q"] for q in by_type["synonym"]} <= set(corpus.SYNONYM_QUERIES)


def test_missing_eval_dir_is_a_clear_error(tmp_path: Path, runner, monkeypatch) -> None:
    monkeypatch.delenv("KB_EVAL_DIR", raising=False)
    with pytest.raises(KBError) as info:
        corpus.resolve_eval_dir(tmp_path / "nowhere")
    assert "--eval-dir" in info.value.remedy
    result = runner.invoke(bench, ["--articles", "100", "--eval-dir", str(tmp_path / "nowhere"),
                                   "--json", str(tmp_path / "out.json")])
    assert result.exit_code != 0
    assert "Benchmark text not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.json").exists()


def test_skipping_the_embedded_engine_needs_postgresql(tmp_path: Path, runner, monkeypatch) -> None:
    monkeypatch.delenv("KB_DATABASE_URL", raising=False)
    result = runner.invoke(bench, ["--articles", "100", "--skip", "kb", "--json", str(tmp_path / "out.json")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--skip kb" in result.output and "DATABASE_URL" in result.output
    assert not (tmp_path / "out.json").exists()


def fts5_match(item: dict) -> str:
    return fts5_query(baseline_query(item))


def test_fts5_queries_mean_what_the_plain_engines_do() -> None:
    assert fts5_match({"type": "two_terms", "q": "psoriasis treatment"}) == '"psoriasis" "treatment"'
    assert fts5_match({"type": "phrase", "q": '"skin cancer"'}) == '"skin cancer"'
    assert fts5_match({"type": "question", "q": "What is acne ?"}) == '"what" OR "acne"'
    assert (fts5_match({"type": "tag_filter", "q": "genetic", "filters": {"tag": ["skin-cancer"]}})
            == '("genetic") AND tags:"skin-cancer"')
    assert fts5_match({"type": "single", "q": "?!"}) == ""
    question = baseline_query({"type": "question", "q": "What is acne ?"})
    assert question.syntax and not question.match_all and question.drop_stop_words and question.tag is None


def test_percentile_and_request_paths() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(1, 101)), 50) == pytest.approx(50.5)
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    item = {"q": "acne scars", "page": 5, "filters": {"tag": ["laser"]}}
    assert search_path("/api/search", item) == "/api/search?q=acne+scars&page=5&tag=laser"


def test_load_generator_is_bounded_and_loopback_only() -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            hits.append(self.path)
            body = b'{"results": []}' if "ok" in self.path else b"nope"
            self.send_response(200 if "ok" in self.path else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = run_load("127.0.0.1", port, ["/ok", "/bad"], clients=3, max_requests=40, seconds=10,
                          expect_json=True)
        assert result.requests == 40 == len(hits)
        assert result.errors == 20 and result.statuses == {"200": 20, "500": 20}
        timed = run_load("127.0.0.1", port, ["/ok"], clients=2, max_requests=10**9, seconds=0.3)
        assert timed.errors == 0 and timed.seconds < 2.0 and timed.requests > 0
        with pytest.raises(KBError):
            run_load("10.0.0.1", port, ["/ok"], clients=1, max_requests=1, seconds=1)
        # Several nodes of one site: clients spread round-robin, every node answers its share.
        other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        other_thread = threading.Thread(target=other.serve_forever, daemon=True)
        other_thread.start()
        try:
            ports = [port, other.server_address[1]]
            spread = run_load("127.0.0.1", ports, ["/ok"], clients=4, max_requests=10**9, seconds=0.3)
            assert set(spread.ports) == {str(p) for p in ports} and all(n > 0 for n in spread.ports.values())
            assert sum(spread.ports.values()) == spread.requests and spread.errors == 0
        finally:
            other.shutdown()
            other.server_close()
            other_thread.join(5)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_bench_is_a_group_other_commands_can_join() -> None:
    assert bench_command is bench
    assert isinstance(bench, click.Group) and bench.invoke_without_command


def test_contract_line_format() -> None:
    line = bench_line({"articles": 100000, "index_rate": 512.4, "fts5_index_rate": 9100.2, "query_p95": 18.24,
                       "fts5_query_p95": 4.06, "http_rps": 210.3, "http_p95": 61.2, "http_p95_reindex": 120.0,
                       "errors": 0})
    assert line == ("bench: articles=100000 index_rate=512/s fts5_index_rate=9100/s query_p95=18.2ms "
                    "fts5_query_p95=4.1ms http_rps=210 http_p95=61ms http_p95_reindex=120ms errors=0")


def test_smoke_full_suite_small(tmp_path: Path, runner, monkeypatch) -> None:
    """Every stage for real on 500 articles: builds, queries, update, kb serve under load and reindex.

    Without DATABASE_URL nothing about PostgreSQL is measured or printed."""
    monkeypatch.delenv("KB_DATABASE_URL", raising=False)
    out = tmp_path / "bench.json"
    result = runner.invoke(bench, [
        "--articles", "500", "--quick", "--queries", "3", "--http-seconds", "0.5", "--http-requests", "40",
        "--json", str(out), "--work-dir", str(tmp_path / "work"),
    ])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    match = LINE.match(last)
    assert match, last
    assert match.group(1) == "500"
    assert int(match.group(2)) > 0 and int(match.group(3)) > 0 and int(match.group(6)) > 0
    assert match.group(9) == "0", result.output
    for marker in ("build rate (articles/s)", "query misspelled p95 (ms)", "idle /api/search x8", "PASS"):
        assert marker in result.output
    data = json.loads(out.read_text())
    size = data["sizes"][0]
    assert set(size["build"]) == {"kb", "fts5", "whoosh"}
    assert all(b["docs"] == 500 for b in size["build"].values())
    assert size["update"]["changed"] == 5 and size["update"]["indexed"] == 5
    assert {r["clients"] for r in size["http"]["idle"]} == {1, 8, 32}
    assert size["http"]["swap_watch"]["rebuilds_completed"] >= 1
    assert set(size["query"]["kb"]["types"]) == set(corpus.QUERY_TYPES)
    assert data["lines"] == [last]
    assert "postgresql" not in size and "kb-pg" not in result.output and "PostgreSQL" not in result.output
    assert size["sections"] == sum(len(a.sections) for a in corpus.iter_corpus(corpus.load_pool(
        corpus.resolve_eval_dir()), 500, seed=0))
    assert not any((tmp_path / "work").iterdir()), "work directory not cleaned up"


def test_reuse_keeps_builds_and_skip_leaves_phases_out(tmp_path: Path, runner, monkeypatch) -> None:
    """--reuse queries the builds of an earlier run; --skip leaves phases out and judges nothing it skipped."""
    work = tmp_path / "work"
    args = ["--articles", "200", "--quick", "--queries", "2", "--reuse", "--work-dir", str(work), "--skip", "http"]
    first = runner.invoke(bench, [*args, "--json", str(tmp_path / "a.json")])
    assert first.exit_code == 0, first.output
    manifest = work / "n200" / "bench-build.json"
    assert "reusing" not in first.output and manifest.exists()
    # A manifest written before sections were counted (the format of earlier runs) is still reused.
    saved = json.loads(manifest.read_text())
    sections = saved["corpus"].pop("sections")
    manifest.write_text(json.dumps(saved))
    # --skip postgresql: a DATABASE_URL in the environment (here one nobody answers) is left alone.
    monkeypatch.setenv("KB_DATABASE_URL", "postgresql://kb:pw@127.0.0.1:9/nowhere")
    second = runner.invoke(bench, [*args, "--skip", "whoosh", "--skip", "update", "--skip", "postgresql",
                                   "--json", str(tmp_path / "b.json")])
    assert second.exit_code == 0, second.output
    assert "reusing the corpus and builds" in second.output and "fts5: building" not in second.output
    assert "kb: building" not in second.output  # same index schema: the kb index is reused too
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["sizes"][0] for n in "ab")
    assert b["build"] == a["build"] and b["update"] == a["update"]
    assert b["query"]["whoosh"] == a["query"]["whoosh"]  # skipped: the earlier run's figures
    assert set(b["query"]["kb"]["types"]) == set(corpus.QUERY_TYPES)
    names = [c["name"] for c in b["checks"]]
    assert not any(n.startswith(("/api/search", "serving worker")) for n in names)
    assert "query p95 phrase" in names
    # Counted again from the store, which the first run's update edited (an article may gain or lose a section).
    assert a["sections"] == sections and abs(b["sections"] - sections) <= 4 and "postgresql" not in b
    assert b["sections"] == count_sections(data_paths(work / "n200" / "data")["store"])
    assert LINE.match(second.output.strip().splitlines()[-1])
