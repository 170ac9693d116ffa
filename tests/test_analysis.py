"""The analyzers: normalisation, joined forms, protected stemming, stop words, pickling, Whoosh."""

from __future__ import annotations

import pickle

import pytest
from whoosh.fields import ID, TEXT, Schema
from whoosh.filedb.filestore import RamStorage
from whoosh.lang import stemmer_for_language
from whoosh.qparser import QueryParser

from kb import analysis
from kb.vocab import Vocabulary, build_analyzer, fingerprint, join_forms, plain_analyzer, text_analyzer, vocabulary

ANALYZERS = [pytest.param(text_analyzer, id="text"), pytest.param(plain_analyzer, id="plain")]


def words(analyzer, text: str, **kwargs) -> list[str]:
    return [t.text for t in analyzer(text, **kwargs)]


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("make", ANALYZERS)
@pytest.mark.parametrize("text", ["CO2", "co2", "CO₂", "ＣＯ２", "CO 2", "CO-2", "co\u22122"])
def test_co2_spellings_become_one_token(make, text):
    assert words(make(), text) == ["co2"]


@pytest.mark.parametrize("make", ANALYZERS)
def test_accents_ligatures_and_full_width_fold(make):
    assert words(make(), "Juvéderm") == ["juvederm"]
    assert words(make(), "cafe\u0301") == ["cafe"]  # decomposed accent
    assert words(make(), "Henoch-Schönlein") == words(make(), "henoch-schonlein")
    assert words(plain_analyzer(), "ﬁller") == ["filler"]
    assert words(make(), "ＢＯＴＯＸ") == ["botox"]


@pytest.mark.parametrize("make", ANALYZERS)
def test_case_is_folded(make):
    assert words(make(), "BOTOX Botox botox") == ["botox"] * 3


def test_symbols_do_not_glue_onto_names():
    # NFKC would turn ™ into "TM" and make "botoxtm"
    assert words(text_analyzer(), "Botox™ and Dysport®") == ["botox", "dysport"]


@pytest.mark.parametrize("make", ANALYZERS)
@pytest.mark.parametrize("text", ["V-Beam", "V Beam", "Vbeam", "VBeam", "vbeam", "v\u2010beam", "V – Beam", "V\nBeam"])
def test_vbeam_variants_join(make, text):
    assert words(make(), text) == ["vbeam"]


@pytest.mark.parametrize("text", ["micro-Botox", "micro Botox", "microbotox", "Micro-botox"])
def test_micro_botox_joins(text):
    assert words(text_analyzer(), text) == ["microbotox"]


def test_retin_a_is_one_token_that_cannot_be_retina():
    assert words(text_analyzer(), "Retin-A") == ["retin_a"]
    assert words(text_analyzer(), "Retin A") == ["retin_a"]
    assert words(text_analyzer(), "retina") == ["retina"]


def test_q_switched_and_nd_yag_join():
    assert words(text_analyzer(), "Q-switched Nd:YAG laser") == ["qswitched", "ndyag", "laser"]


def test_non_melanoma_does_not_become_melanoma():
    assert words(text_analyzer(), "non-melanoma skin cancer")[0] == "nonmelanoma"


def test_ipl_and_bbl_stay_separate_terms():
    assert words(text_analyzer(), "IPL BBL") == ["ipl", "bbl"]


def test_british_spellings_map_to_american():
    assert words(text_analyzer(), "naevus haemangioma") == words(text_analyzer(), "nevus hemangioma")


def test_joining_is_driven_by_the_vocabulary_forms():
    vocab = Vocabulary({"version": "t", "forms": {"foobar": ["foo-bar", "foo bar"]}})
    custom = build_analyzer(vocab, stem=False)
    assert words(custom, "Foo Bar and foo-bar") == ["foobar", "foobar"]
    assert words(plain_analyzer(), "Foo Bar") == ["foo", "bar"]


def test_char_offsets_point_into_the_original_text():
    text = "Juvéderm ﬁller, CO₂ and V - Beam; cafe\u0301 ok"
    spans = [(t.text, text[t.startchar:t.endchar]) for t in plain_analyzer()(text, chars=True)]
    assert spans == [("juvederm", "Juvéderm"), ("filler", "ﬁller"), ("co2", "CO₂"),
                     ("vbeam", "V - Beam"), ("cafe", "cafe\u0301"), ("ok", "ok")]


def test_start_char_and_positions_are_honoured():
    toks = [(t.text, t.pos, t.startchar) for t in text_analyzer()("the V Beam laser", positions=True, chars=True,
                                                                  start_pos=10, start_char=100)]
    assert toks == [("vbeam", 11, 104), ("laser", 12, 111)]  # Whoosh StopFilter: first kept token keeps its slot


def test_keeporiginal_gives_the_source_text():
    assert [t.original for t in text_analyzer()("V-Beam lasers", keeporiginal=True)] == ["V-Beam", "lasers"]


def test_clitics_are_not_indexed():
    assert words(text_analyzer(), "the patient's skin; don't") == ["patient", "skin", "don"]
    assert words(text_analyzer(), "patient’s") == ["patient"]


def test_absurdly_long_tokens_are_dropped():
    assert words(text_analyzer(), "x" * 200 + " acne") == ["acn"]


def test_tokenize_false_folds_and_joins_the_whole_value():
    assert words(text_analyzer(), "V-Beam", tokenize=False) == ["vbeam"]
    assert words(text_analyzer(), "Retin*", tokenize=False) == ["retin*"]  # wildcard text is never stemmed


# ---------------------------------------------------------------- stemming


@pytest.mark.parametrize("word", ["Dupixent", "Ultherapy", "CoolSculpting", "HydraFacial", "Daxxify", "isotretinoin",
                                  "Fraxel", "Botox", "Dysport", "IPL", "BBL", "SPF", "UVB", "CO2", "vbeam"])
def test_protected_names_are_not_stemmed(word):
    assert words(text_analyzer(), word) == words(plain_analyzer(), word)


def test_protection_matters_for_names_the_stemmer_would_cut():
    snowball = stemmer_for_language("en")
    for word in ["dupixent", "ultherapy", "coolsculpting", "hydrafacial"]:
        assert snowball(word) != word
        assert words(text_analyzer(), word) == [word]


def test_ordinary_words_are_stemmed():
    assert words(text_analyzer(), "lasers treatments scarring") == words(text_analyzer(), "laser treatment scar")


def test_latin_plurals_meet_their_singular():
    ta = text_analyzer()
    assert words(ta, "nevi") == words(ta, "nevus") == words(ta, "naevi")
    assert words(ta, "keratoses") == words(ta, "keratosis")
    assert words(ta, "lentigines") == words(ta, "lentigo")
    assert words(ta, "comedones") == words(ta, "comedo")


@pytest.mark.parametrize("make", ANALYZERS)
def test_melasma_and_melanoma_stay_distinct(make):
    melasma, melanoma = words(make(), "melasma"), words(make(), "melanoma")
    assert melasma != melanoma
    assert words(make(), "melasmas melanomas")[0] not in melanoma


def test_plural_of_melanoma_meets_singular_only_when_stemmed():
    assert words(text_analyzer(), "melanomas") == words(text_analyzer(), "melanoma")
    assert words(plain_analyzer(), "melanomas") == ["melanomas"]


# ---------------------------------------------------------------- stop words


@pytest.mark.parametrize("make", ANALYZERS)
@pytest.mark.parametrize("word", ["not", "no", "without", "under", "over", "after", "before", "off", "against", "us"])
def test_clinically_meaningful_small_words_are_kept(make, word):
    assert words(make(), f"the {word} label") == [word if make is plain_analyzer else words(text_analyzer(), word)[0],
                                                  words(make(), "label")[0]]


def test_function_words_are_dropped():
    assert words(plain_analyzer(), "the acne of a teen and the face with scars") == ["acne", "teen", "face", "scars"]


def test_designator_letters_are_kept():
    assert words(plain_analyzer(), "vitamin A, hepatitis A, type I, ultraviolet A") == [
        "vitamin", "a", "hepatitis", "a", "type", "i", "ultraviolet", "a"]
    assert words(plain_analyzer(), "type 1 and type 2, vitamin D") == ["type", "1", "type", "2", "vitamin", "d"]


def test_removestops_false_marks_instead_of_dropping():
    toks = [(t.text, t.stopped) for t in text_analyzer()("the acne", removestops=False)]
    assert toks == [("the", True), ("acn", False)]


def test_positions_are_consecutive_after_stop_words_and_joins():
    toks = [(t.text, t.pos) for t in plain_analyzer()("the V Beam of the laser", positions=True)]
    assert toks == [("vbeam", 1), ("laser", 2)]


# ---------------------------------------------------------------- query helper, cache, pickle


def test_join_forms_rewrites_only_the_forms():
    assert join_forms('V Beam AND "CO 2 laser" OR micro Botox') == 'vbeam AND "co2 laser" OR microbotox'
    assert join_forms("acne NOT rosacea") == "acne NOT rosacea"
    assert join_forms("ﬁne V Beam, naevus") == "ﬁne vbeam, nevus"  # offsets survive a ligature


def test_analyzers_are_cached():
    assert text_analyzer() is text_analyzer()
    assert plain_analyzer() is plain_analyzer()
    assert text_analyzer() is not plain_analyzer()


@pytest.mark.parametrize("make", ANALYZERS)
def test_analyzers_pickle_round_trip(make):
    original = make()
    copy = pickle.loads(pickle.dumps(original))
    assert copy == original
    text = "Retin-A, V Beam and CO₂ lasers for naevi; the melanomas"
    assert [(t.text, t.pos, t.startchar) for t in copy(text, positions=True, chars=True)] == \
        [(t.text, t.pos, t.startchar) for t in original(text, positions=True, chars=True)]


def test_pickled_state_is_small_and_code_free():
    data = pickle.dumps(text_analyzer())
    assert b"_compile" not in data and b"_lru_cache" not in data  # no compiled regex or cache inside
    assert len(data) < 60_000


def test_fingerprint_names_version_and_changes_with_forms():
    fp = fingerprint()
    assert fp.startswith(f"{analysis.ANALYSIS_VERSION}-{vocabulary().version}-")
    assert fp == fingerprint()
    one = Vocabulary({"version": "t", "forms": {"foobar": ["foo bar"]}})
    two = Vocabulary({"version": "t", "forms": {"foobar": ["foo bar", "foo-bar-baz"]}})
    assert fingerprint(one) != fingerprint(two)


def test_analysis_does_not_depend_on_the_vocabulary_module():
    """The building blocks stand alone; only kb.vocab binds them to the shipped vocabulary (no import cycle)."""
    import ast
    import inspect

    imports = {node.module for node in ast.walk(ast.parse(inspect.getsource(analysis)))
               if isinstance(node, ast.ImportFrom)}
    assert "kb.vocab" not in imports


# ---------------------------------------------------------------- in-RAM Whoosh index


@pytest.fixture(scope="module")
def ram_index():
    schema = Schema(id=ID(stored=True, unique=True), body=TEXT(analyzer=text_analyzer(), stored=True),
                    spelling=TEXT(analyzer=plain_analyzer()))
    storage = RamStorage()
    ix = storage.create_index(schema)
    docs = {
        "vbeam": "Port-wine stains respond to the V-Beam pulsed dye laser.",
        "co2": "Fractional CO₂ laser resurfacing improves acne scars.",
        "melanoma": "Melanoma is the most dangerous skin cancer.",
        "melasma": "Melasma causes brown patches on the cheeks.",
        "retina": "The retina lines the back of the eye.",
        "retin_a": "Retin-A (tretinoin) treats acne.",
    }
    with ix.writer() as w:
        for doc_id, body in docs.items():
            w.add_document(id=doc_id, body=body, spelling=body)
    reopened = storage.open_index()  # schema (and analyzers) come back from the pickled TOC
    yield reopened
    reopened.close()
    ix.close()


def search(ix, query: str) -> list[str]:
    with ix.searcher() as s:
        parsed = QueryParser("body", ix.schema).parse(query)
        return sorted(hit["id"] for hit in s.search(parsed))


@pytest.mark.parametrize("query", ["vbeam", "VBeam", "V-Beam", "Vbeam", join_forms("V Beam")])
def test_index_matches_vbeam_spellings(ram_index, query):
    assert search(ram_index, query) == ["vbeam"]


@pytest.mark.parametrize("query", ["co2 laser", '"co2 laser"', "CO₂", "CO2 lasers"])
def test_index_matches_co2_laser(ram_index, query):
    assert search(ram_index, query) == ["co2"]


def test_index_keeps_melanoma_and_melasma_apart(ram_index):
    assert search(ram_index, "melanoma") == ["melanoma"]
    assert search(ram_index, "melasma") == ["melasma"]


def test_index_keeps_retina_and_retin_a_apart(ram_index):
    assert search(ram_index, "retina") == ["retina"]
    assert search(ram_index, "Retin-A") == ["retin_a"]


def test_reopened_index_uses_the_same_analyzer(ram_index):
    assert ram_index.schema["body"].analyzer == text_analyzer()
    assert ram_index.schema["spelling"].analyzer == plain_analyzer()
