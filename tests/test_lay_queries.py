"""Patients' words find the right demo articles: Recall@10 over the hand-written lay-query set."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kb import config
from kb.demo import running_demo_site
from kb.index import rebuild
from kb.pipeline import crawl_source
from kb.search import Searcher
from kb.sources import source_from_url
from kb.store import open_store

QUERIES = tomllib.loads((Path(__file__).parent / "data" / "lay_queries.toml").read_text("utf-8"))["query"]


@pytest.fixture(scope="module")
def demo_searcher(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("demo")
    settings = config.load({"DATA_DIR": str(data_dir), "CRAWL_DELAY": 0.0}, environ={})
    paths = config.data_paths(data_dir)
    with running_demo_site() as base_url, open_store(paths["store"]) as store:
        stats = crawl_source(source_from_url(base_url), store, settings)
        assert stats.errors == 0 and stats.stored >= 30
        rebuild(store, paths["index"])
    searcher = Searcher(paths["index"])
    yield searcher
    searcher.close()


def _found(searcher: Searcher, query: dict) -> bool:
    hits = searcher.search(query["text"], per_page=10, audiences=("public",)).hits
    return any(urlsplit(h.url).path in query["expected"] for h in hits)


def test_lay_query_set_is_large_enough() -> None:
    assert len(QUERIES) >= 40
    assert len({q["text"] for q in QUERIES}) == len(QUERIES)


def test_recall_at_10_over_lay_queries(demo_searcher: Searcher) -> None:
    missed = [q["text"] for q in QUERIES if not _found(demo_searcher, q)]
    recall = 1 - len(missed) / len(QUERIES)
    assert recall >= 0.9, f"Recall@10 {recall:.3f} < 0.9; missed: {missed}"


@pytest.mark.parametrize("query", [q for q in QUERIES if "needs vocabulary" in q.get("note", "")],
                         ids=lambda q: q["text"])
def test_vocabulary_queries_each_find_their_article(demo_searcher: Searcher, query: dict) -> None:
    """Words that never occur in the article itself are found only through the medical vocabulary."""
    assert _found(demo_searcher, query), query
