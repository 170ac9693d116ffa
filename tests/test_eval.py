"""kb.bench.eval: metrics on hand-checked rankings, the three systems on a tiny collection, output format."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb.bench import eval as kb_eval
from kb.bench.baselines import fts5_query
from kb.errors import KBError

DOCS = [
    {"id": "d1", "url": "https://ex.example/rosacea", "title": "", "body": "Rosacea causes facial redness and flushing."},
    {"id": "d2", "url": "https://ex.example/rosacea", "title": "", "body": "Rosacea treatment: metronidazole gel daily."},
    {"id": "d3", "url": "https://ex.example/acne", "title": "", "body": "Acne vulgaris causes pimples on the face."},
    {"id": "d4", "url": "https://ex.example/melasma", "title": "", "body": "Melasma brings brown patches; sunscreen helps."},
]
QUERIES = [
    {"qid": "q1", "query": "What is the treatment for rosacea?"},
    {"qid": "q2", "query": "What causes acne?"},
    {"qid": "q3", "query": "brown patches melasma"},
    {"qid": "q4", "query": "a question nobody judged"},
]
QRELS = "q1\td2\t1\nq2\td3\t1\nq3\td4\t1\n"


def write_collection(path: Path, gz: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(d) + "\n" for d in DOCS)
    if gz:
        with gzip.open(path / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.write(lines)
    else:
        (path / "docs.jsonl").write_text(lines, encoding="utf-8")
    (path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES), encoding="utf-8")
    (path / "qrels.tsv").write_text(QRELS, encoding="utf-8")
    return path


def test_metrics_on_a_hand_checked_ranking():
    ranked = ["d2", "d1", "d3"]
    rels = {"d1": 1, "d3": 1}
    # DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert kb_eval.ndcg_at(ranked, rels) == pytest.approx(expected)
    assert round(expected, 4) == 0.6934
    assert kb_eval.mrr_at(ranked, rels) == 0.5
    assert kb_eval.recall_at(ranked, rels) == 1.0
    assert kb_eval.recall_at(["d2"], rels) == 0.0
    assert kb_eval.ndcg_at(["d1", "d3"], rels) == pytest.approx(1.0)
    assert kb_eval.ndcg_at([], rels) == 0.0 and kb_eval.mrr_at([], rels) == 0.0
    assert kb_eval.mrr_at(["x"] * 10 + ["d1"], rels) == 0.0  # rank 11 is outside the cut-off


def test_fts5_query_quotes_every_word():
    query = kb_eval.baseline_query('What is "AND" (are) NEAR? what')
    assert fts5_query(query) == '"what" OR "is" OR "and" OR "are" OR "near"'
    assert fts5_query(kb_eval.baseline_query("?!")) == ""


def test_sample_is_seeded_and_keeps_file_order():
    queries = [{"qid": str(i), "query": str(i)} for i in range(50)]
    a = kb_eval.sample_queries(queries, 10, seed=1)
    assert a == kb_eval.sample_queries(queries, 10, seed=1)
    assert a != kb_eval.sample_queries(queries, 10, seed=2)
    assert [int(q["qid"]) for q in a] == sorted(int(q["qid"]) for q in a)
    assert kb_eval.sample_queries(queries, None, 0) == queries


def test_run_prints_table_and_exact_last_line(tmp_path, capsys):
    collection = write_collection(tmp_path / "c")
    assert kb_eval.run(collection) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"nDCG@10: kb=\d\.\d{3} whoosh=\d\.\d{3} fts5=\d\.\d{3} queries=3", out[-1])
    assert any(line.startswith("kb ") for line in out) and any(line.startswith("fts5 ") for line in out)


def test_json_report_has_every_metric_and_per_query_scores(tmp_path, capsys):
    collection = write_collection(tmp_path / "c", gz=False)
    assert kb_eval.run(collection, json_out=True, limit=2, seed=3) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 2 and report["docs"] == 4
    assert set(report["systems"]) == {"kb", "whoosh", "fts5"}
    for scores in report["systems"].values():
        assert {"nDCG@10", "MRR@10", "Recall@10", "per_query", "query_ms_p95", "docs_per_second"} <= set(scores)
        assert len(scores["per_query"]) == 2
        mean = sum(q["nDCG@10"] for q in scores["per_query"].values()) / 2
        assert scores["nDCG@10"] == pytest.approx(mean)
    assert report["summary"].startswith("nDCG@10: kb=")


def test_every_system_finds_the_obvious_answers(tmp_path):
    report = kb_eval.evaluate(write_collection(tmp_path / "c"))
    for name, scores in report["systems"].items():
        assert scores["per_query"]["q3"]["MRR@10"] == 1.0, name  # distinctive words: every engine gets it
    kb = report["systems"]["kb"]["per_query"]
    assert kb["q1"]["MRR@10"] == 1.0  # "treatment" question: the treatment answer, not the other rosacea one


def test_missing_files_raise_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KBError) as excinfo:
        kb_eval.load_collection(tmp_path / "empty")
    assert "qrels.tsv" in excinfo.value.message and excinfo.value.remedy


def test_click_command(tmp_path):
    collection = write_collection(tmp_path / "c")
    result = CliRunner().invoke(kb_eval.eval_command, [str(collection), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"nDCG@10: kb=\d\.\d{3} whoosh=\d\.\d{3} fts5=\d\.\d{3} queries=2",
                        result.output.strip().splitlines()[-1])
    bad = CliRunner().invoke(kb_eval.eval_command, [str(tmp_path)])
    assert bad.exit_code != 0 and "not an evaluation collection" in bad.output
