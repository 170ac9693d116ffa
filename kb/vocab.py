"""The medical vocabulary: lay <-> clinical, brand <-> generic, devices, abbreviations.

The data lives in kb/data/vocabulary.toml (versioned, every entry with its
source) so clinicians can review and extend it without touching code. This
module loads it, finds vocabulary phrases in a query and returns weighted
expansions for the search module, says which words must never be fuzzed, and
checks the file for mistakes (`kb vocab check`).

Matching uses the same folding, form joining and protected stemming as the
index (kb.analysis), so "Brown Spots", "brown spot" and "V-Beam" all match their
entries, and a vocabulary term can never match text the index would split
differently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from kb.analysis import (
    ANALYSIS_VERSION,
    KEEP_AFTER,
    STOP_WORDS,
    ClinicalStemFilter,
    ClinicalStemmer,
    ClinicalStopFilter,
    MedicalAnalyzer,
    MedicalTokenizer,
    fold,
)
from kb.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from whoosh.analysis import Analyzer

log = logging.getLogger(__name__)

#: Expansion weights: what the user typed ranks above synonyms, synonyms above relatives.
EXACT_WEIGHT = 1.0
EQUIVALENT_WEIGHT = 0.6
RELATED_WEIGHT = 0.3

KINDS = frozenset({"lay", "brand", "device", "abbreviation", "procedure", "synonym"})
#: "equivalent": same concept. "related": overlapping but not identical (IPL vs BBL).
#: "broader": first term is the umbrella of the others (botulinum toxin > Botox).
RELATIONS = frozenset({"equivalent", "related", "broader"})
#: Single-word terms of these kinds are names: never stemmed, never fuzzed.
NAME_KINDS = frozenset({"brand", "device", "abbreviation"})
#: Look-alike drug names and one-letter-apart abbreviations (BCC/SCC) are never fuzzed.
CLINICAL_KINDS = frozenset({"brand", "abbreviation"})

MAX_PHRASE_TOKENS = 10


@dataclass(frozen=True)
class Entry:
    """One concept: ``terms[0]`` is the preferred label."""

    terms: tuple[str, ...]
    kind: str
    relation: str
    source: str
    clinical: bool = False
    line: int = 0  # 1-based position among the [[entry]] tables, for messages

    @property
    def label(self) -> str:
        return self.terms[0] if self.terms else f"entry {self.line}"


@dataclass(frozen=True)
class Match:
    """A vocabulary phrase found in a text (``start``/``end`` index the text)."""

    text: str
    start: int
    end: int
    key: tuple[str, ...]


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


class Vocabulary:
    """A parsed vocabulary file; build one with ``Vocabulary.load()`` or ``vocabulary()``."""

    def __init__(self, data: Mapping[str, Any], *, origin: str = "<data>") -> None:
        self.origin = origin
        self.load_problems: list[str] = []
        version = data.get("version")
        self.version = str(version) if version is not None else ""
        self.forms: dict[str, list[str]] = self._table_of_lists(data, "forms")
        self.spellings: dict[str, str] = self._table_of_strings(data, "spellings")
        self.plurals: dict[str, str] = self._table_of_strings(data, "plurals")
        self.clinical_terms: list[str] = self._list(data, "clinical_terms")
        self.protected_terms: list[str] = self._list(data, "protected")
        self.entries: list[Entry] = self._parse_entries(data.get("entry", []))

        forms: dict[str, list[str]] = {k: list(v) for k, v in self.forms.items()}
        for british, american in self.spellings.items():
            forms.setdefault(american, []).append(british)
        self.tokenizer = MedicalTokenizer(forms)
        self.stemmer = ClinicalStemmer(self.plurals)
        self.protected: frozenset[str] = self._protected_words()
        self._stem = lru_cache(maxsize=20_000)(self.stemmer)
        self._build_index()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path | str | None = None) -> "Vocabulary":
        """Read and parse a vocabulary file (default: the shipped kb/data/vocabulary.toml)."""
        if path is None:
            resource = resources.files("kb").joinpath("data", "vocabulary.toml")
            text, origin = resource.read_text(encoding="utf-8"), "kb/data/vocabulary.toml"
        else:
            origin = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"Cannot read vocabulary file {origin}: {exc}.",
                                  "Check the path, or omit it to use the shipped vocabulary.") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Vocabulary file {origin} is not valid TOML: {exc}.",
                              "Fix the line shown (strings need double quotes, tables [[entry]]).") from exc
        return cls(data, origin=origin)

    def _list(self, data: Mapping[str, Any], name: str) -> list[str]:
        value = data.get(name, [])
        items = _str_list(value)
        if items is None:
            self.load_problems.append(f"'{name}' must be a list of strings")
            return []
        return items

    def _table_of_lists(self, data: Mapping[str, Any], name: str) -> dict[str, list[str]]:
        table = data.get(name, {})
        if not isinstance(table, dict):
            self.load_problems.append(f"[{name}] must be a table")
            return {}
        out: dict[str, list[str]] = {}
        for key, value in table.items():
            items = _str_list(value)
            if items is None:
                self.load_problems.append(f"[{name}] {key}: must be a list of strings")
                continue
            out[key] = items
        return out

    def _table_of_strings(self, data: Mapping[str, Any], name: str) -> dict[str, str]:
        table = data.get(name, {})
        if not isinstance(table, dict):
            self.load_problems.append(f"[{name}] must be a table")
            return {}
        out: dict[str, str] = {}
        for key, value in table.items():
            if not isinstance(value, str):
                self.load_problems.append(f"[{name}] {key}: must be a string")
                continue
            out[key] = value
        return out

    def _parse_entries(self, raw: Any) -> list[Entry]:
        if not isinstance(raw, list):
            self.load_problems.append("'entry' must be an array of tables ([[entry]])")
            return []
        entries = []
        for n, item in enumerate(raw, 1):
            if not isinstance(item, dict):
                self.load_problems.append(f"entry {n}: must be a table")
                continue
            terms = _str_list(item.get("terms", []))
            if terms is None:
                self.load_problems.append(f"entry {n}: 'terms' must be a list of strings")
                continue
            unknown = set(item) - {"terms", "kind", "relation", "source", "clinical"}
            if unknown:
                self.load_problems.append(f"entry {n} ({terms[0] if terms else '?'}): unknown keys {sorted(unknown)}")
            entries.append(Entry(
                terms=tuple(t.strip() for t in terms),
                kind=str(item.get("kind", "")),
                relation=str(item.get("relation", "equivalent")),
                source=str(item.get("source", "")).strip(),
                clinical=bool(item.get("clinical", False)),
                line=n,
            ))
        return entries

    # ------------------------------------------------------------------ keys

    def tokens(self, text: str) -> list[str]:
        """Index words of ``text`` before stop words and stemming (folded, forms joined)."""
        return [t.text for t in self.tokenizer(text)]

    def key(self, text: str) -> tuple[str, ...]:
        """How ``text`` is compared: folded, joined, stemmed unless protected; stop words kept."""
        protected, stem = self.protected, self._stem
        return tuple(w if w in protected else stem(w) for w in self.tokens(text))

    def _protected_words(self) -> frozenset[str]:
        words = {fold(w) for w in self.protected_terms}
        words.update(fold(k) for k in self.forms)  # joined tokens; [spellings] targets stay stemmable
        for entry in self.entries:
            for term in entry.terms:
                toks = self.tokens(term)
                if len(toks) == 1 and (entry.kind in NAME_KINDS or any(c.isupper() for c in term)):
                    words.add(toks[0])
        return frozenset(words)

    def _build_index(self) -> None:
        self._concept: dict[tuple[str, ...], int] = {}
        self._related: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._display: dict[tuple[str, ...], str] = {}
        self._entry_keys: list[list[tuple[str, ...]]] = []
        clinical: set[tuple[str, ...]] = set()
        for i, entry in enumerate(self.entries):
            keys = []
            for term in entry.terms:
                k = self.key(term)
                keys.append(k)
                if not k:
                    continue
                self._display.setdefault(k, term)
                if entry.relation == "equivalent":
                    self._concept.setdefault(k, i)
                elif i not in self._related[k]:
                    self._related[k].append(i)
                if entry.clinical or entry.kind in CLINICAL_KINDS:
                    clinical.add(k)
            self._entry_keys.append(keys)
        for term in self.clinical_terms:
            if k := self.key(term):
                clinical.add(k)
        self._clinical = frozenset(clinical)
        self._max_len = max((len(k) for k in self._display), default=1)

    # ------------------------------------------------------------------ queries

    def matches(self, text: str) -> list[Match]:
        """Vocabulary phrases in ``text``, longest first, not overlapping ("brown spots" beats "spots")."""
        toks = [(t.text, t.startchar, t.endchar) for t in self.tokenizer(text, chars=True)]
        protected, stem = self.protected, self._stem
        keys = [w if w in protected else stem(w) for w, _, _ in toks]
        found: list[Match] = []
        i, n = 0, len(keys)
        longest = min(self._max_len, MAX_PHRASE_TOKENS)
        while i < n:
            for length in range(min(longest, n - i), 0, -1):
                k = tuple(keys[i:i + length])
                if k in self._display:
                    start, end = toks[i][1], toks[i + length - 1][2]
                    found.append(Match(text[start:end], start, end, k))
                    i += length
                    break
            else:
                i += 1
        return found

    def _concept_keys(self, k: tuple[str, ...]) -> list[tuple[str, ...]]:
        if k in self._concept:
            return self._entry_keys[self._concept[k]]
        return [k]

    def related(self, k: tuple[str, ...]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        """(equivalent keys, related keys) of a key; related reaches through equivalents.

        In a "broader" entry the umbrella term relates to every narrower term, but
        narrower terms relate only to the umbrella: melanoma and basal cell
        carcinoma are both skin cancers, not synonyms of each other.
        """
        own = self._concept_keys(k)
        own_set = set(own)
        rel: list[tuple[str, ...]] = []
        for member in own:
            for r in self._related.get(member, ()):
                keys = self._entry_keys[r]
                if self.entries[r].relation == "broader" and member != keys[0]:
                    keys = keys[:1]
                for other in keys:
                    for o in self._concept_keys(other):
                        if o and o not in own_set and o not in rel:
                            rel.append(o)
        return [o for o in own if o and o != k], rel

    def expand(self, text: str) -> list[tuple[str, float]]:
        """Query-time expansions: each vocabulary phrase in ``text`` (weight 1.0), its
        equivalents (0.6) and related terms (0.3), best first, no duplicates.

        Words of ``text`` that are in no entry are not returned: the search module
        keeps the user's query as it is and ORs these in.
        """
        weights: dict[tuple[str, ...], float] = {}
        labels: dict[tuple[str, ...], str] = {}

        def add(k: tuple[str, ...], label: str, weight: float) -> None:
            if weight > weights.get(k, 0.0):
                weights[k] = weight
                labels.setdefault(k, label)

        for m in self.matches(text):
            add(m.key, m.text, EXACT_WEIGHT)
            equivalents, related = self.related(m.key)
            for k in equivalents:
                add(k, self._display[k], EQUIVALENT_WEIGHT)
            for k in related:
                add(k, self._display[k], RELATED_WEIGHT)
        order = sorted(weights, key=lambda k: -weights[k])  # stable: query order within a weight
        return [(labels[k], weights[k]) for k in order]

    def entries_for(self, term: str) -> list[Entry]:
        """Entries containing ``term`` (as the index sees it)."""
        k = self.key(term)
        return [e for e, keys in zip(self.entries, self._entry_keys) if k in keys]

    def is_clinical(self, word: str) -> bool:
        """True if ``word`` must never be silently fuzzed (melanoma, melasma, drug names, BCC...)."""
        k = self.key(word)
        return bool(k) and k in self._clinical

    def terms(self) -> list[str]:
        """Every vocabulary term (display spelling), for suggestions and "Did you mean"."""
        seen: dict[str, str] = {}
        for entry in self.entries:
            for term in entry.terms:
                if term:
                    seen.setdefault(term.casefold(), term)
        for term in self.clinical_terms:
            seen.setdefault(term.casefold(), term)
        return sorted(seen.values(), key=str.casefold)

    # ------------------------------------------------------------------ checking

    def check(self) -> list[str]:
        """Problems that would make search wrong; empty when the file is sound."""
        problems = list(self.load_problems)
        if not self.version.strip():
            problems.append("no 'version' at the top of the file")
        analyzer = build_analyzer(self, stem=True)
        owner: dict[tuple[str, ...], Entry] = {}
        for entry, keys in zip(self.entries, self._entry_keys):
            where = f"entry {entry.line} ({entry.label})"
            if not entry.terms:
                problems.append(f"{where}: no terms")
                continue
            if len(entry.terms) < 2:
                problems.append(f"{where}: needs at least two terms to map anything")
            if entry.kind not in KINDS:
                problems.append(f"{where}: kind {entry.kind!r} is not one of {sorted(KINDS)}")
            if entry.relation not in RELATIONS:
                problems.append(f"{where}: relation {entry.relation!r} is not one of {sorted(RELATIONS)}")
            if not entry.source:
                problems.append(f"{where}: no source (name the document that states this mapping)")
            seen: set[tuple[str, ...]] = set()
            for term, k in zip(entry.terms, keys):
                if not term:
                    problems.append(f"{where}: empty term")
                    continue
                plain = tuple(self.tokens(term))
                if plain in seen:
                    problems.append(f"{where}: term {term!r} is listed twice (same index words)")
                seen.add(plain)
                if not [t for t in analyzer(term)]:
                    problems.append(f"{where}: term {term!r} analyzes to nothing (only stop words)")
                problems.extend(f"{where}: {p}" for p in self._split_problems(term))
                if entry.relation == "equivalent" and k:
                    other = owner.get(k)
                    if other is not None and other is not entry:
                        problems.append(f"{where}: term {term!r} is also in entry {other.line} ({other.label});"
                                        " a term may belong to one equivalent entry (link concepts with"
                                        " relation = \"related\")")
                    owner.setdefault(k, entry)
        problems.extend(self._forms_problems())
        problems.extend(self._clinical_problems())
        return problems

    def _split_problems(self, term: str) -> list[str]:
        """A hyphenated or glued word that splits off a single letter needs a [forms] spelling."""
        out = []
        for word in term.split():
            pieces = self.tokens(word)
            if len(pieces) < 2:
                continue
            ends = (pieces[0], pieces[-1])
            if any(len(p) == 1 and p.isalpha() for p in ends):
                out.append(f"term {term!r} splits {word!r} into {' + '.join(pieces)};"
                           f" add a [forms] spelling that joins it")
        return out

    def _forms_problems(self) -> list[str]:
        out = []
        variant_owner: dict[str, str] = {}
        for joined, variants in self.forms.items():
            if not re.fullmatch(r"\w+", fold(joined)):
                out.append(f"[forms] {joined!r}: a joined token must be one word (letters, digits, _)")
            if not variants:
                out.append(f"[forms] {joined!r}: no spellings")
            for v in variants:
                fv = fold(v).strip()
                if not fv:
                    out.append(f"[forms] {joined!r}: empty spelling")
                    continue
                if fv in variant_owner and variant_owner[fv] != joined:
                    out.append(f"[forms] spelling {v!r} is joined to both {variant_owner[fv]!r} and {joined!r}")
                variant_owner[fv] = joined
        for joined in self.forms:
            if fold(joined) in variant_owner and variant_owner[fold(joined)] != joined:
                out.append(f"[forms] {joined!r} is itself a spelling of {variant_owner[fold(joined)]!r}")
        for british, american in self.spellings.items():
            if not (british.isalpha() and american.isalpha()):
                out.append(f"[spellings] {british!r} = {american!r}: both must be single words")
        for plural, singular in self.plurals.items():
            if not (plural.isalpha() and singular.isalpha()):
                out.append(f"[plurals] {plural!r} = {singular!r}: both must be single words")
            elif len(os.path.commonprefix([fold(plural), fold(singular)])) < len(singular) - 3:
                # nevi/nevus, lentigines/lentigo share the stem; melasma/melanoma do not.
                out.append(f"[plurals] {plural!r} = {singular!r}: not an inflection of the same word;"
                           " this would search one for the other")
        return out

    def _clinical_problems(self) -> list[str]:
        """Two different clinical words conflated by stemming would be searched as one."""
        out = []
        by_key: dict[tuple[str, ...], set[str]] = defaultdict(set)
        words = {w for e in self.entries if e.clinical for t in e.terms for w in self.tokens(t)}
        words.update(w for t in self.clinical_terms for w in self.tokens(t))
        for w in words:
            by_key[self.key(w)].add(w)
        for k, ws in sorted(by_key.items()):
            distinct = {self.stemmer.plurals.get(w, w) for w in ws}
            if len(distinct) > 1 and not _inflections(distinct):
                out.append(f"clinical words {sorted(ws)} share the index stem {' '.join(k)!r}")
        return out


def _inflections(words: set[str]) -> bool:
    """True when words differ only by a plural -s/-es (nevus/nevuses), not in substance."""
    base = min(words, key=len)
    return all(w == base or w in (base + "s", base + "es") for w in words)


@cache
def vocabulary(path: Path | str | None = None) -> Vocabulary:
    """The vocabulary (shipped file unless ``path`` is given), loaded once per process."""
    vocab = Vocabulary.load(path)
    for problem in vocab.load_problems:
        log.warning("vocabulary %s: %s", vocab.origin, problem)
    return vocab


# ---------------------------------------------------------------------- CLI helpers
# `kb vocab list|check|test` (wired in kb/cli.py) prints these lines; `test` uses explain_lines.


# --------------------------------------------------------------------------- the analysis bound to a vocabulary
# kb.analysis holds the building blocks (tokenizer, stemmer, filters); the chains built from the shipped
# vocabulary live here, so the dependency runs one way: vocab -> analysis.


def build_analyzer(vocab: Vocabulary, *, stem: bool = True) -> "Analyzer":
    """A fresh analyzer for ``vocab`` (tests and `kb vocab check` use other files)."""
    items: list[Any] = [vocab.tokenizer, ClinicalStopFilter()]
    if stem:
        items.append(ClinicalStemFilter(vocab.stemmer, ignore=vocab.protected))
    return MedicalAnalyzer(*items)


@cache
def text_analyzer() -> "Analyzer":
    """Stemming analyzer for title, headings and body."""
    return build_analyzer(vocabulary(), stem=True)


@cache
def plain_analyzer() -> "Analyzer":
    """Unstemmed analyzer for the spelling field: fuzzy suggestions need real words."""
    return build_analyzer(vocabulary(), stem=False)


def join_forms(text: str) -> str:
    """Join split forms in a raw query string before Whoosh's parser splits it on spaces."""
    return vocabulary().tokenizer.join_forms(text)


def fingerprint(vocab: Vocabulary | None = None) -> str:
    """Identifies the analysis (code version + vocabulary content); store it with an index.

    When it differs from the one recorded at build time, queries are still analyzed
    the old way (the index carries its analyzers) until `kb reindex` runs.
    """
    vocab = vocab or vocabulary()
    state = (ANALYSIS_VERSION, sorted(STOP_WORDS), sorted(KEEP_AFTER), vocab.tokenizer.forms,
             vocab.stemmer.plurals, sorted(vocab.protected))
    digest = hashlib.sha256(repr(state).encode()).hexdigest()
    return f"{ANALYSIS_VERSION}-{vocab.version}-{digest[:12]}"


def list_lines(vocab: Vocabulary, kind: str | None = None) -> list[str]:
    """One line per entry: label, other terms, kind/relation, source."""
    lines = []
    for e in vocab.entries:
        if kind and e.kind != kind:
            continue
        flag = " clinical" if e.clinical else ""
        lines.append(f"{e.label}  <-  {', '.join(e.terms[1:])}  [{e.kind}/{e.relation}{flag}]  ({e.source})")
    return lines


def explain_lines(vocab: Vocabulary, text: str) -> list[str]:
    """How ``text`` is analyzed and expanded: what a clinician needs to debug a query."""
    stemmed = [t.text for t in build_analyzer(vocab, stem=True)(text)]
    plain = [t.text for t in build_analyzer(vocab, stem=False)(text)]
    lines = [
        f"index terms (text):  {' '.join(stemmed) or '(none)'}",
        f"index terms (plain): {' '.join(plain) or '(none)'}",
        f"query rewrite:       {vocab.tokenizer.join_forms(text)}",
    ]
    matches = vocab.matches(text)
    if not matches:
        lines.append("vocabulary:          no entry matches")
    for m in matches:
        for e in vocab.entries_for(m.text):
            lines.append(f"matches entry {e.line}: {e.label} [{e.kind}/{e.relation}] ({e.source})")
    for term, weight in vocab.expand(text):
        lines.append(f"  expand {weight:.1f}  {term}")
    clinical = [w for w in dict.fromkeys(vocab.tokens(text)) if vocab.is_clinical(w)]
    clinical += [m.text for m in matches if len(m.key) > 1 and vocab.is_clinical(m.text)]
    lines.append(f"never fuzzed:        {', '.join(clinical) or '(none)'}")
    return lines
