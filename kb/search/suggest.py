"""Suggest: "Did you mean" for words the audience's documents lack, and completions for the search box.

Spelling look-ups walk the unstemmed `spell` word list with a Levenshtein automaton, so they are
bounded per query (MAX_CORRECTED_WORDS words, MAX_CORRECTION_CANDIDATES candidates each) and
cached per index state and audience. Every candidate is counted in the documents the audience may
see, so a staff-only word is never offered to patients, and a clinical term is never "corrected"
into another (melasma is not melanoma, DESIGN.md). Suggestions are offered, never applied.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import islice

from whoosh.support.levenshtein import distance

from kb.querylang import Parsed
from kb.search.language import is_dictionary_word, is_function_word
from kb.search.postings import DocSet
from kb.search.state import _Request
from kb.search.vocabulary import _is_clinical, _vocab_terms

SUGGESTION_LIMIT = 3
CONFIDENT_DF_RATIO = 3  # a non-clinical candidate this many times commoner than an equally near one wins
RARE_DF = 2  # with few results, a word this rare may be a typo of a much commoner one
#: Spelling look-ups per query: only the first this many words that need one get it (in query order,
#: so the answer does not depend on what is cached). Each look-up walks the word list with a
#: Levenshtein automaton (~15 ms at 3,000 articles, more with the vocabulary), so a query of 30
#: unknown words used to cost 30 of them (~0.5 s) and held up every other request in the process.
MAX_CORRECTED_WORDS = 3
MAX_CORRECTION_CANDIDATES = 30  # index words within the edit distance examined per look-up
MAX_CORRECTION_CHARS = 30  # longer "words" (pasted codes, URLs) get no look-up


def _vocabulary_lookalikes(word: str, maxdist: int) -> list[tuple[str, int]]:
    """(one-word vocabulary term, edit distance) near `word`, same first letter; MAX_CORRECTION_CANDIDATES at most."""
    out: list[tuple[str, int]] = []
    for key, _display in _vocab_terms():
        if " " not in key and abs(len(key) - len(word)) <= maxdist and key[:1] == word[:1] and key != word:
            d = distance(key, word, limit=maxdist + 1)
            if d <= maxdist:
                out.append((key, d))
                if len(out) >= MAX_CORRECTION_CANDIDATES:
                    break
    return out


def _visible_df(ctx: _Request, word: str, audience_docs: DocSet, cap: int = 50) -> int:
    """Documents this audience can see that contain `word` (counting stops at `cap`)."""
    return ctx.visible_df(word, audience_docs, cap)


def _corrections(ctx: _Request, word: str, audience_docs: DocSet) -> list[tuple[str, int, int]]:
    """(term, edit distance, visible df) of indexed or vocabulary words near `word`, nearest then commonest."""
    maxdist = 1 if len(word) <= 5 else 2
    candidates = _indexed_lookalikes(ctx, word, maxdist, audience_docs)
    for key, d in _vocabulary_lookalikes(word, maxdist):
        candidates.setdefault(key, d)
    ranked = []
    for term, dist in candidates.items():
        plain = ctx.analyze("spell", term)
        if not plain:
            continue
        df = _visible_df(ctx, plain[0], audience_docs)
        if df:
            ranked.append((dist, -df, term))
    ranked.sort()
    return [(t, dist, -negdf) for dist, negdf, t in ranked[:SUGGESTION_LIMIT]]


def _indexed_lookalikes(ctx: _Request, word: str, maxdist: int, audience_docs: DocSet) -> dict[str, int]:
    """Visible indexed words near `word` -> edit distance; at most MAX_CORRECTION_CANDIDATES examined per pass."""
    candidates: dict[str, int] = {}
    for prefix in (2, 1):
        near = ctx.words_within(word, maxdist, prefix)
        for term in islice(near, MAX_CORRECTION_CANDIDATES):
            # Only visible words may stop the search: a staff-only look-alike must not hide a public one.
            if term != word and _visible_df(ctx, term, audience_docs):
                candidates.setdefault(term, distance(term, word, limit=maxdist + 1))
        if candidates:
            break
    return candidates


@dataclass
class Spelling:
    """What the query's spelling calls for: a correction to search, or suggestions to offer."""

    corrected: str = ""  # the query with confident corrections applied ("" when none)
    suggestions: list[str] = field(default_factory=list)  # offered: ambiguous choices, rare-word look-alikes


def _known(ctx: _Request, token: str, part: str) -> bool:
    """Known words are never misspellings: clinical, in the vocabulary, ordinary English, or a function word."""
    return _is_clinical(token) or _is_clinical(part) or _in_vocabulary(part) or is_dictionary_word(part) \
        or is_function_word(part)


def _in_vocabulary(word: str) -> bool:
    terms = _vocab_terms()
    key = word.casefold()
    i = bisect_left(terms, (key,))
    return i < len(terms) and terms[i][0] == key


def _confident(found: list[tuple[str, int, int]]) -> str:
    """The one correction worth applying, or "" when two are equally near (then the patient chooses).

    Equally near clinical terms are never decided for the patient; for other words a clearly
    commoner candidate (CONFIDENT_DF_RATIO times the documents) may win the tie.
    """
    if not found:
        return ""
    best = found[0]
    ties = [f for f in found[1:] if f[1] == best[1]]
    if not ties:
        return best[0]
    if any(_is_clinical(t) for t, _, _ in [best, *ties]):
        return ""
    return best[0] if best[2] >= CONFIDENT_DF_RATIO * max(d for _, _, d in ties) else ""


def check_spelling(ctx: _Request, parsed: Parsed, text: str, audiences: tuple[str, ...], total: int) -> Spelling:
    """Corrections for words unknown to the audience's documents, the vocabulary and the dictionary."""
    audience_docs = ctx.audience_docs(audiences)
    confident: list[tuple[str, str]] = []
    offered: list[tuple[str, list[str]]] = []
    looked_up = 0
    for word in parsed.words():
        for part in word.split():
            if looked_up >= MAX_CORRECTED_WORDS:
                break  # bounded work per query, whatever is cached (see MAX_CORRECTED_WORDS)
            tokens = ctx.analyze("spell", part)
            if len(tokens) != 1:
                continue
            token = tokens[0]
            if not 3 <= len(token) <= MAX_CORRECTION_CHARS or not token.isalpha():
                continue
            df = _visible_df(ctx, token, audience_docs, cap=RARE_DF + 1)
            rare = df <= RARE_DF and total < 3
            if (df and not rare) or _known(ctx, token, part):
                continue  # a known word is never a misspelling (melasma is not melanoma)
            looked_up += 1
            found = ctx.state.corrections(token, audiences, lambda t=token: _corrections(ctx, t, audience_docs))
            if df:  # rare but present: never corrected; only a much commoner look-alike is offered
                found = [f for f in found
                         if _visible_df(ctx, ctx.analyze("spell", f[0])[0], audience_docs, 10 * df) >= 10 * df]
                if found:
                    offered.append((part, [f[0] for f in found]))
                continue
            choice = _confident(found)
            if choice:
                confident.append((part, choice))
            elif found:
                offered.append((part, [f[0] for f in found if f[1] == found[0][1]]))
    corrected = _replace(text, confident) if confident else ""
    return Spelling(corrected=corrected if corrected != text else "",
                    suggestions=_variants(corrected or text, offered))


def _replace(text: str, fixes: list[tuple[str, str]]) -> str:
    """`text` with each (typed word, replacement) applied once, as a whole word."""
    for part, choice in fixes:
        text = re.sub(r"(?<!\w)" + re.escape(part) + r"(?!\w)", lambda _m, c=choice: c, text,
                      count=1, flags=re.IGNORECASE)
    return text


def _variants(text: str, fixes: list[tuple[str, list[str]]]) -> list[str]:
    """Up to SUGGESTION_LIMIT queries: the first word's alternatives in turn, the others' best."""
    out: list[str] = []
    if not fixes:
        return out
    for rank in range(min(SUGGESTION_LIMIT, len(fixes[0][1]))):
        chosen = [(part, found[min(rank, len(found) - 1)] if i == 0 else found[0])
                  for i, (part, found) in enumerate(fixes)]
        suggestion = _replace(text, chosen)
        if suggestion != text and suggestion not in out:
            out.append(suggestion)
    return out


def did_you_mean(ctx: _Request, parsed: Parsed, text: str, audiences: tuple[str, ...], total: int) -> list[str]:
    """"Did you mean" queries only (nothing applied): confident corrections first, then choices."""
    spelling = check_spelling(ctx, parsed, text, audiences, total)
    return ([spelling.corrected] if spelling.corrected else []) + spelling.suggestions


def add_vocabulary_completions(out: dict[str, str], key: str, limit: int) -> None:
    """Vocabulary terms starting with `key` (lower-cased key -> display form), until `out` holds `limit`."""
    terms = _vocab_terms()
    i = bisect_left(terms, (key,))
    while i < len(terms) and terms[i][0].startswith(key) and len(out) < limit:
        out.setdefault(terms[i][0], terms[i][1])
        i += 1


def completions(ctx: _Request, key: str, limit: int, audiences: tuple[str, ...]) -> list[str]:
    """Completions of `key` (a title key): visible titles, then vocabulary terms, then visible words."""
    audience_docs = ctx.audience_docs(audiences)
    out: dict[str, str] = {}
    examined = 0
    for raw in ctx.reader.expand_prefix("title_key", key):
        examined += 1
        if examined > 500 or len(out) >= limit:
            break
        term = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        docs = ctx.term_docs("title_key", term) & audience_docs
        if docs:
            title = ctx.searcher.stored_fields(docs.first()).get("title") or term
            out.setdefault(title.casefold(), title)
    add_vocabulary_completions(out, key, limit)
    if len(out) < limit:
        head, _, last = key.rpartition(" ")
        if len(last) >= 2:
            words = []
            for n, raw in enumerate(ctx.reader.expand_prefix("spell", last)):
                if n >= 300:
                    break
                word = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                df = _visible_df(ctx, word, audience_docs)
                if df:
                    words.append((-df, word))
            for _, word in sorted(words)[:limit]:
                completion = f"{head} {word}".strip()
                out.setdefault(completion.casefold(), completion)
                if len(out) >= limit:
                    break
    return list(out.values())[:limit]
