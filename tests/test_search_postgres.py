"""kb.search.pg: the SearchService on PostgreSQL answers as the Whoosh searcher does, audiences kept apart.

The behaviour tests of tests/test_search.py run on both backends through the `search_backend` fixture
(tests/conftest.py); here: the interface, answer-for-answer equality with Whoosh, non-interference of staff
documents with anonymous answers, generation swaps and cleanup, and the error before the first build.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from kb import index
from kb.errors import IndexUnavailable
from kb.models import Article, Section
from kb.search import Searcher, SearchService
from kb.search.pg import PgSearcher
from kb.search.pg_build import build
from kb.store import open_store
from kb.store.postgres import PostgresStore
from kb.store.postgres_pool import close_pools
from kb.store.postgres_search import GenerationWriter, close_search_pool

pytestmark = pytest.mark.postgresql

STAFF_WORD = "zephyrquix"


def _article(n: int, title: str, text: str, *, tags: list[str], categories: list[str], published: str,
             audience: str = "public", site: str = "clinic.example") -> Article:
    return Article(url=f"https://{site}/{n}/", title=title, text=text, tags=tags, categories=categories,
                   published=published, site=site, audience=audience,
                   sections=[Section("Treatment", f"t{n}", text.split(". ")[-1])])


def public_articles() -> list[Article]:
    return [
        _article(1, "Acne treatment basics", "Acne responds to topical retinoids and benzoyl peroxide. Retinoids "
                 "start low.", tags=["retinoids"], categories=["Acne"], published="2023-01-05"),
        _article(2, "Rosacea and redness", "Rosacea causes facial redness; the VBeam pulsed dye laser helps. "
                 "Acne can look similar.", tags=["lasers"], categories=["Rosacea"], published="2023-02-05"),
        _article(3, "Isotretinoin for severe acne", "Isotretinoin treats severe acne and acne scars.",
                 tags=["isotretinoin", "retinoids"], categories=["Acne"], published="2022-03-05"),
        _article(4, "Melasma", "Melasma causes brown patches. Sun protection and hydroquinone help.",
                 tags=["pigment"], categories=["Pigment"], published="2021-04-05"),
        _article(5, "Acne scars and lasers", "Lasers and peels soften acne scars; retinoids help too.",
                 tags=["lasers", "retinoids"], categories=["Acne"], published="2020-05-05"),
        _article(6, "Melanoma", "Melanoma is a skin cancer. Check moles for changes.", tags=["cancer"],
                 categories=["Skin cancer"], published="2019-05-05"),
    ]


def staff_articles() -> list[Article]:
    """Built to disturb exactly the anonymous answers: frequencies, facet spellings, words and look-alikes."""
    prefixed = " ".join(f"reta{chr(97 + i // 26)}{chr(97 + i % 26)}x" for i in range(60))
    return [
        _article(101, "Acne dosing protocol", f"Staff only. {STAFF_WORD} acne acne retinoids isotretinoin dosing. "
                 + "acne " * 40, tags=["RETINOIDS"], categories=["ACNE"], published="2024-06-01", audience="staff",
                 site="intranet.clinic.example"),
        _article(102, "Melasmo retinoix protocol", f"melasmo retinoix rosacia {prefixed} lasers laser",
                 tags=["Lasers"], categories=["Rosacea"], published="2024-07-01", audience="staff",
                 site="intranet.clinic.example"),
    ]


QUERIES = ["acne", "acne scars", "retinoids", "rosacea redness", "v-beam", "vbeam", "pulsed dye laser", "zits",
           "melasma", "melanoma", "melasmo", "rosacia", "retinoix", '"acne scars"', "acne -lasers", "tag:retinoids",
           "lasers OR melasma", "what causes acne", STAFF_WORD, ""]


def anonymous_answers(searcher: SearchService) -> dict[str, bytes]:
    """Every anonymous answer as the JSON bytes the API would send (scores, order, facets, suggestions)."""
    out = {}
    for q in QUERIES:
        for kw in ({}, {"sort": "date"}, {"filters": {"tag": ["retinoids"]}}, {"page": 2, "per_page": 2}):
            out[f"{q}|{kw}"] = json.dumps(searcher.search(q, **kw).to_json(), sort_keys=True).encode()
    for prefix in ("ret", "acne", "mel", "ros", "la"):
        out[f"suggest:{prefix}"] = json.dumps(searcher.suggest(prefix)).encode()
    return out


@pytest.fixture
def pg_url(pg_database):
    yield pg_database.url
    close_search_pool(pg_database.url)
    close_pools()


def test_pg_searcher_takes_exactly_the_interface_arguments():
    for name in ("search", "suggest", "close"):
        expected = inspect.signature(getattr(SearchService, name), eval_str=True)
        assert inspect.signature(getattr(PgSearcher, name), eval_str=True) == expected, name
    assert isinstance(PgSearcher.__new__(PgSearcher), SearchService)


def test_before_the_first_build_search_says_there_is_no_index(pg_url):
    PostgresStore(pg_url).close()  # migrated, nothing built
    searcher = PgSearcher(pg_url)
    with pytest.raises(IndexUnavailable, match="no search index"):
        searcher.search("acne")
    searcher.close()


def _json(results) -> dict:
    data = results.to_json()
    for hit in data["results"]:
        hit["score"] = round(hit["score"], 6)
    return data


@contextmanager
def both_backends(pg_url: str, tmp_path: Path, articles: list[Article]) -> Iterator[tuple[Searcher, PgSearcher]]:
    """(Whoosh searcher, PostgreSQL searcher) over the same stored articles, closed afterwards."""
    with open_store(tmp_path / "kb.sqlite3") as lite, PostgresStore(pg_url) as pg:
        for article in articles:
            lite.save_article(article)
            pg.save_article(article)
        index.rebuild(lite, tmp_path / "ix")
        build(pg, pg_url)
    whoosh, postgres = Searcher(tmp_path / "ix"), PgSearcher(pg_url)
    try:
        yield whoosh, postgres
    finally:
        whoosh.close()
        postgres.close()


def test_answers_equal_the_whoosh_searchers(pg_url, tmp_path: Path):
    """Same hits, order, scores (to 6 places), snippets, anchors, totals, facets, suggestions and corrections."""
    with both_backends(pg_url, tmp_path, public_articles() + staff_articles()) as (whoosh, postgres):
        compared = 0
        for audiences in (("public",), ("public", "staff")):
            for q in QUERIES:
                for kw in ({}, {"sort": "date"}, {"filters": {"category": ["acne"]}}):
                    expected = _json(whoosh.search(q, audiences=audiences, **kw))
                    assert _json(postgres.search(q, audiences=audiences, **kw)) == expected, (q, audiences, kw)
                    compared += bool(expected["results"])
            for prefix in ("ret", "acne", "mel", "ros"):
                assert postgres.suggest(prefix, audiences=audiences) == whoosh.suggest(prefix, audiences=audiences)
        assert compared > 40  # most comparisons have hits: equality is not of empty pages
        vbeam = postgres.search("V-Beam")
        assert [h.url for h in vbeam.hits] == ["https://clinic.example/2/"]  # VBeam / V-Beam are one token
        assert postgres.search("zits").total and "acne" in postgres.search("zits").hits[0].title.lower()
        melasma = postgres.search("melasma")
        assert melasma.corrected_query is None and [h.title for h in melasma.hits] == ["Melasma"]


def test_anonymous_answers_are_byte_identical_with_and_without_staff_documents(pg_url):
    with PostgresStore(pg_url) as store:
        for article in public_articles():
            store.save_article(article)
        build(store, pg_url)
        searcher = PgSearcher(pg_url)
        before = anonymous_answers(searcher)
        for article in staff_articles():
            store.save_article(article)
        build(store, pg_url)
        after = anonymous_answers(searcher)
        assert [k for k in before if before[k] != after[k]] == []
        # staff see what was added, so the comparison above is not vacuous
        staff = ("public", "staff")
        assert searcher.search(STAFF_WORD, audiences=staff).total == 1
        assert searcher.search(STAFF_WORD).total == 0
        assert ("ACNE", 4) in searcher.search("acne", audiences=staff).facets["category"]
        assert searcher.search("acne", audiences=staff).total > searcher.search("acne").total
        searcher.close()


def test_a_swap_reaches_open_searchers_and_old_generations_are_dropped_after_the_grace(pg_url):
    with PostgresStore(pg_url) as store:
        store.save_article(public_articles()[0])
        build(store, pg_url)
        searcher = PgSearcher(pg_url)
        assert searcher.search("melasma").total == 0
        store.save_article(public_articles()[3])
        build(store, pg_url)
        assert searcher.search("melasma").total == 1  # the open searcher reads the new generation
        with GenerationWriter(pg_url) as writer:
            tables = {r[0] for r in writer.conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kb_search_term_g%'").fetchall()}
            assert len(tables) == 2  # the previous generation stays for searches still running on it
            assert writer.drop_old(grace=0.0) == [1]
            tables = {r[0] for r in writer.conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kb_search_term_g%'").fetchall()}
        assert tables == {"kb_search_term_g2"}
        assert searcher.search("melasma").total == 1
        searcher.close()


def test_a_failed_build_leaves_the_current_generation_and_no_tables(pg_url):
    with PostgresStore(pg_url) as store:
        store.save_article(public_articles()[0])
        build(store, pg_url)

        def broken():
            yield from store.iter_articles()
            raise RuntimeError("disk full")

        from kb.search.pg_build import build_from_articles

        with pytest.raises(RuntimeError):
            build_from_articles(pg_url, broken())
    searcher = PgSearcher(pg_url)
    assert searcher.search("acne").total == 1
    with GenerationWriter(pg_url) as writer:
        rows = writer.conn.execute("SELECT generation, state FROM kb_search_generations ORDER BY 1").fetchall()
        left = writer.conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%_g2%%'").fetchone()[0]
    assert rows == [(1, "current")] and left == 0
    searcher.close()


def test_a_repeated_search_reads_only_the_revision(pg_url, monkeypatch):
    """Posting arrays, document facts, statistics and hit fields are read once per generation revision and kept
    in the process (as the Whoosh searcher keeps its postings): a search asked again costs the database one small
    read, not a scan of every matching row. An in-place update (a new revision) reads them afresh."""
    from kb.store import postgres_search as pgs

    with PostgresStore(pg_url) as store:
        for article in public_articles():
            store.save_article(article)
        build(store, pg_url)
        searcher = PgSearcher(pg_url)
        queries = ["acne scars", "retinoids", '"acne scars"', "rosacia", "tag:retinoids"]
        calls: list[str] = []
        for name in ("current_revision", "documents", "date_order", "value_ids", "title_ids", "posting_ids", "postings",
                     "term_stats", "field_stats", "phrase_docs", "words_near", "word_df"):
            real = getattr(pgs, name)
            monkeypatch.setattr(pgs, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw))
        first = {q: _json(searcher.search(q)) for q in queries}
        # a new word's postings, with the BM25F arrays of its short lists, come in one read for all its fields
        assert "postings" not in calls and calls.count("posting_ids") <= len(queries)
        calls.clear()
        assert {q: _json(searcher.search(q)) for q in queries} == first
        assert calls == ["current_revision"] * len(queries)

        calls.clear()
        store.save_article(_article(7, "Acne and diet", "Acne and scars.", tags=["diet"], categories=["Acne"],
                                    published="2024-01-01"))
        from kb.search.pg_build import update

        update(store, pg_url)
        assert searcher.search("acne scars").total == first["acne scars"]["total"] + 1
        assert {"date_order", "value_ids", "posting_ids"} <= set(calls)  # the new revision's own state
        searcher.close()


def test_corrections_read_on_past_a_page_of_look_alike_free_words(pg_url, tmp_path: Path):
    """Spelling candidates are read from the word table a page at a time (kb.store.postgres_search.WORDS_PAGE)
    for as long as the caller wants more, as Whoosh's automaton yields them: 3,125 words sharing the prefix
    and sorting before the right one (none within two edits) do not hide it. The right word is in no vocabulary,
    so the word table is the only way to it."""
    from kb.store import postgres_search as pgs

    filler = [f"roa{a}{b}{c}{d}{e}" for a in "bdfgh" for b in "bdfgh" for c in "bdfgh" for d in "bdfgh" for e in "bdfgh"]
    assert len(filler) > pgs.WORDS_PAGE and max(filler) < "rozelmix"
    articles = [_article(1, "Rozelmix cream", "Rozelmix calms redness.", tags=[], categories=[], published="2023-01-01"),
                _article(2, "Glossary", "Words: " + " ".join(filler) + ".", tags=[], categories=[],
                         published="2023-01-02")]
    with both_backends(pg_url, tmp_path, articles) as (whoosh, postgres):
        expected = _json(whoosh.search("rozelmax"))
        assert expected["corrected_query"] == "rozelmix"
        assert _json(postgres.search("rozelmax")) == expected


def test_a_full_phrase_cache_evicts_old_phrases_not_the_one_asked(pg_url, monkeypatch):
    """The phrase-check cache is bounded (PHRASE_CACHE); one read fills an entry per weighted field, so a bound
    smaller than that, or an entry updated while it was the oldest, must not evict the entry being answered."""
    from kb.search import pg

    with PostgresStore(pg_url) as store:
        for article in public_articles():
            store.save_article(article)
        build(store, pg_url)
    queries = ["acne scars", '"acne scars"', "pulsed dye laser", "acne scars", "sun protection"]
    roomy = PgSearcher(pg_url)
    expected = [_json(roomy.search(q)) for q in queries]
    roomy.close()
    monkeypatch.setattr(pg, "PHRASE_CACHE", 1)
    tight = PgSearcher(pg_url)
    assert [_json(tight.search(q)) for q in queries] == expected
    assert any(r["results"] for r in expected)
    tight.close()


def test_dropping_a_generation_built_with_facet_labels_drops_that_table(pg_url):
    """Generations built before searches counted facets in memory have a kb_search_facet_gN table; builds no
    longer make one, and dropping an old generation removes it with the rest."""
    with PostgresStore(pg_url) as store:
        store.save_article(public_articles()[0])
        build(store, pg_url)
        with GenerationWriter(pg_url) as writer:
            writer.conn.execute("CREATE TABLE kb_search_facet_g1 (scope text, facet text, k text, label text)")
        build(store, pg_url)
        with GenerationWriter(pg_url) as writer:
            assert writer.drop_old(grace=0.0) == [1]
            left = {r[0] for r in writer.conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kb_search_%%_g%%'").fetchall()}
    assert left == {"kb_search_posting_g2", "kb_search_term_g2", "kb_search_field_g2", "kb_search_word_g2"}
