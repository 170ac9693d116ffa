"""`kb eval DIR`: retrieval quality of kb against plain Whoosh and SQLite FTS5 on the same documents.

DIR holds docs.jsonl.gz (or docs.jsonl), queries.jsonl and qrels.tsv (see ../shared/eval/README.md).
All three systems index the same documents in the same run, so the comparison does not depend
on the machine: kb through its real path (Store -> kb.index.rebuild -> kb.search.Searcher), the
baselines as a user would set them up without kb (stemming analyzer, BM25, OR of the query words).
The last line of the text output is a stable contract:

    nDCG@10: kb=0.612 whoosh=0.571 fts5=0.566 queries=300
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import click

from kb.bench import baselines
from kb.errors import KBError

log = logging.getLogger(__name__)

K = 10
SYSTEMS = ("kb", "whoosh", "fts5")


@dataclass
class Collection:
    docs: list[dict[str, Any]]
    queries: list[dict[str, str]]  # {"qid", "query"}, only those with judgements
    qrels: dict[str, dict[str, int]]  # qid -> docid -> grade


@dataclass
class SystemRun:
    name: str
    rankings: dict[str, list[str]] = field(default_factory=dict)
    build_seconds: float = 0.0
    query_ms: list[float] = field(default_factory=list)


# -- loading -------------------------------------------------------------------------------------

def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_collection(directory: Path) -> Collection:
    """Read one collection directory; KBError with a remedy when a file is missing or malformed."""
    directory = Path(directory)
    docs_path = next((p for p in (directory / "docs.jsonl.gz", directory / "docs.jsonl") if p.is_file()), None)
    missing = [name for name, p in (("docs.jsonl[.gz]", docs_path), ("queries.jsonl", directory / "queries.jsonl"),
                                    ("qrels.tsv", directory / "qrels.tsv")) if p is None or not Path(p).is_file()]
    if missing:
        raise KBError(f"{directory} is not an evaluation collection: missing {', '.join(missing)}.",
                      "Point `kb eval` at a directory with docs.jsonl.gz, queries.jsonl and qrels.tsv.")
    try:
        with _open_text(docs_path) as fh:
            docs = [json.loads(line) for line in fh if line.strip()]
        with open(directory / "queries.jsonl", encoding="utf-8") as fh:
            queries = [json.loads(line) for line in fh if line.strip()]
        qrels: dict[str, dict[str, int]] = {}
        with open(directory / "qrels.tsv", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and int(parts[2]) > 0:
                    qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    except (ValueError, OSError, EOFError) as exc:
        raise KBError(f"Could not read the collection in {directory}: {exc}", "Check the files' format.") from None
    for doc in docs:
        if "id" not in doc:
            raise KBError(f"A document in {docs_path} has no id.", "Every line needs {\"id\", \"body\"}.")
        doc["id"] = str(doc["id"])
    queries = [{"qid": str(q["qid"]), "query": str(q["query"])} for q in queries if str(q.get("qid")) in qrels]
    return Collection(docs=docs, queries=queries, qrels=qrels)


def sample_queries(queries: list[dict[str, str]], limit: int | None, seed: int) -> list[dict[str, str]]:
    """A seeded sample of `limit` queries (all when limit is None or larger), in file order."""
    if limit is None or limit >= len(queries):
        return list(queries)
    chosen = set(random.Random(seed).sample(range(len(queries)), max(0, limit)))
    return [q for i, q in enumerate(queries) if i in chosen]


# -- metrics -------------------------------------------------------------------------------------

def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    """nDCG@k with graded gains 2^rel - 1 (binary judgements: 1 per relevant doc)."""
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr_at(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    relevant = {d for d, g in rels.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


METRICS: dict[str, Callable[[list[str], dict[str, int]], float]] = {
    "nDCG@10": ndcg_at, "MRR@10": mrr_at, "Recall@10": recall_at,
}


def score_run(run: SystemRun, collection: Collection, queries: list[dict[str, str]]) -> dict[str, Any]:
    per_query: dict[str, dict[str, float]] = {}
    for q in queries:
        ranked = run.rankings.get(q["qid"], [])
        per_query[q["qid"]] = {name: fn(ranked, collection.qrels[q["qid"]]) for name, fn in METRICS.items()}
    n = len(per_query) or 1
    means = {name: sum(s[name] for s in per_query.values()) / n for name in METRICS}
    latencies = sorted(run.query_ms)
    return {
        **means,
        "build_seconds": round(run.build_seconds, 3),
        "docs_per_second": round(len(collection.docs) / run.build_seconds, 1) if run.build_seconds else None,
        "query_ms_p50": round(_percentile(latencies, 50), 2),
        "query_ms_p95": round(_percentile(latencies, 95), 2),
        "per_query": per_query,
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    i = min(len(values) - 1, max(0, math.ceil(pct / 100.0 * len(values)) - 1))
    return values[i]


# -- systems -------------------------------------------------------------------------------------

def _timed_queries(run: SystemRun, queries: list[dict[str, str]], fn: Callable[[str], list[str]]) -> None:
    for q in queries:
        start = time.perf_counter()
        run.rankings[q["qid"]] = fn(q["query"])
        run.query_ms.append((time.perf_counter() - start) * 1000.0)


def _unique_urls(docs: list[dict[str, Any]]) -> list[str]:
    """The store keys articles by URL; collections split one page into several answers."""
    seen: set[str] = set()
    out = []
    for doc in docs:
        url = str(doc.get("url") or f"https://eval.invalid/{doc['id']}")
        if url in seen:
            url = f"{url.split('#')[0]}#{doc['id']}"
        seen.add(url)
        out.append(url)
    return out


def run_kb(collection: Collection, queries: list[dict[str, str]], workdir: Path,
           database_url: str | None = None) -> SystemRun:
    """kb end to end: articles into a Store, kb.index.rebuild, the backend's searcher.

    With `database_url` (the DATABASE_URL setting) the store and the search generation are PostgreSQL's, in a
    scratch schema of that database dropped afterwards; else a SQLite file and a Whoosh index in `workdir`.
    """
    if database_url is None:
        return _run_kb_on(collection, queries, workdir, str(workdir / "kb.sqlite3"))
    from kb.store.postgres_search import scratch_schema

    with scratch_schema(database_url, prefix="kb_eval") as url:
        return _run_kb_on(collection, queries, workdir, url)


def _run_kb_on(collection: Collection, queries: list[dict[str, str]], workdir: Path, location: str) -> SystemRun:
    """Load, index and query the collection in the store at `location` (a SQLite path or a PostgreSQL URL)."""
    from kb import index as kb_index
    from kb.models import Article
    from kb.search.pg import open_searcher
    from kb.store import open_store

    run = SystemRun("kb")
    start = time.perf_counter()
    ids: dict[int, str] = {}
    with open_store(location) as store:
        with store.transaction():
            for doc, url in zip(collection.docs, _unique_urls(collection.docs)):
                article = Article(url=url, title=str(doc.get("title") or ""), text=str(doc.get("body") or ""),
                                  site=urlsplit(url).hostname or "", kind="article", audience="public")
                article_id, _ = store.save_article(article, source="eval")
                ids[article_id] = doc["id"]
        kb_index.rebuild(store, workdir / "whoosh", force=True)
    run.build_seconds = time.perf_counter() - start
    database = location if "://" in location else None
    searcher = open_searcher({"DATABASE_URL": database}, workdir / "whoosh")
    try:
        _timed_queries(run, queries, lambda text: [
            ids[h.id] for h in searcher.search(text, per_page=K, audiences=("public",)).hits])
    finally:
        searcher.close()
    return run


#: kb eval only ranks, so plain Whoosh keeps no stored text to highlight (see WhooshBaseline.build).
_BUILDERS: dict[str, Callable[[Path, Iterable[baselines.Doc]], int]] = {
    "fts5": baselines.Fts5Baseline.build, "whoosh": partial(baselines.WhooshBaseline.build, store_text=False),
}


def baseline_query(text: str) -> baselines.Query:
    """kb eval's query for the baselines: the OR of every word, no query syntax, stop words kept."""
    return baselines.Query(text)


def run_baseline(name: str, collection: Collection, queries: list[dict[str, str]], workdir: Path) -> SystemRun:
    """A baseline from kb.bench.baselines (FTS5 or plain Whoosh): the collection in, the OR of each query's words."""
    run = SystemRun(name)
    path = workdir / name
    docs = (baselines.Doc(d["id"], str(d.get("title") or ""), str(d.get("body") or "")) for d in collection.docs)
    start = time.perf_counter()
    _BUILDERS[name](path, docs)
    run.build_seconds = time.perf_counter() - start
    with baselines.BASELINES[name](path) as opened:
        _timed_queries(run, queries, lambda text: opened.search(baseline_query(text), K))
    return run


RUNNERS: dict[str, Callable[[Collection, list[dict[str, str]], Path], SystemRun]] = {
    "kb": run_kb, "whoosh": partial(run_baseline, "whoosh"), "fts5": partial(run_baseline, "fts5"),
}


# -- report --------------------------------------------------------------------------------------

def summary_line(scores: dict[str, dict[str, Any]], queries: int) -> str:
    parts = " ".join(f"{name}={scores[name]['nDCG@10']:.3f}" for name in SYSTEMS if name in scores)
    return f"nDCG@10: {parts} queries={queries}"


def evaluate(collection_dir: Path, *, limit: int | None = None, seed: int = 0,
             systems: Iterable[str] = SYSTEMS, progress: Callable[[str], None] | None = None,
             database_url: str | None = None) -> dict[str, Any]:
    """Index the collection into every system and score them on the same (sampled) queries.

    `database_url` (DATABASE_URL) makes the "kb" system the PostgreSQL backend, in a scratch schema.
    """
    collection = load_collection(Path(collection_dir))
    queries = sample_queries(collection.queries, limit, seed)
    runners = {**RUNNERS, "kb": partial(run_kb, database_url=database_url)}
    report: dict[str, Any] = {"collection": str(collection_dir), "docs": len(collection.docs),
                              "queries": len(queries), "seed": seed, "limit": limit,
                              "backend": "postgresql" if database_url else "whoosh", "systems": {}}
    with tempfile.TemporaryDirectory(prefix="kb-eval-") as tmp:
        for name in systems:
            if progress:
                progress(f"{name}: indexing {len(collection.docs)} documents, running {len(queries)} queries")
            workdir = Path(tmp) / name
            workdir.mkdir()
            run = runners[name](collection, queries, workdir)
            report["systems"][name] = score_run(run, collection, queries)
    report["summary"] = summary_line(report["systems"], len(queries))
    return report


def run(collection_dir: Path, *, json_out: bool = False, limit: int | None = None, seed: int = 0,
        database_url: str | None = None) -> int:
    """Print the comparison (text, or JSON with per-query scores); returns the exit code."""
    def progress(message: str) -> None:
        click.echo(f"eval: {message}", err=True)

    if database_url:
        progress("kb runs on PostgreSQL (DATABASE_URL), in a scratch schema dropped afterwards")
    report = evaluate(Path(collection_dir), limit=limit, seed=seed, progress=progress, database_url=database_url)
    if json_out:
        click.echo(json.dumps(report, indent=1, sort_keys=False))
        return 0
    click.echo(f"collection: {report['collection']}  docs={report['docs']}  queries={report['queries']}")
    click.echo(f"{'system':8} {'nDCG@10':>8} {'MRR@10':>8} {'Recall@10':>10} {'build s':>8} {'docs/s':>8} "
               f"{'q p50 ms':>9} {'q p95 ms':>9}")
    for name, s in report["systems"].items():
        click.echo(f"{name:8} {s['nDCG@10']:8.3f} {s['MRR@10']:8.3f} {s['Recall@10']:10.3f} {s['build_seconds']:8.1f} "
                   f"{s['docs_per_second'] or 0:8.0f} {s['query_ms_p50']:9.2f} {s['query_ms_p95']:9.2f}")
    click.echo(report["summary"])
    return 0


@click.command("eval")
@click.argument("collection_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_out", is_flag=True, help="Print every metric and per-query scores as JSON.")
@click.option("--limit", type=click.IntRange(1, None), default=None,
              help="Score a seeded sample of this many queries (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the query sample.")
def eval_command(collection_dir: Path, json_out: bool, limit: int | None, seed: int) -> None:
    """Compare kb's ranking with plain Whoosh and SQLite FTS5 on a judged collection (nDCG@10, MRR@10).

    kb runs on the backend the settings select: PostgreSQL when DATABASE_URL is set.
    """
    try:
        code = run(collection_dir, json_out=json_out, limit=limit, seed=seed, database_url=_database_url())
    except KBError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise SystemExit(code)


def _database_url() -> str | None:
    """DATABASE_URL of the invoking `kb` command's settings (or of the environment when run alone)."""
    from kb.config import load
    from kb.search.pg import database_url

    settings = getattr(click.get_current_context().find_root().obj, "settings", None)
    return database_url(settings if settings is not None else load({}))
