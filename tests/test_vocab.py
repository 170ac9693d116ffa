"""The shipped medical vocabulary and its expansion, clinical and checking rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.errors import ConfigError, KBError
from kb.vocab import (
    EQUIVALENT_WEIGHT,
    EXACT_WEIGHT,
    RELATED_WEIGHT,
    Vocabulary,
    explain_lines,
    list_lines,
    vocabulary,
)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return vocabulary()


def weights(vocab: Vocabulary, query: str) -> dict[str, float]:
    return {term.casefold(): weight for term, weight in vocab.expand(query)}


# ---------------------------------------------------------------- the shipped file


def test_shipped_file_is_sound(vocab):
    assert vocab.check() == []


def test_shipped_file_has_at_least_200_sourced_entries(vocab):
    assert len(vocab.entries) >= 200
    assert all(e.source.strip() for e in vocab.entries)
    assert vocab.version


def test_shipped_file_covers_every_kind(vocab):
    assert {e.kind for e in vocab.entries} >= {"lay", "brand", "device", "abbreviation", "procedure"}
    assert {e.relation for e in vocab.entries} == {"equivalent", "related", "broader"}


def test_vocabulary_is_cached_and_path_overridable(tmp_path):
    assert vocabulary() is vocabulary()
    custom = tmp_path / "v.toml"
    custom.write_text('version = "x"\n[[entry]]\nterms = ["foo", "bar"]\nkind = "lay"\nsource = "test"\n')
    other = vocabulary(custom)
    assert other is not vocabulary() and other.version == "x"
    assert weights(other, "foo") == {"foo": 1.0, "bar": EQUIVALENT_WEIGHT}


# ---------------------------------------------------------------- directions


@pytest.mark.parametrize("query, expected", [
    ("zits", "acne"), ("pimples", "acne"), ("hives", "urticaria"), ("eczema", "atopic dermatitis"),
    ("hair loss", "alopecia"), ("warts", "verruca"), ("cold sores", "herpes labialis"), ("moles", "nevus"),
    ("stretch marks", "striae"), ("age spots", "solar lentigo"), ("liver spots", "solar lentigo"),
    ("brown spots", "solar lentigo"), ("excessive sweating", "hyperhidrosis"),
])
def test_lay_to_clinical(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


@pytest.mark.parametrize("query, expected", [
    ("urticaria", "hives"), ("alopecia", "hair loss"), ("verruca", "warts"), ("striae", "stretch marks"),
    ("herpes labialis", "cold sores"), ("atopic dermatitis", "eczema"),
])
def test_clinical_to_lay(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


@pytest.mark.parametrize("query, expected", [
    ("Botox", "onabotulinumtoxina"), ("Dysport", "abobotulinumtoxina"), ("Xeomin", "incobotulinumtoxina"),
    ("Jeuveau", "prabotulinumtoxina"), ("Daxxify", "daxibotulinumtoxina"), ("Accutane", "isotretinoin"),
    ("Retin-A", "tretinoin"), ("Differin", "adapalene"), ("Dupixent", "dupilumab"), ("Juvéderm", "hyaluronic acid filler"),
    ("Kybella", "deoxycholic acid"), ("Soolantra", "ivermectin cream"),
])
def test_brand_to_generic(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


@pytest.mark.parametrize("query, expected", [
    ("onabotulinumtoxinA", "botox"), ("isotretinoin", "accutane"), ("adapalene", "differin"),
    ("tretinoin", "retin-a"), ("imiquimod", "aldara"), ("adalimumab", "humira"),
])
def test_generic_to_brand(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


@pytest.mark.parametrize("query, expected", [
    ("VBeam", "pulsed dye laser"), ("V-Beam", "pulsed dye laser"), ("V Beam", "pulsed dye laser"),
    ("pulsed dye laser", "vbeam"), ("Fraxel", "fractional laser"), ("PicoSure", "picosecond laser"),
    ("CoolSculpting", "cryolipolysis"), ("Cool Sculpting", "cryolipolysis"), ("Morpheus8", "radiofrequency microneedling"),
    ("Ultherapy", "microfocused ultrasound"), ("IPL", "intense pulsed light"),
])
def test_devices(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


@pytest.mark.parametrize("query, expected", [
    ("AK", "actinic keratosis"), ("BCC", "basal cell carcinoma"), ("SCC", "squamous cell carcinoma"),
    ("SPF", "sun protection factor"), ("PDT", "photodynamic therapy"), ("Mohs", "mohs micrographic surgery"),
])
def test_abbreviations_and_procedures(vocab, query, expected):
    assert weights(vocab, query)[expected] == EQUIVALENT_WEIGHT


# ---------------------------------------------------------------- weights and phrases


def test_exact_above_equivalent_above_related(vocab):
    w = weights(vocab, "IPL")
    assert w["ipl"] == EXACT_WEIGHT
    assert w["intense pulsed light"] == EQUIVALENT_WEIGHT
    assert w["bbl"] == RELATED_WEIGHT  # BBL is a brand of IPL: related, not identical
    assert EXACT_WEIGHT > EQUIVALENT_WEIGHT > RELATED_WEIGHT
    assert [wt for _, wt in vocab.expand("IPL")] == sorted((wt for _, wt in vocab.expand("IPL")), reverse=True)


def test_bbl_is_not_an_equivalent_of_ipl(vocab):
    assert weights(vocab, "BBL")["intense pulsed light"] == RELATED_WEIGHT


def test_multi_word_phrase_wins_over_its_words(vocab):
    w = weights(vocab, "brown spots on my face")
    assert w["brown spots"] == EXACT_WEIGHT and "solar lentigo" in w
    assert "acne" not in w  # "spots" alone would relate to acne


def test_query_with_two_concepts(vocab):
    w = weights(vocab, "botox for sweating")
    assert w["botox"] == EXACT_WEIGHT and w["sweating"] == EXACT_WEIGHT
    assert w["onabotulinumtoxina"] == EQUIVALENT_WEIGHT
    assert w["hyperhidrosis"] == RELATED_WEIGHT


def test_inflections_match(vocab):
    assert weights(vocab, "Brown Spot")["solar lentigo"] == EQUIVALENT_WEIGHT
    assert weights(vocab, "wart")["verruca"] == EQUIVALENT_WEIGHT


def test_narrower_terms_are_not_related_to_their_siblings(vocab):
    w = weights(vocab, "melanoma")
    assert w["skin cancer"] == RELATED_WEIGHT
    assert "basal cell carcinoma" not in w
    assert weights(vocab, "skin cancer")["basal cell carcinoma"] == RELATED_WEIGHT


def test_expansions_have_no_duplicates(vocab):
    terms = [vocab.key(t) for t, _ in vocab.expand("Botox and Dysport for crow's feet and sweaty palms")]
    assert len(terms) == len(set(terms))


def test_text_without_vocabulary_expands_to_nothing(vocab):
    assert vocab.expand("what time is it") == []
    assert vocab.expand("") == []


def test_matches_report_spans(vocab):
    text = "Is V Beam better than IPL?"
    assert [(m.text, text[m.start:m.end]) for m in vocab.matches(text)] == [("V Beam", "V Beam"), ("IPL", "IPL")]


# ---------------------------------------------------------------- clinical, terms


@pytest.mark.parametrize("word", ["melanoma", "Melanomas", "melasma", "BCC", "SCC", "Botox", "isotretinoin",
                                  "basal cell carcinoma", "rubella", "rubeola", "pemphigus", "pemphigoid"])
def test_clinical_terms_are_never_fuzzed(vocab, word):
    assert vocab.is_clinical(word)


@pytest.mark.parametrize("word", ["laser", "face", "spots", "the", ""])
def test_ordinary_words_are_not_clinical(vocab, word):
    assert not vocab.is_clinical(word)


def test_terms_lists_every_term_once(vocab):
    terms = vocab.terms()
    assert {"Botox", "acne", "melasma", "pulsed dye laser"} <= set(terms)
    assert len(terms) == len({t.casefold() for t in terms})
    assert terms == sorted(terms, key=str.casefold)


# ---------------------------------------------------------------- check catches a broken file

BROKEN = """
[forms]
"v beam" = ["vbeam"]
foo = ["bar", "baz"]
qux = ["bar"]

[plurals]
melasma = "melanoma"

[[entry]]
terms = ["acne", "zits"]
kind = "lay"
source = ""

[[entry]]
terms = ["zits", "pimples"]
kind = "slang"
source = "x"

[[entry]]
terms = ["lonely"]
kind = "lay"
relation = "similar"
source = "x"

[[entry]]
terms = ["laser", "", "the"]
kind = "device"
source = "x"

[[entry]]
terms = ["X-Beam", "pulsed thing", "Pulsed  Thing"]
kind = "device"
source = "x"

[[entry]]
terms = ["melasma", "melanoma"]
kind = "lay"
relation = "related"
source = "x"
clinical = true

[[entry]]
terms = "not a list"
"""


def test_check_catches_a_broken_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    problems = "\n".join(Vocabulary.load(path).check())
    for expected in [
        "no 'version'",
        "entry 1 (acne): no source",
        "term 'zits' is also in entry 1",
        "kind 'slang'",
        "relation 'similar'",
        "entry 3 (lonely): needs at least two terms",
        "entry 4 (laser): empty term",
        "term 'the' analyzes to nothing",
        "splits 'X-Beam' into x + beam",
        "term 'Pulsed  Thing' is listed twice",
        "[forms] 'v beam': a joined token must be one word",
        "spelling 'bar' is joined to both 'foo' and 'qux'",
        "[plurals] 'melasma' = 'melanoma': not an inflection",
        "entry 7: 'terms' must be a list of strings",
    ]:
        assert expected in problems, expected


def test_invalid_toml_raises_config_error_with_remedy(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("version = \n[[entry]\n")
    with pytest.raises(ConfigError) as info:
        Vocabulary.load(path)
    assert "not valid TOML" in str(info.value) and info.value.remedy
    assert isinstance(info.value, KBError)


def test_missing_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read vocabulary file"):
        Vocabulary.load(tmp_path / "missing.toml")


def test_wrong_table_shapes_are_reported_not_raised():
    vocab = Vocabulary({"version": "1", "forms": ["x"], "plurals": {"a": 1}, "clinical_terms": "melanoma",
                        "entry": {"terms": ["a"]}})
    problems = vocab.check()
    assert "[forms] must be a table" in problems
    assert "[plurals] a: must be a string" in problems
    assert "'clinical_terms' must be a list of strings" in problems
    assert "'entry' must be an array of tables ([[entry]])" in problems


# ---------------------------------------------------------------- CLI helpers


def test_list_lines_show_label_terms_and_source(vocab):
    lines = list_lines(vocab, kind="brand")
    assert any(line.startswith("onabotulinumtoxinA  <-  Botox") and "DailyMed" in line for line in lines)
    assert all("[brand/" in line for line in lines)


def test_explain_lines_show_analysis_and_expansion(vocab):
    text = "\n".join(explain_lines(vocab, "V Beam for melasma"))
    assert "index terms (text):  vbeam melasma" in text
    assert "query rewrite:       vbeam for melasma" in text
    assert "expand 0.6  pulsed dye laser" in text
    assert "never fuzzed:        melasma" in text


def test_shipped_file_path_is_inside_the_package():
    import kb

    assert (Path(kb.__file__).parent / "data" / "vocabulary.toml").is_file()


def test_check_flags_clinical_words_the_stemmer_conflates():
    vocab = Vocabulary({"version": "1", "clinical_terms": ["keratin", "keratinization", "nevus", "nevuses"]})
    problems = vocab.check()
    assert problems == ["clinical words ['keratin', 'keratinization'] share the index stem 'keratin'"]
