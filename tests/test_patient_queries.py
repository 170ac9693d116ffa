"""Used as a patient would over the demo site: typos, questions and lay words find the right article,
and snippets mark only what matched, with headings kept apart from the next sentence."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from kb import config
from kb.demo import running_demo_site
from kb.index import rebuild
from kb.pipeline import crawl_source
from kb.search import Searcher
from kb.sources import source_from_url
from kb.store import open_store

#: (query as typed, expected correction or None, article path expected first)
PATIENT_QUERIES = [
    ("psorisis", "psoriasis", "/blog/psoriasis-plaques-and-treatments/"),
    ("excema", "eczema", "/blog/eczema-atopic-dermatitis/"),
    ("rosacae", "rosacea", "/blog/rosacea-triggers/"),
    ("melasama", "melasma", "/blog/melasma-mask-of-pregnancy/"),
    ("how often should I get a skin check", None, "/faq/"),
    ("isotretinoin dosing", None, "/blog/isotretinoin-accutane-what-to-expect/"),
    ("zits", None, "/blog/acne-breakouts-what-helps/"),
    ("wart freezing", None, "/blog/warts-common-and-plantar/"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("patients")
    settings = config.load({"DATA_DIR": str(data_dir), "CRAWL_DELAY": 0.0}, environ={})
    paths = config.data_paths(data_dir)
    with running_demo_site() as base_url, open_store(paths["store"]) as store:
        assert crawl_source(source_from_url(base_url), store, settings).errors == 0
        rebuild(store, paths["index"])
    searcher = Searcher(paths["index"])
    yield searcher
    searcher.close()


def marks(snippet: str) -> list[str]:
    return [m.casefold() for m in re.findall(r"<mark>(.*?)</mark>", snippet)]


@pytest.mark.parametrize("query,corrected,expected", PATIENT_QUERIES, ids=[q for q, _, _ in PATIENT_QUERIES])
def test_patient_query_finds_its_article(demo, query, corrected, expected) -> None:
    results = demo.search(query, audiences=("public",))
    assert results.corrected_query == corrected and results.query == query
    assert urlsplit(results.hits[0].url).path == expected
    if corrected is None:
        assert results.suggestions == []  # no did-you-mean on correct words


def test_question_words_neither_match_nor_light_up(demo) -> None:
    results = demo.search("how often should I get a skin check", audiences=("public",))
    deciding = demo.search("skin OR check", audiences=("public",)).total
    assert results.total == deciding  # "how", "often", "should" alone no longer match a document
    for hit in results.hits:
        assert not {"a", "how", "often", "should", "i", "get"} & set(marks(hit.snippet_html)), hit.snippet_html
    for hit in demo.search("sunscreen for kids", audiences=("public",)).hits:
        assert "for" not in marks(hit.snippet_html)
    only = demo.search("how", audiences=("public",))  # a query of question words alone still works
    assert only.total and "how" in marks(" ".join(h.snippet_html for h in only.hits))


def test_synonym_phrases_light_up_whole_and_stems_stay_exact(demo) -> None:
    for hit in demo.search("vbeam laser", audiences=("public",)).hits:
        assert "pulsed" not in marks(hit.snippet_html) and "intense" not in marks(hit.snippet_html)
    top = demo.search("vbeam laser", audiences=("public",)).hits[0]
    assert "pulsed dye laser" in marks(top.snippet_html)
    for hit in demo.search("sunscreen", audiences=("public",)).hits:
        assert not {"sunglasses", "sunburn", "sun"} & set(marks(hit.snippet_html)), hit.snippet_html


def test_headings_do_not_run_into_the_next_sentence(demo) -> None:
    snippet = demo.search("vbeam laser", audiences=("public",)).hits[0].snippet_html
    assert "works · The <mark>VBeam</mark> emits" in snippet
    assert "\n" not in snippet and not re.search(r"[a-z] [A-Z][a-z]+ <mark>VBeam</mark> emits", snippet)
