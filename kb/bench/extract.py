"""Extraction benchmark: kb's extractor against trafilatura on a gold set, with a floor as a quality gate.

A gold dir holds html/{id}.html.gz (UTF-8 pages), ground_truth/{id}.txt (the article body) and
manifest.jsonl ({"id", "url"} per line). Both extractors write their predictions to temporary dirs and
are scored by the same metric, re-implemented here from the shared scorer (scrapinghub's
article-extraction-benchmark `evaluate.py`): word 4-gram shingles as multisets, per-page tp/fp/fn
normalised so each page weighs the same, precision and recall averaged over pages, F1 of the averages.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

log = logging.getLogger(__name__)

NGRAM_N = 4
DEFAULT_FLOOR = Path(__file__).resolve().parent.parent / "data" / "extract_floor.json"

TOKEN_RE = re.compile(r"\w+", re.UNICODE)


# ------------------------------------------------------------------------------------------- the metric

def tokenize(text: str | None) -> list[str]:
    return TOKEN_RE.findall(text or "")


def shingles(text: str | None, n: int = NGRAM_N) -> Counter:
    toks = tokenize(text)
    grams = (tuple(toks[i:i + n]) for i in range(max(1, len(toks) - n + 1)))
    return Counter(g for g in grams if g)


def tp_fp_fn(gold: str, pred: str) -> tuple[float, float, float]:
    """Shingle overlap of one page, normalised to sum to 1 so every page weighs the same."""
    g, p = shingles(gold), shingles(pred)
    tp = fp = fn = 0.0
    for k in g.keys() | p.keys():
        gc, pc = g.get(k, 0), p.get(k, 0)
        tp += min(gc, pc)
        fp += max(0, pc - gc)
        fn += max(0, gc - pc)
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fp == 0:
        return 0.0
    return tp / (tp + fp)


def recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    if tp == fn == 0:
        return 0.0
    return tp / (tp + fn)


def aggregate(triples: list[tuple[float, float, float]]) -> dict[str, float]:
    """F1 of the averaged precision and recall (not a mean of per-page F1s), as the benchmark reports."""
    ps = [precision(*t) for t in triples if t[0] + t[1] > 0]
    rs = [recall(*t) for t in triples if t[0] + t[2] > 0]
    p = statistics.mean(ps) if ps else 0.0
    r = statistics.mean(rs) if rs else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"f1": f1, "precision": p, "recall": r}


def score_dirs(gold_dir: Path, pred_dir: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score PRED_DIR/{id}.txt against GOLD/ground_truth/{id}.txt; a missing prediction counts as empty."""
    gold = _load_dir(gold_dir / "ground_truth")
    pred = _load_dir(pred_dir)
    ids = sorted(gold)
    triples = [tp_fp_fn(gold[i], pred.get(i, "")) for i in ids]
    per_page = {
        i: {"precision": precision(*t), "recall": recall(*t)} for i, t in zip(ids, triples)
    }
    summary = aggregate(triples)
    summary["n"] = len(ids)
    return summary, per_page


def _load_dir(path: Path) -> dict[str, str]:
    return {p.name[: -len(".txt")]: p.read_text(encoding="utf-8") for p in path.glob("*.txt")}


# ---------------------------------------------------------------------------------------- the runners

@dataclass
class GoldPage:
    id: str
    url: str
    html: bytes


def load_gold(gold_dir: Path) -> list[GoldPage]:
    """Pages of a gold dir in manifest order; raises click.ClickException when the layout is wrong."""
    manifest = gold_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise click.ClickException(
            f"{gold_dir} has no manifest.jsonl: pass a split folder such as eval/extraction/dev "
            "(html/{id}.html.gz, ground_truth/{id}.txt, manifest.jsonl)."
        )
    pages = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            page_id, url = str(row["id"]), str(row["url"])
        except (ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"{manifest}:{n}: not a {{\"id\", \"url\"}} line ({exc}).") from None
        path = gold_dir / "html" / f"{page_id}.html.gz"
        try:
            html = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise click.ClickException(f"cannot read {path}: {exc}") from None
        pages.append(GoldPage(page_id, url, html))
    if not pages:
        raise click.ClickException(f"{manifest} lists no pages.")
    return pages


def kb_extractor(page: GoldPage) -> str:
    from kb.errors import SkipPage
    from kb.extract import extract

    try:
        return extract(page.html, page.url).text
    except SkipPage:
        return ""


def trafilatura_extractor() -> Callable[[GoldPage], str]:
    """trafilatura is a benchmark-only dependency: imported here, with a remedy when it is missing."""
    try:
        import trafilatura
    except ImportError as exc:
        raise click.ClickException(
            f"trafilatura is needed for the comparison but cannot be imported ({exc}). "
            "Install it with: pip install trafilatura lxml_html_clean"
        ) from None

    def run(page: GoldPage) -> str:
        html = page.html.decode("utf-8", errors="replace")
        return trafilatura.extract(html, url=page.url, include_comments=False) or ""

    return run


def predict(pages: list[GoldPage], extractor: Callable[[GoldPage], str], out_dir: Path) -> float:
    """Write one {id}.txt per page; returns the seconds spent extracting."""
    spent = 0.0
    for page in pages:
        start = time.perf_counter()
        text = extractor(page)
        spent += time.perf_counter() - start
        (out_dir / f"{page.id}.txt").write_text(text, encoding="utf-8")
    return spent


def read_floor(floor_path: Path | None) -> float | None:
    if floor_path is None or not floor_path.is_file():
        return None
    try:
        return float(json.loads(floor_path.read_text(encoding="utf-8"))["f1"])
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{floor_path} is not a {{\"f1\": number}} file ({exc}).") from None


def summary_line(kb_f1: float, other_f1: float, pages: int) -> str:
    return f"extraction F1: kb={kb_f1:.3f} trafilatura={other_f1:.3f} pages={pages}"


def run(gold_dir: Path, *, json_out: bool = False, floor_path: Path | None = None) -> int:
    """Benchmark kb against trafilatura on GOLD_DIR; exit code 1 when kb falls below the floor."""
    gold_dir = Path(gold_dir)
    pages = load_gold(gold_dir)
    other = trafilatura_extractor()
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        kb_dir, other_dir = Path(tmp, "kb"), Path(tmp, "trafilatura")
        kb_dir.mkdir()
        other_dir.mkdir()
        kb_seconds = predict(pages, kb_extractor, kb_dir)
        other_seconds = predict(pages, other, other_dir)
        kb_sum, kb_pages = score_dirs(gold_dir, kb_dir)
        other_sum, other_pages = score_dirs(gold_dir, other_dir)
    urls = {p.id: p.url for p in pages}
    line = summary_line(kb_sum["f1"], other_sum["f1"], int(kb_sum["n"]))
    if json_out:
        report = {
            "kb": kb_sum | {"seconds": round(kb_seconds, 2)},
            "trafilatura": other_sum | {"seconds": round(other_seconds, 2)},
            "pages": [
                {"id": i, "url": urls.get(i, ""), "kb": kb_pages[i], "trafilatura": other_pages.get(i, {})}
                for i in kb_pages
            ],
            "summary": line,
        }
        click.echo(json.dumps(report, indent=1))
        click.echo(line, err=True)
    else:
        click.echo(f"{'page':<12} {'kb P':>6} {'kb R':>6} {'tr P':>6} {'tr R':>6}  url")
        for i, s in kb_pages.items():
            o = other_pages.get(i, {"precision": 0.0, "recall": 0.0})
            click.echo(f"{i[:12]:<12} {s['precision']:6.3f} {s['recall']:6.3f} "
                       f"{o['precision']:6.3f} {o['recall']:6.3f}  {urls.get(i, '')[:70]}")
        click.echo(f"kb: P={kb_sum['precision']:.3f} R={kb_sum['recall']:.3f} {kb_seconds:.2f}s; "
                   f"trafilatura: P={other_sum['precision']:.3f} R={other_sum['recall']:.3f} "
                   f"{other_seconds:.2f}s")
        click.echo(line)
    floor = read_floor(floor_path)
    if floor is not None and round(kb_sum["f1"], 3) < floor:
        click.echo(
            f"kb extraction F1 {kb_sum['f1']:.3f} is below the floor {floor:.3f} in {floor_path}: "
            "a change made extraction worse; fix it, or lower the floor only on purpose.",
            err=True,
        )
        return 1
    return 0


@click.command("extract")
@click.argument("gold_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_out", is_flag=True, help="Print per-page scores as JSON.")
@click.option("--floor", "floor_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_FLOOR,
              show_default=True, help="JSON file {\"f1\": X}; exit 1 when kb scores below X.")
def extract_command(gold_dir: Path, json_out: bool, floor_path: Path) -> None:
    """Score kb's extractor against trafilatura on GOLD_DIR (html/, ground_truth/, manifest.jsonl)."""
    code = run(gold_dir, json_out=json_out, floor_path=floor_path)
    if code:
        sys.exit(code)
