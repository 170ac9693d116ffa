"""Open typo correction: known words are never corrected, clinical pairs never mix, ties are choices."""

from __future__ import annotations

import pytest

from kb import index
from kb.models import Article
from kb.search import Searcher
from kb.search.language import function_words, is_dictionary_word, is_function_word
from kb.search.suggest import _confident
from kb.store import open_store

TEXTS = {
    "melasma": "Melasma causes brown patches on the cheeks, often in pregnancy.",
    "melanoma": "Melanoma is a skin cancer; check moles for change.",
    "psoriasis": "Psoriasis gives scaly plaques on elbows and knees.",
    "sunscreen": "Sunscreen protects skin from sunburn.",
}


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("spelling")
    with open_store(root / "kb.sqlite3") as store:
        for name, text in TEXTS.items():
            store.save_article(Article(url=f"https://derm.example/{name}", title=name.title(), text=text))
        index.rebuild(store, root / "ix")
    s = Searcher(root / "ix")
    yield s
    s.close()


def test_ordinary_and_function_words_come_from_shipped_lists() -> None:
    assert all(is_dictionary_word(w) for w in ("kids", "dosing", "freezing", "scar", "got"))
    assert not is_dictionary_word("psorisis") and not is_dictionary_word("excema")
    assert all(is_function_word(w) for w in ("how", "often", "should", "what", "is", "can", "my"))
    assert not {"not", "no", "without", "after", "face", "side"} & function_words()  # they change the meaning


@pytest.mark.parametrize("query", ["sunscreen kids", "psoriasis dosing", "scar cream", "wart freezing",
                                   "melasma", "melanoma", "what have you got for psoriasis"])
def test_known_words_are_never_corrected_nor_questioned(searcher, query) -> None:
    results = searcher.search(query)
    assert results.corrected_query is None and results.suggestions == []


def test_typos_are_corrected_openly_to_the_nearest_clinical_term(searcher) -> None:
    results = searcher.search("psorisis")
    assert (results.query, results.corrected_query, results.total) == ("psorisis", "psoriasis", 1)
    near = searcher.search("melasama")  # one edit from melasma, two from melanoma
    assert near.corrected_query == "melasma" and [h.url for h in near.hits] == ["https://derm.example/melasma"]
    assert searcher.search("psorisis", exact=True).total == 0


def test_equally_near_clinical_terms_are_a_choice_never_a_guess(searcher) -> None:
    results = searcher.search("melasoma")  # one edit from melasma and from melanoma
    assert results.corrected_query is None and results.total == 0
    assert sorted(results.suggestions) == ["melanoma", "melasma"]


def test_confidence_rule() -> None:
    assert _confident([("rosacea", 1, 3)]) == "rosacea"
    assert _confident([("melasma", 1, 5), ("melanoma", 1, 1)]) == ""  # clinical tie: never by frequency
    assert _confident([("melasma", 1, 5), ("melanoma", 2, 9)]) == "melasma"
    assert _confident([("kits", 1, 30), ("kiss", 1, 2)]) == "kits"  # a clearly commoner ordinary word
    assert _confident([("kits", 1, 3), ("kiss", 1, 2)]) == ""
    assert _confident([]) == ""
