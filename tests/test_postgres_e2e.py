"""With DATABASE_URL set, kb's commands and pages search PostgreSQL: reindex with zero downtime, update, check,
stats, /healthz and `kb eval` in a scratch schema (the data directory's kb.toml names the test's database)."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time

import pytest

from kb.cli import cli
from kb.models import Article, Section
from kb.web import create_app

pytestmark = pytest.mark.parametrize("data_backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)],
                                     indirect=True)

ARTICLES = 120


def article(n: int, audience: str = "public") -> Article:
    text = f"Retinoids treat acne number {n}. Sunscreen protects skin; azelaic acid helps rosacea {n % 7}."
    return Article(url=f"https://clinic.example/a/{n}", title=f"Acne note {n}", text=text, site="clinic.example",
                   published="2024-01-02", audience=audience, categories=["Acne"], tags=[f"t{n % 4}"],
                   sections=[Section("Treatment", "treatment", text)])


def invoke(runner, data_backend, *args: str):
    result = runner.invoke(cli, ["--data-dir", str(data_backend.dir), *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def stored(data_backend) -> list[int]:
    with data_backend.open_store() as store:
        return [store.save_article(article(n, "staff" if n % 10 == 0 else "public"))[0] for n in range(ARTICLES)]


def healthz(data_backend):
    app = create_app({"DATA_DIR": str(data_backend.dir), "TESTING": True, "QUERY_LOG": False})
    try:
        response = app.test_client().get("/healthz")
        return response.status_code, response.get_json()
    finally:
        app.extensions["kb"].close()


def test_healthz_is_503_before_the_first_build_then_200_on_the_generation(data_backend, stored, runner) -> None:
    status, facts = healthz(data_backend)
    assert status == 503 and facts["ok"] is False and facts["index"] == "missing" and facts["store"] == "ok"
    invoke(runner, data_backend, "reindex")
    status, facts = healthz(data_backend)
    assert status == 200 and facts["ok"] is True and re.fullmatch(r"postgresql:\d+", facts["index"])
    assert not data_backend.paths["index"].exists() and not data_backend.paths["store"].exists()


def test_reindex_keeps_readers_answering_then_check_is_clean(data_backend, stored, runner) -> None:
    from kb.search.pg import PgSearcher

    invoke(runner, data_backend, "reindex")
    searcher = PgSearcher(data_backend.url)
    totals: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + 30  # bounded, whatever happens to the rebuild
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                totals.append(searcher.search("retinoids acne", audiences=("public",)).total)
            except BaseException as exc:  # any failure is what this test counts
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(2):  # two swaps while the reader runs
            assert "reindex: 120 articles indexed" in invoke(runner, data_backend, "reindex").output
    finally:
        stop.set()
        reader.join()
        searcher.close()
    assert failures == [] and len(totals) >= 3
    assert set(totals) == {ARTICLES - ARTICLES // 10}  # every answer came from a whole generation
    report = json.loads(invoke(runner, data_backend, "check", "--json").output)
    assert report["ok"] and report["index_documents"] == ARTICLES and report["generation"].startswith("postgresql:")


def test_update_applies_a_change_and_check_repair_fixes_a_stale_document_in_place(data_backend, stored,
                                                                                  runner) -> None:
    invoke(runner, data_backend, "reindex")
    assert "index: 0 indexed, 0 removed" in invoke(runner, data_backend, "update").output
    with data_backend.open_store() as store:
        changed = store.get_article(stored[1])
        changed.text += " Isotretinoin is the last resort."
        changed.sections = [Section("Treatment", "treatment", changed.text)]
        store.save_article(changed)
    stats = json.loads(invoke(runner, data_backend, "stats", "--json").output)["index"]
    assert stats["pending_changes"] == 1 and stats["documents"] == ARTICLES and stats["size_bytes"] > 0
    check = runner.invoke(cli, ["--data-dir", str(data_backend.dir), "check", "--json"])
    assert check.exit_code == 1 and json.loads(check.output)["stale"] == [stored[1]]
    repaired = json.loads(invoke(runner, data_backend, "check", "--repair", "--json").output)
    assert repaired["repaired"] and repaired["after"]["stale"] == []
    assert repaired["after"]["generation"] == repaired["generation"]  # fixed in place, not rebuilt
    found = json.loads(invoke(runner, data_backend, "search", "isotretinoin", "--json").output)
    assert [r["id"] for r in found["results"]] == [stored[1]]
    with data_backend.open_store() as store:
        store.save_article(article(500))
    # the repair changed the generation in place without advancing its store sequence (as on Whoosh): the next
    # update replays the repaired article with the new one
    assert "index: 2 indexed, 0 removed" in invoke(runner, data_backend, "update").output
    assert json.loads(invoke(runner, data_backend, "stats", "--json").output)["index"]["pending_changes"] == 0


def test_eval_runs_kb_on_postgresql_in_a_scratch_schema_it_drops(data_backend, tmp_path, runner) -> None:
    from tests.pgcluster import connect

    collection = tmp_path / "c"
    collection.mkdir()
    docs = [{"id": "d1", "title": "", "body": "Rosacea treatment: metronidazole gel daily."},
            {"id": "d2", "title": "", "body": "Melasma brings brown patches; sunscreen helps."}]
    with gzip.open(collection / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(d) + "\n" for d in docs))
    (collection / "queries.jsonl").write_text(json.dumps({"qid": "q1", "query": "brown patches melasma"}) + "\n")
    (collection / "qrels.tsv").write_text("q1\td2\t1\n")
    result = invoke(runner, data_backend, "eval", str(collection))
    assert re.fullmatch(r"nDCG@10: kb=1\.000 whoosh=\d\.\d{3} fts5=\d\.\d{3} queries=1",
                        result.stdout.strip().splitlines()[-1])
    assert "PostgreSQL" in result.stderr
    with connect(data_backend.url) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kb_eval%'")]
    assert schemas == []
