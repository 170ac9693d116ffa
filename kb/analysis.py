"""Whoosh analyzers: how text becomes index terms.

Clinicians and patients write the same thing many ways (V-Beam, V Beam, Vbeam;
CO2, CO₂, ＣＯ２; naevus, nevus), so every field is analyzed by one chain:

1. ``MedicalTokenizer`` folds the text (NFKD compatibility forms, case, accents,
   dashes and quotes) with one ``str.translate`` call, then finds tokens with one
   compiled regex that also *joins known split forms* ("v beam" -> ``vbeam``,
   "retin-a" -> ``retin_a``) and maps British spellings. Which forms are joined is
   data (the ``[forms]`` and ``[spellings]`` tables of kb/data/vocabulary.toml),
   not code. Character offsets always point into the original text, so Whoosh's
   highlighter cuts the right words.
2. ``ClinicalStopFilter`` drops a small English stop list that keeps words which
   change clinical meaning (see ``STOP_WORDS``).
3. ``ClinicalStemFilter`` (text fields only) maps Latin plurals (nevi -> nevus,
   keratoses -> keratosis), then applies the Snowball English stemmer, but never
   to protected words: drug, brand and device names and short clinical tokens
   from the vocabulary (botox, isotretinoin, vbeam, ipl, co2, spf, ...).

These are building blocks; kb.vocab builds the chains from the shipped vocabulary
(the dependency runs one way, vocab -> analysis): ``text_analyzer()`` (stemmed)
serves title, headings and body; ``plain_analyzer()`` (same normalisation, no
stemming) serves the spelling field, because fuzzy matching and "Did you mean"
need real words, not stems.

Whoosh pickles the schema, analyzers included, into the index TOC. Every class
here is module level and pickles a small, versioned state, so an index keeps the
analysis it was built with until it is rebuilt (queries then stay consistent with
the index even after the vocabulary file changes; ``kb.vocab.fingerprint()`` tells index.py
when a rebuild is due).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any, Iterable, Iterator, Mapping

from whoosh.analysis import StemFilter, StopFilter, Token, Tokenizer
from whoosh.analysis.analyzers import CompositeAnalyzer
from whoosh.support.charset import accent_map

log = logging.getLogger(__name__)

#: Bump when the analysis chain changes in a way that needs a reindex.
ANALYSIS_VERSION = 1

#: A deliberately small English stop list (function words only). Kept on purpose,
#: because they flip or qualify clinical meaning: not, no, nor, without (while
#: "with" goes), under, over, after, before, off ("off-label"), against, during,
#: above, below, more, less. "us" is kept (US = ultrasound), "who" is kept (WHO);
#: "can", "may", "will", "how" are left to BM25's IDF. "a" and "i" are stop words
#: except right after a designator ("vitamin A", "hepatitis A", "type I",
#: "ultraviolet A"), see ``KEEP_AFTER``; "Retin-A" never reaches this filter, the
#: tokenizer has already joined it into ``retin_a``.
STOP_WORDS: frozenset[str] = frozenset(
    """a an and are as at be been being but by for from had has have he her hers him his
    i if in into is it its me my of on or our ours she so such than that the their theirs
    them then there these they this those to was we were what which with would you your""".split()
)

#: Stop words that are meaningful designators after these words ("vitamin a").
CONTEXTUAL_STOPS: frozenset[str] = frozenset({"a", "i"})
KEEP_AFTER: frozenset[str] = frozenset(
    """vitamin hepatitis type stage grade class group phase protein toxin ultraviolet uv
    factor complex collagen schedule""".split()
)

#: Tokens longer than this are junk (hashes, base64, run-together URLs), not words.
MAX_TOKEN_CHARS = 64

_WORD = r"\w+(?:\.\w+)*"
# English clitics after a word ("patient's", "don't") are consumed, not indexed:
# with single-letter tokens kept (vitamin D, type 1) they would otherwise add an
# "s" or "t" term to nearly every document.
_CLITIC = r"'(?:s|t|d|ll|re|ve|m)(?!\w)"
_SEPARATOR = r"[\s\-]+"

# --------------------------------------------------------------------------- folding

_EXTRA_FOLDS = {"æ": "ae", "œ": "oe", "ĳ": "ij", "ı": "i"}
_APOSTROPHES = "\u2018\u2019\u201b\u02bc\u2032\uff07"
_DASHES = "\u2212\u2010\u2011\u2012\u2013\u2014\u2015\ufe63\uff0d"


def fold_char(char: str) -> str:
    """Fold one character the way the index sees it (case, accents, compatibility forms)."""
    if char in _APOSTROPHES:
        return "'"
    if char in _DASHES or unicodedata.category(char) == "Pd":
        return "-"
    if char.isspace():
        return " "
    category = unicodedata.category(char)
    if category[0] == "M":  # a combining mark left over from decomposed text
        return ""
    if category[0] not in "LN":
        # Symbols stay symbols: NFKD would turn "Botox™" into "botoxtm".
        return char
    decomposed = unicodedata.normalize("NFKD", char)
    base = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    out = []
    for c in base:
        c = _EXTRA_FOLDS.get(c, c)
        if not c.isascii():  # letters NFKD cannot take apart: ø, ł, đ, þ
            c = accent_map.get(ord(c), c).lower()
        out.append(c)
    return "".join(out)


class _FoldTable(dict):
    """``str.translate`` table that folds each new character once, then from C."""

    def __init__(self) -> None:
        super().__init__({i: chr(i).lower() for i in range(128)})
        self.length_changing: set[str] = set()

    def __missing__(self, code: int) -> str:
        char = chr(code)
        folded = fold_char(char)
        if len(folded) != 1:
            self.length_changing.add(char)
        self[code] = folded
        return folded


_FOLD = _FoldTable()


def fold(text: str) -> str:
    """Case-, accent- and compatibility-fold ``text`` (CO₂ -> co2, Juvéderm -> juvederm)."""
    return text.lower() if text.isascii() else text.translate(_FOLD)


def _fold_with_offsets(text: str) -> tuple[str, list[int] | None]:
    """Fold ``text``; the offsets list maps folded positions back when lengths differ."""
    if text.isascii():
        return text.lower(), None
    folded = text.translate(_FOLD)
    changing = _FOLD.length_changing
    if not changing or changing.isdisjoint(text):
        return folded, None
    # Rare slow path: ligatures (ﬁ), ß, æ or stray combining marks change lengths.
    parts: list[str] = []
    offsets: list[int] = []
    for i, char in enumerate(text):
        f = _FOLD[ord(char)]
        parts.append(f)
        offsets.extend([i] * len(f))
    offsets.append(len(text))
    return "".join(parts), offsets


# --------------------------------------------------------------------------- tokenizer


def _variant_pattern(variant: str) -> str:
    """Regex for one folded spelling: word runs literal, blanks/hyphens flexible."""
    out = []
    for run in re.findall(r"\w+|\W+", variant):
        if re.fullmatch(r"\w+", run):
            out.append(re.escape(run))
        elif run.strip(" -") == "":
            out.append(_SEPARATOR)
        else:
            out.append(r"\s*" + re.escape(run.strip()) + r"\s*")
    return "".join(out)


class MedicalTokenizer(Tokenizer):
    """Fold the text, split it into words with one compiled regex, join known split forms.

    ``forms`` maps each joined token to the spellings that become it, e.g.
    ``{"vbeam": ["v-beam", "v beam"], "nevus": ["naevus"]}``.
    """

    _STATE_VERSION = 1

    def __init__(self, forms: Mapping[str, Iterable[str]] | None = None) -> None:
        self.forms: dict[str, tuple[str, ...]] = {
            fold(joined): tuple(sorted({fold(v) for v in variants}))
            for joined, variants in sorted((forms or {}).items())
        }
        self._compile()

    def _compile(self) -> None:
        # Speed matters (100k articles): one simple word regex runs in C, and only a
        # word that can begin a known form costs one extra dict hit and an anchored
        # match. A single big alternation would be tried at every character.
        alternatives: list[tuple[str, str]] = []
        for joined, variants in self.forms.items():
            for variant in variants:
                if variant != joined:
                    alternatives.append((variant, joined))
        # Longest spelling first, so "v beam perfecta" would win over "v beam".
        alternatives.sort(key=lambda a: (-len(a[0]), a[0]))
        single: dict[str, str] = {}
        multi: dict[str, list[tuple[str, str]]] = {}
        for variant, joined in alternatives:
            first = re.match(r"\w+", variant)
            if first is None:
                continue
            if first.end() == len(variant):
                single[variant] = joined
            else:
                multi.setdefault(first.group(), []).append((variant, joined))
        self._joined: dict[str, str] = {}
        starts: dict[str, tuple[str | None, re.Pattern[str] | None]] = {}
        for word in set(single) | set(multi):
            regex = None
            if word in multi:
                branches = []
                for variant, joined in multi[word]:
                    name = f"f{len(self._joined)}"
                    self._joined[name] = joined
                    branches.append(f"(?P<{name}>{_variant_pattern(variant)})")
                regex = re.compile(f"(?:{'|'.join(branches)})(?!\\w)")
            starts[word] = (single.get(word), regex)
        self._starts = starts
        self._regex = re.compile(f"{_WORD}|{_CLITIC}")
        self._whole = {variant: joined for variant, joined in alternatives}

    def _form_at(self, folded: str, m: re.Match[str]) -> tuple[str, int] | None:
        """The joined token and end offset if a known form starts at word ``m``."""
        hit = self._starts.get(m.group())
        if hit is None:
            return None
        single, regex = hit
        if regex is not None:
            fm = regex.match(folded, m.start())
            if fm is not None:
                return self._joined[fm.lastgroup], fm.end()  # type: ignore[index]
        if single is not None:
            return single, m.end()
        return None

    def __getstate__(self) -> dict[str, Any]:
        return {"version": self._STATE_VERSION, "forms": self.forms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.forms = dict(state.get("forms", {}))
        self._compile()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.forms == other.forms  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(self.forms))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.forms)} forms)"

    def normalize(self, text: str) -> str:
        """Fold a whole value as one token (``tokenize=False``: wildcards, ranges, IDs)."""
        folded = fold(text).strip()
        return self._whole.get(folded, folded)

    def join_forms(self, text: str) -> str:
        """Rewrite split forms inside raw text ("V Beam laser" -> "vbeam laser"), nothing else.

        Whoosh's query parser splits on spaces before it analyzes, so a query
        "V Beam" would reach the analyzer as "v" and "beam"; the search module
        runs the query string through this first. Case elsewhere is untouched,
        so AND/OR/NOT operators survive.
        """
        folded, offsets = _fold_with_offsets(text)
        out: list[str] = []
        last = 0  # in ``text``
        skip_until = 0  # in ``folded``
        for m in self._regex.finditer(folded):
            if m.start() < skip_until or (form := self._form_at(folded, m)) is None:
                continue
            skip_until = form[1]
            start, end = m.start(), form[1]
            if offsets is not None:
                start, end = offsets[start], offsets[end]
            out.append(text[last:start])
            out.append(form[0])
            last = end
        out.append(text[last:])
        return "".join(out)

    def __call__(
        self,
        value: str,
        positions: bool = False,
        chars: bool = False,
        keeporiginal: bool = False,
        removestops: bool = True,
        start_pos: int = 0,
        start_char: int = 0,
        tokenize: bool = True,
        mode: str = "",
        **kwargs: Any,
    ) -> Iterator[Token]:
        t = Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
        if not tokenize:
            t.text = self.normalize(value)
            t.original = value
            t.boost = 1.0
            t.stopped = False
            if positions:
                t.pos = start_pos
            if chars:
                t.startchar = start_char
                t.endchar = start_char + len(value)
            yield t
            return

        folded, offsets = _fold_with_offsets(value)
        starts = self._starts
        pos = start_pos
        skip_until = 0
        for m in self._regex.finditer(folded):
            text = m.group()
            if text[0] == "'":
                continue  # a clitic ('s, 't)
            end = 0
            if skip_until:
                if m.start() < skip_until:
                    continue  # inside a joined form
                skip_until = 0
            if text in starts and (form := self._form_at(folded, m)) is not None:
                text, end = form
                if end > m.end():
                    skip_until = end
            t.text = text
            t.boost = 1.0
            t.stopped = False
            if positions:
                t.pos = pos
                pos += 1
            if chars or keeporiginal:
                start = m.start()
                end = end or m.end()
                if offsets is not None:
                    start, end = offsets[start], offsets[end]
                if chars:
                    t.startchar = start_char + start
                    t.endchar = start_char + end
                if keeporiginal:
                    t.original = value[start:end]
            yield t


# --------------------------------------------------------------------------- filters


class ClinicalStopFilter(StopFilter):
    """Whoosh's StopFilter with ``STOP_WORDS``, no minimum length, and designator context.

    Single characters are kept (Whoosh's default drops them): "type 1",
    "vitamin D", "hepatitis B", "grade 3" are clinical facts.
    """

    def __init__(
        self,
        stoplist: Iterable[str] = STOP_WORDS,
        keep_after: Iterable[str] = KEEP_AFTER,
        contextual: Iterable[str] = CONTEXTUAL_STOPS,
        maxsize: int = MAX_TOKEN_CHARS,
    ) -> None:
        super().__init__(stoplist=stoplist, minsize=1, maxsize=maxsize, renumber=True)
        self.keep_after = frozenset(keep_after)
        self.contextual = frozenset(contextual)

    def __eq__(self, other: object) -> bool:
        return (
            super().__eq__(other)
            and self.keep_after == other.keep_after  # type: ignore[attr-defined]
            and self.contextual == other.contextual  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self), self.stops))

    def __call__(self, tokens: Iterable[Token]) -> Iterator[Token]:
        stops = self.stops
        contextual = self.contextual
        keep_after = self.keep_after
        maxsize = self.max
        pos = None
        prev = ""
        for t in tokens:
            text = t.text
            if (text in stops and not (text in contextual and prev in keep_after)) or len(text) > maxsize:
                prev = text
                if not t.removestops:
                    t.stopped = True
                    yield t
                continue
            prev = text
            if t.positions:
                if pos is None:
                    pos = t.pos
                else:
                    pos += 1
                    t.pos = pos
            t.stopped = False
            yield t


class ClinicalStemmer:
    """Snowball English stemmer that first maps irregular medical plurals to the singular.

    Only purely alphabetic words are stemmed: numbers, "co2", "e.g" and joined
    tokens such as "retin_a" pass unchanged. Wildcard text ("kerat*") too.
    """

    _STATE_VERSION = 1

    def __init__(self, plurals: Mapping[str, str] | None = None, lang: str = "en") -> None:
        self.plurals = {fold(k): fold(v) for k, v in sorted((plurals or {}).items())}
        self.lang = lang
        self._load()

    def _load(self) -> None:
        from whoosh.lang import stemmer_for_language

        self._stem = stemmer_for_language(self.lang)

    def __getstate__(self) -> dict[str, Any]:
        return {"version": self._STATE_VERSION, "plurals": self.plurals, "lang": self.lang}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.plurals = dict(state.get("plurals", {}))
        self.lang = state.get("lang", "en")
        self._load()

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self.plurals == other.plurals  # type: ignore[attr-defined]
            and self.lang == other.lang  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((self.lang, len(self.plurals)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.lang!r}, {len(self.plurals)} plurals)"

    def __call__(self, word: str) -> str:
        if not word.isalpha():
            return word
        return self._stem(self.plurals.get(word, word))


class ClinicalStemFilter(StemFilter):
    """StemFilter with the clinical stemmer, a large cache and a protected-word set."""

    def __init__(
        self,
        stemmer: ClinicalStemmer | None = None,
        ignore: Iterable[str] | None = None,
        cachesize: int = 200_000,
    ) -> None:
        super().__init__(stemfn=stemmer or ClinicalStemmer(), ignore=ignore, cachesize=cachesize)

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.ignore == other.ignore  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.ignore))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stemfn!r}, {len(self.ignore)} protected)"


class MedicalAnalyzer(CompositeAnalyzer):
    """The composed chain; a named class so reprs and pickles say what it is."""
