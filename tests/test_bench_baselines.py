"""kb.bench.baselines: FTS5 and plain Whoosh, built on disk from a small corpus and queried for real."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from kb.bench import baselines
from kb.bench.baselines import BASELINES, Doc, Fts5Baseline, Query, WhooshBaseline, fts5_query

DOCS = [
    Doc("rosacea", "Rosacea", "Rosacea causes facial redness, flushing of the cheeks.", ("skin",)),
    Doc("acne", "Acne vulgaris", "Acne causes pimples near the nose, on the chin.", ("acne", "teen")),
    Doc("melasma", "", "Melasma brings brown patches AND freckles; sunscreen helps.", ("pigment",)),
    Doc("laser", "Pulsed dye laser", "The laser treats redness; several sessions of laser light.", ("laser",)),
    Doc("sjogren", "Sjögren syndrome", "Dry skin, dry eyes in Sjögren syndrome.", ()),
]
HOSTILE = ['"(((', "AND", "*", "NEAR", "NEAR(", '"', "-", ")", "NOT", "title:", "^", "a*", "_", "\x00", "{}", "'",
           "acne ; DROP TABLE docs", '"unterminated acne', "acne OR", "ａｃｎｅ"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both baselines built once from DOCS, on disk."""
    root = tmp_path_factory.mktemp("baselines")
    paths = {"fts5": root / "fts5.sqlite3", "whoosh": root / "whoosh"}
    for name, path in paths.items():
        assert BASELINES[name].build(path, iter(DOCS)) == len(DOCS)
    return paths


@pytest.fixture(params=sorted(BASELINES))
def engine(request: pytest.FixtureRequest, built: dict[str, Path]) -> Iterator[baselines.Baseline]:
    with BASELINES[request.param](built[request.param]) as opened:
        yield opened


@pytest.mark.parametrize(("text", "expected"), [
    ("What causes facial flushing?", "rosacea"),
    ("brown patches", "melasma"),
    ("pimples", "acne"),
    ("Sjögren", "sjogren"),
])
def test_each_engine_ranks_the_answer_first(engine: baselines.Baseline, text: str, expected: str) -> None:
    assert engine.search(Query(text))[0] == expected
    ids, total = engine.page(Query(text))
    assert ids[0] == expected and total >= 1


def test_all_words_phrases_and_tags(engine: baselines.Baseline) -> None:
    assert engine.search(Query("redness laser", match_all=True)) == ["laser"]
    assert sorted(engine.search(Query("redness laser"))) == ["laser", "rosacea"]
    assert engine.search(Query('"facial redness"', syntax=True)) == ["rosacea"]
    assert engine.search(Query("causes", tag="acne")) == ["acne"]
    assert engine.page(Query("causes", tag="teen")) == (["acne"], 1)
    assert engine.page(Query("causes", match_all=True, syntax=True), page=2, pagelen=1) == (
        [engine.search(Query("causes"))[1]], 2)


def test_bag_of_words_keeps_question_marks_plain(engine: baselines.Baseline) -> None:
    """kb eval's queries end in "?": without query syntax it is punctuation, never a wildcard."""
    assert engine.search(Query("rosacea?"))[0] == "rosacea"


def test_title_weight_ranks_title_hits_first(tmp_path: Path) -> None:
    """kb bench weighs titles 10x (as kb ranks them first); kb eval keeps bm25's equal weights."""
    path = tmp_path / "fts5.sqlite3"
    Fts5Baseline.build(path, [Doc("titled", "Vitiligo", "Patches of skin lose their colour."),
                              Doc("body", "", "Vitiligo, vitiligo, vitiligo: more patches.")])
    with Fts5Baseline(path) as plain, Fts5Baseline(path, title_weight=10.0) as titled:
        assert plain.search(Query("vitiligo")) == ["body", "titled"]
        assert titled.search(Query("vitiligo")) == ["titled", "body"]
        assert titled.page(Query("vitiligo"), pagelen=1) == (["titled"], 2)


def test_fts5_query_builder() -> None:
    expected = '"what" OR "is" OR "the" OR "cure" OR "for" OR "acne"'
    assert fts5_query(Query("What is the cure for ACNE, acne?")) == expected  # lower-cased, each word once
    assert fts5_query(Query("What is the cure for acne", drop_stop_words=True)) == '"what" OR "cure" OR "acne"'
    assert fts5_query(Query("laser redness", match_all=True)) == '"laser" "redness"'
    assert fts5_query(Query('"dry skin" eyes', syntax=True)) == '"dry skin eyes"'
    assert fts5_query(Query('"dry skin" eyes')) == '"dry" OR "skin" OR "eyes"'
    assert fts5_query(Query("Sjögren")) == '"sjögren"'
    assert fts5_query(Query("acne", tag='te"en')) == '("acne") AND tags:"te""en"'
    assert fts5_query(Query("?!", tag="teen")) == 'tags:"teen"'
    assert fts5_query(Query("?! *")) == ""


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_words_never_syntax(built: dict[str, Path], text: str) -> None:
    """FTS5 operators, brackets and stars stay literal; every shape of query runs without an error."""
    with Fts5Baseline(built["fts5"]) as fts5, WhooshBaseline(built["whoosh"]) as whoosh:
        for syntax in (False, True):
            for match_all in (False, True):
                query = Query(text, match_all=match_all, syntax=syntax, drop_stop_words=not match_all)
                for engine in (fts5, whoosh):
                    ids, total = engine.page(query)
                    assert set(ids) <= {d.docid for d in DOCS} and total >= len(ids)
                    assert set(engine.search(query)) <= {d.docid for d in DOCS}


def test_operator_words_are_searched_as_words(built: dict[str, Path]) -> None:
    with Fts5Baseline(built["fts5"]) as fts5:
        assert fts5.search(Query("AND")) == ["melasma"]  # "patches AND freckles": the word, not the operator
        assert fts5.search(Query("NEAR")) == ["acne"]
        assert fts5.search(Query("NEAR(acne chin")) == ["acne"]
        with pytest.raises(sqlite3.OperationalError):  # what the quoting protects against
            fts5.db.execute("SELECT docid FROM docs WHERE docs MATCH ?", ("NEAR(",)).fetchall()


def test_build_replaces_an_earlier_index(tmp_path: Path) -> None:
    for name, engine in BASELINES.items():
        path = tmp_path / name
        engine.build(path, DOCS)
        assert engine.build(path, [Doc("only", "Only", "A single document about vitiligo.")]) == 1
        with engine(path) as opened:
            assert opened.search(Query("vitiligo")) == ["only"]
            assert opened.search(Query("rosacea")) == []


def test_whoosh_stores_text_only_when_asked(tmp_path: Path) -> None:
    """kb eval builds without stored text (it only ranks); kb bench's results page highlights the stored body."""
    WhooshBaseline.build(tmp_path / "bare", DOCS, store_text=False)
    WhooshBaseline.build(tmp_path / "full", DOCS)
    with WhooshBaseline(tmp_path / "bare") as bare, WhooshBaseline(tmp_path / "full") as full:
        assert bare.search(Query("pimples")) == full.search(Query("pimples")) == ["acne"]
        assert bare.searcher.stored_fields(0) == {"id": "rosacea"}
        assert full.searcher.stored_fields(0)["body"] == DOCS[0].body
        assert full.page(Query("pimples")) == (["acne"], 1)


def test_versions_name_both_engines() -> None:
    versions = baselines.versions()
    assert versions["sqlite"] == sqlite3.sqlite_version and versions["whoosh"][0].isdigit()
