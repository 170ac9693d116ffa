"""kb.search: query language, ranking, snippets, deep links, facets, suggestions, audiences, reopening."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import pytest

from kb import index, querylang
from kb.errors import IndexUnavailable
from kb.models import Article, Results, Section
from kb.search import Searcher, SearchService
from kb.search.snippets import highlight_pattern, make_snippet
from kb.store import open_store
from tests.fakes import FakeSearcher

CANARY = "zorblaxine"

ROSACEA_TEXT = ("Rosacea is a common skin condition that causes redness of the face. "
                "Treatment: doctors prescribe metronidazole gel and azelaic acid. "
                "Causes: triggers include heat, alcohol and spicy food.")


def _articles() -> list[Article]:
    out = [
        Article(url="https://derm.example/rosacea", title="Rosacea", text=ROSACEA_TEXT, site="derm.example",
                sections=[Section("Treatment", "treatment", "Treatment: doctors prescribe metronidazole gel and azelaic acid."),
                          Section("Causes", "causes", "Causes: triggers include heat, alcohol and spicy food.")],
                tags=["Rosacea", "Redness"], categories=["Conditions"], published="2023-04-01"),
        Article(url="https://laser.example/redness", title="Laser treatment for facial redness", site="laser.example",
                text="Vascular lasers reduce visible vessels. Patients with rosacea sometimes ask about it. "
                     "Redness fades after several sessions.", tags=["Laser"], categories=["Procedures"],
                published="2022-02-01"),
        Article(url="https://derm.example/melasma", title="Melasma", site="derm.example",
                text="Melasma causes brown patches on the cheeks. Sun protection and hydroquinone help.",
                tags=["Pigment"], categories=["Conditions"], published="2021-05-01"),
        Article(url="https://derm.example/melanoma", title="Melanoma", site="derm.example",
                text="Melanoma is a serious skin cancer. Check moles for changes in colour or size.",
                tags=["Cancer"], categories=["Skin cancer"], published="2020-05-01"),
        Article(url="https://laser.example/pdl", title="Vascular laser options", site="laser.example",
                text="The pulsed dye laser treats vessels. Other devices exist.", tags=["Laser"],
                categories=["Procedures"], published="2019-01-01"),
        Article(url="https://laser.example/devices", title="Device overview", site="laser.example",
                text="A laser can be pulsed. Dye is used in some devices. The laser is pulsed again; "
                     "dye lasers and pulsed light differ. Laser laser laser.", tags=["Laser"],
                categories=["Procedures"], published="2024-01-01"),
        Article(url="https://derm.example/xss", title="Unsafe markup sample", site="derm.example",
                text="This page literally contains <script>alert('x')</script> inside its text about eczema.",
                categories=["Conditions"], published="2018-01-01"),
        Article(url="https://staff.example/protocol", title="Staff dosing protocol", site="staff.example",
                text=f"Internal {CANARY} dosing for laser sessions. Only for staff.", audience="staff",
                tags=["Internal"], categories=["Protocols"], published="2024-06-01"),
        Article(url="https://derm.example/acne-vulgaris", title="Acne vulgaris", site="derm.example",
                text="Acne vulgaris causes pimples and blackheads on the face and back.", tags=["Acne"],
                categories=["Conditions"], published="2023-09-01"),
    ]
    for n in range(12):
        out.append(Article(url=f"https://derm.example/eczema-{n}", title=f"Eczema note {n}", site="derm.example",
                           text=f"Eczema care note number {n}: moisturise daily and avoid irritants.",
                           tags=["Eczema"], categories=["Conditions"], published=f"2010-01-{n + 1:02d}"))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("search")
    with open_store(root / "kb.sqlite3") as store:
        ids = {a.url: store.save_article(a)[0] for a in _articles()}
        index.rebuild(store, root / "ix")
    return root, ids


@pytest.fixture(scope="module")
def any_built(search_backend):
    """The articles on each search backend (tests/conftest.py `search_backend`: Whoosh, then PostgreSQL)."""
    with search_backend.open_store() as store:
        for article in _articles():
            store.save_article(article)
        search_backend.reindex(store)
    return search_backend


@pytest.fixture
def searcher(any_built):
    s = any_built.searcher()
    yield s
    s.close()


def urls(results: Results) -> list[str]:
    return [h.url for h in results.hits]


def test_title_match_ranks_above_body_mention(searcher):
    results = searcher.search("rosacea")
    assert urls(results)[:2] == ["https://derm.example/rosacea", "https://laser.example/redness"]
    assert results.total == 2


def test_phrase_match_of_whole_query_ranks_first_and_quotes_require_it(searcher):
    plain = searcher.search("pulsed dye laser")
    assert urls(plain)[0] == "https://laser.example/pdl"
    assert "https://laser.example/devices" in urls(plain)  # has every word, more often, but not as a phrase
    quoted = searcher.search('"pulsed dye laser"')
    assert urls(quoted) == ["https://laser.example/pdl"]


def test_exclude_or_and_field_filters(searcher):
    assert set(urls(searcher.search("redness"))) == {"https://derm.example/rosacea", "https://laser.example/redness"}
    assert urls(searcher.search("redness -metronidazole")) == ["https://laser.example/redness"]
    assert urls(searcher.search('redness -"azelaic acid"')) == ["https://laser.example/redness"]
    assert searcher.search("redness -rosacea").total == 0  # both pages mention rosacea
    either = searcher.search("melasma OR melanoma")
    assert set(urls(either)) == {"https://derm.example/melasma", "https://derm.example/melanoma"}
    assert urls(searcher.search("laser site:laser.example tag:laser")) and all(
        h.site == "laser.example" for h in searcher.search("laser site:laser.example").hits)
    assert urls(searcher.search('category:"skin cancer"')) == ["https://derm.example/melanoma"]
    assert searcher.search("causes", filters={"category": ["conditions"], "year": ["2021"]}).total == 1
    assert searcher.search("skin", filters={"tag": ["no such tag"]}).total == 0


def test_exclusion_removes_matching_documents(searcher):
    with_vessels = searcher.search("laser")
    without = searcher.search("laser -vessels")
    assert "https://laser.example/pdl" in urls(with_vessels)
    assert "https://laser.example/pdl" not in urls(without)
    assert without.total == with_vessels.total - 2  # pdl and the redness page mention vessels


def test_facets_count_the_whole_result_set(searcher):
    results = searcher.search("eczema", per_page=5)
    assert results.total == 13
    facets = results.facets
    assert facets["tag"][0] == ("Eczema", 12)
    assert dict(facets["category"]) == {"Conditions": 13}
    assert dict(facets["site"]) == {"derm.example": 13}
    assert dict(facets["year"]) == {"2010": 12, "2018": 1}


def test_pagination_is_disjoint_and_complete(searcher):
    pages = [searcher.search("eczema", page=p, per_page=5) for p in (1, 2, 3, 4)]
    seen = [u for r in pages for u in urls(r)]
    assert [len(r.hits) for r in pages] == [5, 5, 3, 0]
    assert len(seen) == len(set(seen)) == 13
    assert all(r.total == 13 and r.pages == 3 for r in pages)


def test_recency_breaks_ties_and_date_sort(searcher):
    notes = searcher.search("moisturise", per_page=12)
    years = [h.published for h in notes.hits]
    assert years == sorted(years, reverse=True)  # identical texts: the newest first
    dated = searcher.search("laser", sort="date", per_page=10)
    assert [h.published for h in dated.hits] == sorted([h.published for h in dated.hits], reverse=True)


def test_audience_canary_is_invisible_to_public_everywhere(searcher):
    public = searcher.search(CANARY)
    assert public.total == 0 and public.hits == [] and public.facets == {}
    assert CANARY not in " ".join(public.suggestions)
    typo = searcher.search(CANARY[:-1])  # a typo must not reveal it
    assert CANARY not in " ".join(typo.suggestions) and typo.corrected_query is None and typo.total == 0
    assert not any("Internal" == v for v, _ in searcher.search("laser").facets.get("tag", []))
    assert searcher.search("dosing").total == 0
    assert "Staff dosing protocol" not in searcher.suggest("staff")
    # the same probes as staff find it, so the checks above are not vacuous
    staff = searcher.search(CANARY, audiences=("public", "staff"))
    assert staff.total == 1 and staff.hits[0].audience == "staff"
    assert ("Internal", 1) in staff.facets["tag"]
    assert searcher.search(CANARY[:-1], audiences=("public", "staff")).corrected_query == CANARY
    assert "Staff dosing protocol" in searcher.suggest("staff", audiences=("public", "staff"))


MALFORMED = [
    '"(((', '((', '))', '"', 'a "b', 'OR', 'acne OR', 'OR acne', '-', '- -', 'NOT', '()', 'tag:', 'site:"',
    'x' * 10_000, 'acne\x00scars', '\x01\x02\x1f', ')(acne', '(((acne', '"acne', 'acne"', 'a AND', '&&', '|| ||',
    "'; DROP TABLE articles; --", '<script>alert(1)</script>', '*:*', 'title:acne^100', '~~~', 'acne~2',
    '\ud800', 'x' * 500 + ' "' * 300, ' '.join(['acne'] * 200), '🙂🙂', '\u202eacne',
]


@pytest.mark.parametrize("query", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_queries_degrade_without_raising(searcher, query):
    results = searcher.search(query)
    assert isinstance(results, Results)
    assert results.total >= 0 and len(results.hits) <= results.per_page
    assert len(results.query) <= querylang.MAX_QUERY_CHARS


def test_unbalanced_quotes_search_the_words_with_a_notice(searcher):
    results = searcher.search('"melasma brown')
    assert "could not be read" in results.notice
    assert urls(results)[0] == "https://derm.example/melasma"
    long = searcher.search("melasma " + "x" * 5000)
    assert "longer than" in long.notice
    assert searcher.search("acne\x00").notice


def test_melasma_and_melanoma_never_mix(searcher):
    melasma = searcher.search("melasma")
    melanoma = searcher.search("melanoma")
    assert urls(melasma) == ["https://derm.example/melasma"]
    assert urls(melanoma) == ["https://derm.example/melanoma"]
    assert not any("melanoma" in s for s in melasma.suggestions)
    assert not any("melasma" in s for s in melanoma.suggestions)


def test_misspelling_is_corrected_openly_and_exact_searches_the_typed_words(searcher):
    results = searcher.search("rosacia")
    assert results.query == "rosacia" and results.corrected_query == "rosacea"  # said openly, never silent
    assert results.total and urls(results)[0] == "https://derm.example/rosacea"
    assert results.to_json()["corrected_query"] == "rosacea" and results.to_json()["query"] == "rosacia"
    mixed = searcher.search("rosacia redness")
    assert mixed.corrected_query == "rosacea redness" and mixed.query == "rosacia redness"
    exact = searcher.search("rosacia", exact=True)  # "Search instead for rosacia"
    assert exact.total == 0 and exact.corrected_query is None and exact.suggestions == ["rosacea"]
    plain = searcher.search("rosacea")
    assert plain.suggestions == [] and plain.corrected_query is None and plain.to_json()["corrected_query"] is None


def test_snippets_escape_text_and_mark_query_words(searcher):
    hit = searcher.search("eczema alert").hits[0]
    assert hit.url == "https://derm.example/xss"
    assert "&lt;script&gt;" in hit.snippet_html and "<script>" not in hit.snippet_html
    assert "<mark>alert</mark>" in hit.snippet_html or "<mark>eczema</mark>" in hit.snippet_html
    snippet, offset = make_snippet("a <b> & c " * 50 + "target word here", highlight_pattern(["target"], []))
    assert "<mark>target</mark>" in snippet and "&lt;b&gt;" in snippet and offset > 0
    assert len(snippet) < 400


def test_hit_links_to_best_matching_section(searcher):
    hit = searcher.search("metronidazole").hits[0]
    assert (hit.anchor, hit.section) == ("treatment", "Treatment")
    assert hit.link == "https://derm.example/rosacea#treatment"
    causes = searcher.search("spicy food").hits[0]
    assert causes.anchor == "causes"
    top = searcher.search("melasma").hits[0]
    assert top.anchor == "" and top.link == top.url


def test_exact_title_wins(searcher):
    assert urls(searcher.search("acne vulgaris"))[0] == "https://derm.example/acne-vulgaris"
    assert urls(searcher.search("laser treatment for facial redness"))[0] == "https://laser.example/redness"


def test_vocabulary_expansion_finds_lay_terms_ranked_below_exact(searcher):
    results = searcher.search("zits")  # lay term: only the vocabulary links it to acne
    assert urls(results) == ["https://derm.example/acne-vulgaris"]
    assert "<mark>" in results.hits[0].snippet_html


def test_filters_without_words_browse_newest_first(searcher):
    results = searcher.search("", filters={"tag": ["laser"]})
    assert results.total == 3
    assert [h.published for h in results.hits] == ["2024-01-01", "2022-02-01", "2019-01-01"]
    assert searcher.search("").total == 0
    assert "exclusions only" in searcher.search("-acne").notice


def test_autocomplete_titles_vocabulary_and_words(searcher):
    assert searcher.suggest("ros")[0] == "Rosacea"
    assert "Melanoma" in searcher.suggest("mel") and "Melasma" in searcher.suggest("mel")
    assert len(searcher.suggest("e", limit=3)) <= 3
    assert searcher.suggest("") == []
    assert sum(s.lower().startswith("eczema note") for s in searcher.suggest("eczema", limit=20)) == 12


def test_missing_index_raises_index_unavailable(tmp_path):
    s = Searcher(tmp_path / "nothing")
    with pytest.raises(IndexUnavailable) as excinfo:
        s.search("acne")
    assert "kb reindex" in excinfo.value.remedy
    with pytest.raises(IndexUnavailable):
        s.suggest("ac")
    s.close()


def test_searcher_sees_update_and_swap_without_reopening(tmp_path):
    with open_store(tmp_path / "kb.sqlite3") as store:
        store.save_article(Article(url="https://e.example/1", title="Psoriasis", text="Plaques and scales."))
        index.rebuild(store, tmp_path / "ix")
        s = Searcher(tmp_path / "ix")
        try:
            assert s.search("biologics").total == 0
            store.save_article(Article(url="https://e.example/2", title="Biologics", text="Injected biologics."))
            index.update(store, tmp_path / "ix")
            assert s.search("biologics").total == 1  # same generation, new commit
            store.save_article(Article(url="https://e.example/3", title="Methotrexate", text="Weekly biologics alternative."))
            index.rebuild(store, tmp_path / "ix")
            assert s.search("biologics").total == 2  # new generation
        finally:
            s.close()


def test_concurrent_readers_keep_answering_while_rebuild_swaps(tmp_path):
    with open_store(tmp_path / "kb.sqlite3") as store:
        for n in range(30):
            store.save_article(Article(url=f"https://c.example/{n}", title=f"Hives {n}", text=f"Urticaria note {n}."))
        root = tmp_path / "ix"
        index.rebuild(store, root)
        searcher = Searcher(root)
        errors: list[BaseException] = []
        totals: list[int] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                try:
                    totals.append(searcher.search("urticaria").total)
                except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                    errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for n in range(30, 36):
                store.save_article(Article(url=f"https://c.example/{n}", title=f"Hives {n}", text=f"Urticaria {n}."))
                index.rebuild(store, root, grace=0)
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
        try:
            assert errors == []
            assert totals and set(totals) <= set(range(30, 37))
            assert searcher.search("urticaria").total == 36
        finally:
            searcher.close()


def test_docset_algebra_matches_python_sets():
    from kb.search.postings import DocSet

    a, b = {1, 5, 64, 999}, {5, 7, 999, 1000}
    da, db = DocSet.from_ids(a, 1001), DocSet.from_ids(b)
    assert set(da & db) == a & b and set(da | db) == a | b and set(da - db) == a - b
    assert len(da) == 4 and 64 in da and 65 not in da and 10**6 not in da
    assert DocSet().first() == -1 and da.first() == 1 and not DocSet()


def test_facet_counts_equal_counting_every_hit(searcher):
    results = searcher.search("skin OR laser OR eczema OR causes", per_page=100)
    assert results.total == len(results.hits)
    for name, attr in (("tag", "tags"), ("category", "categories")):
        expected: dict[str, int] = {}
        for hit in results.hits:
            for value in getattr(hit, attr):
                expected[value] = expected.get(value, 0) + 1
        top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0].casefold()))[:10]
        assert results.facets[name] == top
    sites: dict[str, int] = {}
    for hit in results.hits:
        sites[hit.site] = sites.get(hit.site, 0) + 1
    assert dict(results.facets["site"]) == sites


def test_searcher_pool_is_bounded_under_many_threads(built):
    from kb.search import state as search_state

    s = Searcher(built[0] / "ix")
    seen: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(15):
                s.search("eczema")
                seen.append(s._states[("public",)]._count)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(seen) == 120
        assert max(seen) <= search_state.POOL_SIZE
    finally:
        s.close()


# -- fast paths (block reads, own BM25F, phrase checks) agree with Whoosh's matchers ---------------

_WORDS = ("skin acne laser rosacea redness cream scar itch rash burn sun spot mole cancer patch dry oil "
          "pore red face neck back hand foot nail hair scalp vessel dye light pulse wave heat cold").split()


def _random_articles(n: int) -> list[Article]:
    import random

    rng = random.Random(7)
    out = []
    for i in range(n):
        body = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(20, 80)))
        if i % 3 == 0:
            body += " pulsed dye laser"
        out.append(Article(url=f"https://fast.example/a{i}", title=f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {i}",
                           text=body, site="fast.example", tags=[rng.choice(["Laser", "Acne"])],
                           sections=[Section(rng.choice(_WORDS).title(), f"s{i}", body[:40])],
                           audience="staff" if i % 7 == 0 else "public", published=f"20{10 + i % 14}-03-01"))
    return out


@pytest.fixture(scope="module")
def fast_built(tmp_path_factory):
    """Several segments (tiny segment size), multi-block posting lists and deleted documents."""
    root = tmp_path_factory.mktemp("fast")
    mp = pytest.MonkeyPatch()
    mp.setattr(index, "SEGMENT_TEXT_MB", 0.02)
    mp.setattr(index, "MERGE_SMALL_COUNT", 10**6)  # keep the segments through the update
    try:
        with open_store(root / "kb.sqlite3") as store:
            ids = [store.save_article(a)[0] for a in _random_articles(900)]
            index.rebuild(store, root / "ix")
            for article_id in ids[5:60:3]:
                store.delete_article(article_id)
            index.update(store, root / "ix")
    finally:
        mp.undo()
    s = Searcher(root / "ix")
    yield s
    s.close()


def _with_ctx(s: Searcher, fn, audiences: tuple[str, ...] = ("public",)):
    return s._with(fn, audiences)


#: The public sub-index alone, and the MultiReader over the segments of both sub-indexes (staff).
SCOPES = [("public",), ("public", "staff")]


@pytest.mark.parametrize("audiences", SCOPES, ids="+".join)
def test_block_reads_equal_whoosh_postings(fast_built, audiences):
    from kb.search import postings

    def check(ctx):
        reader = ctx.reader
        assert len(reader.leaf_readers()) > 2 and reader.has_deletions()
        staff = postings.DocSet(ctx.term_docs("audience", "staff").mask)
        assert bool(staff) == ("staff" in audiences)  # the staff scope really reads the staff sub-index
        live = ctx.state.live_mask(reader)
        checked = 0
        for fieldname in ("body", "title", "headings", "tagtext", "audience", "spell"):
            for raw in reader.lexicon(fieldname):
                text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                fast = postings._docset_of_term(reader, fieldname, text, ctx.state.size).mask & live
                portable = postings.DocSet.from_postings(reader, fieldname, text, ctx.state.size).mask
                assert fast == portable, (fieldname, text)
                checked += 1
        assert checked > 50
        assert max(reader.doc_frequency("body", w) for w in _WORDS) > 300  # several 128-posting blocks

    _with_ctx(fast_built, check, audiences)


@pytest.mark.parametrize("audiences", SCOPES, ids="+".join)
@pytest.mark.parametrize("query", ["laser", "skin acne", "pulsed dye laser", "red face cream", '"dye laser"',
                                   "rosacea -laser", "skin OR nail", "What are the symptoms of rosacea?"])
def test_own_bm25f_scores_equal_whoosh(fast_built, query, audiences):
    from kb.search import rank
    from kb.search.compile import compile_query

    def check(ctx):
        compiled = compile_query(ctx, querylang.parse(query), query)
        pruned = rank._prune(compiled.score, ctx, 10**9, [], 1.0)  # what rank() scores (phrases as And)
        ours = rank._score(ctx, pruned)
        theirs = {hit.docnum: hit.score for hit in ctx.searcher.search(pruned, limit=None)}
        # rank() scores the documents of the match set only (Whoosh's own AndNot matcher lets a few
        # excluded documents through; the bit algebra of _docs does not).
        docs = rank._docs(ctx, compiled.match)
        ours = {d: x for d, x in ours.items() if d in docs}
        theirs = {d: x for d, x in theirs.items() if d in docs}
        assert ours.keys() == theirs.keys() and ours
        for d, x in theirs.items():
            assert ours[d] == pytest.approx(x, rel=1e-9, abs=1e-9)

    _with_ctx(fast_built, check, audiences)


@pytest.mark.parametrize("audiences", SCOPES, ids="+".join)
def test_phrase_matches_equal_whoosh_phrase(fast_built, audiences):
    from whoosh import query as wq

    from kb.search.postings import DocSet

    def check(ctx):
        for words in (["puls", "dye", "laser"], ["dye", "laser"], ["laser", "dye"], ["skin", "skin"]):
            words = [ctx.analyze("body", w)[0] if ctx.analyze("body", w) else w for w in words]
            expected = {d for d in wq.Phrase("body", words).docs(ctx.searcher)}
            everything = DocSet(ctx.state.live_mask(ctx.reader)).ids()  # callers pass live documents
            assert set(ctx.phrase_matches("body", words, everything)) == expected
            some = sorted(expected)[::2] + [d for d in everything if d not in expected][:30]
            assert set(ctx.phrase_matches("body", words, some)) == set(sorted(expected)[::2])
        assert wq.Phrase("body", [ctx.analyze("body", w)[0] for w in ("dye", "laser")]).docs(ctx.searcher)

    _with_ctx(fast_built, check, audiences)


def test_corrections_cache_is_per_audience(fast_built, built):
    s = Searcher(built[0] / "ix")
    try:
        staff = s.search("zorblaxin", audiences=("public", "staff"))
        public = s.search("zorblaxin")
        assert staff.corrected_query == CANARY and staff.total == 1
        assert public.corrected_query is None and public.total == 0 and not any(CANARY in x for x in public.suggestions)
        again = s.search("zorblaxin")  # cached now
        assert again.suggestions == public.suggestions and again.corrected_query is None
    finally:
        s.close()


def test_portable_path_answers_like_the_block_reader(fast_built, tmp_path, monkeypatch):
    """A Whoosh build whose codec internals differ must still search correctly (only slower)."""
    from kb.search import postings

    queries = ["laser", "skin acne", "pulsed dye laser", '"dye laser"', "rosacea -laser",
               "What are the symptoms of rosacea?"]
    fast = [[(h.id, round(h.score, 6)) for h in fast_built.search(q, per_page=20).hits] for q in queries]
    monkeypatch.setattr(postings, "_leaf_matcher", lambda matcher: None)
    portable_searcher = Searcher(fast_built.index_root)
    try:
        portable = [[(h.id, round(h.score, 6)) for h in portable_searcher.search(q, per_page=20).hits]
                    for q in queries]
    finally:
        portable_searcher.close()
    assert all(fast) and portable == fast


# -- bounded spelling work ---------------------------------------------------------------------------

UNKNOWN = [f"qx{chr(97 + i % 26)}{chr(97 + i // 26)}vormp" for i in range(30)]  # in no document and in no dictionary


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """The words each spelling look-up (a walk of the word list) was made for, counted on the real path."""
    from kb.search import suggest

    seen: list[str] = []
    real = suggest._corrections

    def counting(ctx, word, audience_docs):
        seen.append(word)
        return real(ctx, word, audience_docs)

    monkeypatch.setattr(suggest, "_corrections", counting)
    return seen


def test_spelling_lookups_per_query_are_bounded_and_cached(built, lookups):
    from kb.search import suggest

    s = Searcher(built[0] / "ix")
    try:
        assert s.search(" ".join(UNKNOWN)).total == 0
        assert lookups == UNKNOWN[:suggest.MAX_CORRECTED_WORDS]  # the first N unknown words, in query order
        lookups.clear()
        assert s.search(" ".join(UNKNOWN[:2])).total == 0
        assert lookups == []  # both were looked up before: cached per index state
        typo = s.search("rosacia " + " ".join(UNKNOWN[10:]))  # a normal typo is still corrected
        assert typo.corrected_query and typo.corrected_query.startswith("rosacea ") and typo.total
        assert len(lookups) == suggest.MAX_CORRECTED_WORDS
        lookups.clear()
        known = s.search("melasma melanoma redness eczama")  # known words take no look-up, nor are they fixed
        assert known.corrected_query == "melasma melanoma redness eczema" and lookups == ["eczama"]
    finally:
        s.close()


def test_candidates_per_lookup_are_bounded(tmp_path, lookups, monkeypatch):
    from kb.search import suggest

    # 60 indexed words within two edits of "plombq", all sharing its first two letters
    words = [f"plomb{c}" for c in "abcdefghijklmnoprstuvwxyz"] + [f"plom{c}{d}" for c in "acdeg" for d in "abcdefg"]
    with open_store(tmp_path / "kb.sqlite3") as store:
        store.save_article(Article(url="https://w.example/1", title="Word list", text=" ".join(words)))
        index.rebuild(store, tmp_path / "ix")
    visible: list[str] = []
    real = suggest._visible_df

    def counting(ctx, word, audience_docs, cap=50):
        visible.append(word)
        return real(ctx, word, audience_docs, cap)

    monkeypatch.setattr(suggest, "_visible_df", counting)
    s = Searcher(tmp_path / "ix")
    try:
        results = s.search("plombq")
        assert lookups == ["plombq"] and results.suggestions  # still offers the nearest it examined
        assert len(visible) <= 2 * suggest.MAX_CORRECTION_CANDIDATES + 3  # not one check per look-alike (60+)
    finally:
        s.close()



# -- the search interface (what kb.web and kb.cli call) -----------------------------------------------

@pytest.mark.parametrize("implementation", [Searcher, FakeSearcher], ids=lambda cls: cls.__name__)
def test_implementations_take_exactly_the_interface_arguments(implementation):
    """The Whoosh Searcher and the tests' fake have the interface's names, kinds, defaults and types."""
    methods = [name for name, value in vars(SearchService).items() if callable(value) and not name.startswith("_")]
    assert sorted(methods) == ["close", "search", "suggest"]
    for name in methods:
        expected = inspect.signature(getattr(SearchService, name), eval_str=True)
        assert inspect.signature(getattr(implementation, name), eval_str=True) == expected, name
    assert isinstance(implementation.__new__(implementation), SearchService)


def test_the_fake_refuses_what_the_real_searcher_refuses(built):
    """A call the fake accepts, the real searcher accepts too, and what the fake records is what was asked."""
    fake, real = FakeSearcher(), Searcher(built[0] / "ix")
    try:
        for call in ({}, {"page": 2, "per_page": 5, "filters": {"tag": ["Laser"]}, "sort": "date",
                          "audiences": ("public", "staff")}):
            assert real.search("laser", **call).total and not fake.search("laser", **call).total
        assert fake.calls[0] == ("laser", {"page": 1, "per_page": 10, "filters": None, "sort": "relevance",
                                           "audiences": ("public",)})
        for implementation in (fake, real):
            with pytest.raises(TypeError):
                implementation.search("laser", limit=3)  # not an argument of search()
            with pytest.raises(TypeError):
                implementation.suggest("las", 3)  # keyword-only
    finally:
        real.close()
