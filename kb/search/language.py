"""Language: which query words are ordinary English (never "misspelt") and which are function words.

Two shipped lists, loaded once per process on first use and never downloaded at run time:
- the dictionary of ordinary words is pyspellchecker's English frequency list (~160,000 words), so a
  word absent from the index ("kids", "dosing", "freezing") is not taken for a typo;
- function and question words come from the `stop-words` package's English list, minus the words
  that carry clinical meaning there ("not", "without", "after", "face", "side", ...: MEANINGFUL) and
  minus anything the medical vocabulary knows. They rank a little but never decide matching or
  highlighting on their own (DESIGN.md, medical search rules).
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from kb.search.vocabulary import _is_clinical, _vocab_terms

log = logging.getLogger(__name__)

#: Words of the stop-words list that change what a patient asks (negation, time, place, body,
#: degree) or name a clinical idea: they stay ordinary, deciding words.
MEANINGFUL: frozenset[str] = frozenset(
    """no not nor non none never without against except after before during since until till prior
    under over above below between inside outside within across near off out up down back front side
    sides face faces bottom top left right high higher low lower old older young younger new small
    large big long little thick thin less more most same different cause causes effect effects change
    changes problem problems test work fire ring free full half first second third one two three four
    five six seven eight nine ten twelve twenty hundred early late later year years""".split()
)

_lock = threading.Lock()
_dictionary: list[Any] = []


def _words() -> Any:
    """pyspellchecker's English word frequencies, loaded once (~0.15 s), or None when unavailable."""
    if not _dictionary:
        with _lock:
            if not _dictionary:
                try:
                    from spellchecker import SpellChecker
                    _dictionary.append(SpellChecker(language="en").word_frequency)
                except Exception:  # a missing list must not take search down: nothing is then "ordinary"
                    log.exception("could not load the English word list: every unindexed word may be corrected")
                    _dictionary.append(None)
    return _dictionary[0]


def is_dictionary_word(word: str) -> bool:
    """Whether `word` is ordinary English (so never a misspelling, indexed or not)."""
    words = _words()
    return words is not None and word.casefold() in words


@lru_cache(maxsize=1)
def function_words() -> frozenset[str]:
    """Question and function words: the stop-words English list without MEANINGFUL or vocabulary words."""
    try:
        from stop_words import get_stop_words
        listed = {w.casefold() for w in get_stop_words("en")}
    except Exception:  # fall back to matching every word, as before
        log.exception("could not load the stop-words list: question words will decide matching")
        return frozenset()
    vocabulary = {key for key, _ in _vocab_terms()}
    return frozenset(w for w in listed if w.isalpha() and w not in MEANINGFUL and w not in vocabulary
                     and not _is_clinical(w))


def is_function_word(word: str) -> bool:
    """Whether a typed word only frames a question ("how", "often", "should", "my")."""
    return word.casefold().strip("'’") in function_words()
