"""`kb bench extract`: both extractors scored by the benchmark's metric, exact summary line, floor gate."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kb.bench import extract as bench

SUMMARY_RE = re.compile(r"^extraction F1: kb=\d\.\d{3} trafilatura=\d\.\d{3} pages=3$")

PAGES = {
    "p1": ("https://clinic.example/acne", """<html><head><title>Acne | Clinic</title></head><body>
<nav><a href="/">Home</a> <a href="/acne">Acne</a> <a href="/eczema">Eczema</a></nav>
<article><h1>Acne</h1>
<p>Acne is a common skin condition in which hair follicles become blocked with oil and dead skin cells.</p>
<p>It most often affects the face, forehead, chest, upper back and shoulders of teenagers and young adults.</p>
<p>Mild acne usually responds to over-the-counter washes and gels containing benzoyl peroxide.</p>
</article><footer>Copyright Clinic. All rights reserved. Privacy policy and terms of use.</footer></body></html>""",
           "Acne is a common skin condition in which hair follicles become blocked with oil and dead skin cells.\n\n"
           "It most often affects the face, forehead, chest, upper back and shoulders of teenagers and young adults."
           "\n\nMild acne usually responds to over-the-counter washes and gels containing benzoyl peroxide."),
    "p2": ("https://clinic.example/hives", """<html><body><main>
<p>Hives are raised, itchy welts on the skin that usually fade within a day without leaving a mark.</p>
<h2>Causes</h2>
<p>Common triggers include infections, certain foods, medicines such as aspirin, heat and pressure.</p>
</main></body></html>""",
           "Hives are raised, itchy welts on the skin that usually fade within a day without leaving a mark.\n\n"
           "Causes\n\nCommon triggers include infections, certain foods, medicines such as aspirin, heat and "
           "pressure."),
    # The gold keeps a sidebar sentence that kb rightly drops, so kb scores below 1.0 on this set.
    "p3": ("https://clinic.example/warts", """<html><body><article>
<p>Warts are small, rough growths caused by the human papillomavirus and often clear up on their own.</p>
<p>Freezing with liquid nitrogen is a common treatment when warts are painful or spreading.</p>
</article><aside class="sidebar"><p>Our clinic opens at eight every weekday morning for walk-in patients.</p></aside>
</body></html>""",
           "Warts are small, rough growths caused by the human papillomavirus and often clear up on their own.\n\n"
           "Freezing with liquid nitrogen is a common treatment when warts are painful or spreading.\n\n"
           "Our clinic opens at eight every weekday morning for walk-in patients."),
}


@pytest.fixture
def gold(tmp_path: Path) -> Path:
    root = tmp_path / "gold"
    (root / "html").mkdir(parents=True)
    (root / "ground_truth").mkdir()
    lines = []
    for page_id, (url, html, truth) in PAGES.items():
        (root / "html" / f"{page_id}.html.gz").write_bytes(gzip.compress(html.encode("utf-8")))
        (root / "ground_truth" / f"{page_id}.txt").write_text(truth, encoding="utf-8")
        lines.append(json.dumps({"id": page_id, "url": url}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def floor_file(tmp_path: Path, value: float) -> Path:
    path = tmp_path / "floor.json"
    path.write_text(json.dumps({"f1": value}), encoding="utf-8")
    return path


def expected_kb_f1() -> float:
    """kb's F1 on the tiny set by hand: p1, p2 exact; p3 misses the sidebar sentence's shingles."""
    p3_gold = PAGES["p3"][2]
    p3_pred = p3_gold.rsplit("\n\n", 1)[0]
    gold_shingles = sum(bench.shingles(p3_gold).values())
    pred_shingles = sum(bench.shingles(p3_pred).values())
    # every predicted shingle is in the gold; the gold has extra ones (sidebar and the seam before it)
    recall_p3 = pred_shingles / gold_shingles
    p, r = 1.0, (1.0 + 1.0 + recall_p3) / 3
    return 2 * p * r / (p + r)


def test_summary_line_and_table(gold: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(gold, floor_path=None) == 0
    out = capsys.readouterr().out.splitlines()
    assert SUMMARY_RE.match(out[-1]), out[-1]
    assert out[-1].startswith(f"extraction F1: kb={expected_kb_f1():.3f} ")
    assert out[0].split()[:5] == ["page", "kb", "P", "kb", "R"]
    assert [line.split()[0] for line in out[1:4]] == ["p1", "p2", "p3"]


def test_floor_above_score_fails(gold: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert expected_kb_f1() < 0.99
    assert bench.run(gold, floor_path=floor_file(tmp_path, 0.99)) == 1
    captured = capsys.readouterr()
    assert SUMMARY_RE.match(captured.out.splitlines()[-1])
    assert "below the floor 0.990" in captured.err


def test_floor_below_score_passes(gold: Path, tmp_path: Path) -> None:
    assert bench.run(gold, floor_path=floor_file(tmp_path, 0.5)) == 0


def test_json_output(gold: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(gold, json_out=True, floor_path=None) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["id"] for p in report["pages"]] == ["p1", "p2", "p3"]
    assert report["pages"][0]["kb"] == {"precision": 1.0, "recall": 1.0}
    assert report["kb"]["f1"] == pytest.approx(expected_kb_f1())
    assert SUMMARY_RE.match(report["summary"])
    assert captured.err.splitlines()[-1] == report["summary"]


def test_click_command(gold: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(bench.extract_command, [str(gold), "--floor", str(floor_file(tmp_path, 0.5))])
    assert ok.exit_code == 0, ok.output
    assert SUMMARY_RE.match(ok.stdout.splitlines()[-1])
    low = runner.invoke(bench.extract_command, [str(gold), "--floor", str(floor_file(tmp_path, 0.999))])
    assert low.exit_code == 1
    assert "below the floor" in low.stderr


def test_shipped_floor_is_valid() -> None:
    floor = bench.read_floor(bench.DEFAULT_FLOOR)
    assert floor is not None and 0.9 <= floor < 1.0


def test_bad_floor_and_gold(tmp_path: Path) -> None:
    bad = tmp_path / "floor.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(click.ClickException, match="f1"):
        bench.read_floor(bad)
    with pytest.raises(click.ClickException, match="manifest.jsonl"):
        bench.run(tmp_path)


def test_missing_trafilatura_has_a_remedy(gold: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import now raises ImportError
    with pytest.raises(click.ClickException, match="pip install trafilatura"):
        bench.run(gold)


def test_metric_by_hand(tmp_path: Path) -> None:
    # gold 4-grams: (a b c d), (b c d e); prediction: (a b c d) -> tp=1, fn=1 -> P=1, R=0.5
    t = bench.tp_fp_fn("a b c d e", "a b c d")
    assert t == (0.5, 0.0, 0.5)
    assert (bench.precision(*t), bench.recall(*t)) == (1.0, 0.5)
    empty = bench.tp_fp_fn("a b c d e", "")
    assert bench.recall(*empty) == 0.0
    short = bench.tp_fp_fn("Hi there", "Hi there")  # fewer than 4 tokens: one shorter shingle
    assert bench.precision(*short) == bench.recall(*short) == 1.0
    # precision is averaged only over pages with a prediction, recall over all pages
    agg = bench.aggregate([t, empty])
    assert agg["precision"] == 1.0 and agg["recall"] == 0.25
    assert agg["f1"] == pytest.approx(2 * 1.0 * 0.25 / 1.25)
