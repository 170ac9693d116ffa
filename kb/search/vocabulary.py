"""Vocabulary glue: kb.vocab's synonyms, clinical terms and term list, loaded once and failing soft.

The query compiler expands words through it and the spelling code asks it which words are
clinical (never "corrected") and which terms to complete. A missing or broken vocabulary file
logs once and leaves search working without expansion, so every call here degrades to "nothing".
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)


def _load_vocabulary() -> Any | None:
    try:
        from kb.vocab import vocabulary
    except ImportError:
        log.warning("kb.vocab is not available: searching without synonym expansion")
        return None
    try:
        return vocabulary()
    except Exception:  # a broken vocabulary file must not take search down
        log.exception("could not load the vocabulary: searching without synonym expansion")
        return None


_vocab_lock = threading.Lock()
_vocab: list[Any] = []


def _vocabulary() -> Any | None:
    if not _vocab:
        with _vocab_lock:
            if not _vocab:
                _vocab.append(_load_vocabulary())
    return _vocab[0]


@lru_cache(maxsize=4096)
def _expansions(text: str) -> tuple[tuple[str, float], ...]:
    """Vocabulary expansions of `text` other than itself, (text, weight) with weight < 1."""
    vocab = _vocabulary()
    if vocab is None:
        return ()
    try:
        found = list(vocab.expand(text))
    except Exception:  # a broken vocabulary must not take search down
        log.exception("vocabulary expansion failed for %r", text)
        return ()
    key = text.casefold()
    out = []
    for item in found:
        term, weight = (item, 0.5) if isinstance(item, str) else (item[0], float(item[1]))
        if term.casefold() != key and weight > 0:
            out.append((term, min(weight, 0.95)))
    return tuple(out)


@lru_cache(maxsize=8192)
def _is_clinical(word: str) -> bool:
    vocab = _vocabulary()
    if vocab is None:
        return False
    try:
        return bool(vocab.is_clinical(word))
    except Exception:  # a broken vocabulary must not take search down
        return False


@lru_cache(maxsize=1)
def _vocab_terms() -> tuple[tuple[str, str], ...]:
    """(casefolded, display) vocabulary terms, sorted for prefix lookups."""
    vocab = _vocabulary()
    if vocab is None:
        return ()
    try:
        terms = list(vocab.terms())
    except Exception:  # a broken vocabulary must not take search down
        return ()
    return tuple(sorted({(t.casefold(), t) for t in terms if t}))
