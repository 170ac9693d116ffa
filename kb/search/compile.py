"""Compile: the parsed query tree into Whoosh query objects, with vocabulary expansion and field weights.

`compile_query` turns what kb.querylang parsed into a match query (which documents are results), a
score query (the match plus ranking-only clauses: exact title, question-intent words) and what
ranking and snippets need beside them (the whole-query phrase, the concepts for coordination, the
terms to mark). Each word is looked up in every weighted field whose lexicon holds it, so the
compiled tree stays as small as the index allows; the trees are evaluated by kb.search.rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from whoosh import query as wq

from kb.querylang import Either, Group, Node, Not, Parsed, Phrase, Word, intent_words
from kb.schema import title_key
from kb.search.language import is_function_word
from kb.search.state import _Request
from kb.search.vocabulary import _expansions

#: Query-time field weights: title > headings > tags > body. The lead (opening words) is searched
#: for question-intent words only (INTENT_FIELDS): measured on the MedQuAD dev sets, it helps there
#: and hurts as a field for every word.
FIELD_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("title", 3.0), ("headings", 2.0), ("tagtext", 1.5), ("body", 1.0),
)
INTENT_WEIGHT = 0.6  # question-intent words (querylang.QUESTION_INTENTS): ranking only
EXACT_TITLE_BOOST = 30.0  # the whole query is the whole title
EXPANSION_WEIGHT = 1.0  # times the vocabulary's own weight
EXPANSION_FIELDS: tuple[tuple[str, float], ...] = (("title", 3.0), ("headings", 2.0), ("body", 1.0))
MAX_EXPANSIONS = 4  # per vocabulary entry found in the query
INTENT_FIELDS: tuple[tuple[str, float], ...] = (("lead", 1.0), ("body", 1.0))
#: Question and function words (kb.search.language) beside other words: ranking only, at this weight.
FUNCTION_WEIGHT = 0.5


class TermStatistics(Protocol):
    """What compiling (and pruning) asks of an index: analysis and document frequencies, on any backend."""

    def analyze(self, fieldname: str, text: str) -> tuple[str, ...]: ...

    def has(self, fieldname: str, text: str) -> bool: ...

    def doc_frequency(self, fieldname: str, text: str) -> int: ...


@dataclass
class _Compiled:
    match: Any | None  # whoosh query whose matches are the results (total, facets)
    score: Any | None  # match plus optional ranking-only clauses
    phrase: tuple[str, ...] = ()  # the whole query's terms, for the phrase bonus when re-ranking
    concepts: list[set[tuple[str, ...]]] = field(default_factory=list)  # for the coordination factor
    highlight: list[str] = field(default_factory=list)  # analysed single words, for snippet marks
    surface: list[str] = field(default_factory=list)  # words and whole phrases as typed, for snippet marks


class _Compiler:
    """Turns the parsed tree into Whoosh queries, keeping the number of leaves (= cost) small."""

    def __init__(self, ctx: _Request | TermStatistics, quiet_function_words: bool = False) -> None:
        self.ctx = ctx
        #: function words only rank (they do not select nor mark) when the query has other words
        self.quiet_function_words = quiet_function_words
        self.quiet: list[str] = []  # their analysed terms, for the score query
        self.terms: list[str] = []
        self.marks: list[str] = []  # analysed single words that decide matching, for snippet marks
        self.surface: list[str] = []
        #: query word (analysed) -> the token sequences that satisfy it (itself, its expansions)
        self.concepts: dict[str, set[tuple[str, ...]]] = {}
        self.expanded: list[tuple[str, ...]] = []

    def tokens(self, text: str) -> tuple[str, ...]:
        return self.ctx.analyze("body", text)

    def clause(self, tokens: tuple[str, ...], weight: float = 1.0,
               fields: tuple[tuple[str, float], ...] | None = None, exact: bool = True) -> Any | None:
        """A term (one token) or phrase (several) in each field that holds it, with the field's weight.

        Fields whose lexicon lacks a token are left out: every leaf costs time on each search.
        With `exact` False several tokens need only co-occur (cheap And instead of positions).
        """
        if not tokens:
            return None
        parts = []
        for f, b in fields or FIELD_WEIGHTS:
            if not all(self.ctx.has(f, t) for t in tokens):
                continue
            if len(tokens) == 1:
                parts.append(wq.Term(f, tokens[0], boost=weight * b))
            elif exact:
                parts.append(wq.Phrase(f, list(tokens), boost=weight * b))
            else:
                parts.append(wq.And([wq.Term(f, t) for t in tokens], boost=weight * b))
        if not parts:
            return wq.NullQuery
        return parts[0] if len(parts) == 1 else _new_or(parts)

    def expansions(self, text: str, have: set[str]) -> list[Any]:
        """Vocabulary expansions of `text` not already searched, best first, at most MAX_EXPANSIONS."""
        out: list[Any] = []
        for term, weight in sorted(_expansions(text), key=lambda tw: -tw[1]):
            toks = self.tokens(term)
            if not toks or tuple(toks) in have or (len(toks) == 1 and toks[0] in have):
                continue
            have.add(tuple(toks))
            self.expanded.append(tuple(toks))
            self.surface.append(term)  # a multi-word synonym is marked only as a whole phrase
            self.terms += toks
            if len(toks) == 1:
                self.marks += toks
            # multi-word expansions need not be exact phrases: reading positions costs ~10x
            out.append(self.clause(toks, weight * EXPANSION_WEIGHT, EXPANSION_FIELDS, exact=False))
            if len(out) >= MAX_EXPANSIONS:
                break
        return out

    def words_run(self, words: list[str]) -> list[Any]:
        """Clauses for consecutive plain words: each analysed term, plus vocabulary expansions."""
        out: list[Any] = []
        quiet_words = {w for w in words if self.quiet_function_words and is_function_word(w)}
        # analysed in context ("vitamin a" keeps its "a"), then the function words' own terms set aside
        quiet = {t for w in quiet_words for t in self.tokens(w)}
        self.surface += [w for w in words if w not in quiet_words]
        tokens = [t for t in dict.fromkeys(self.tokens(" ".join(words))) if t not in quiet]
        self.quiet += [t for t in dict.fromkeys(self.tokens(" ".join(words))) if t in quiet]
        for token in tokens:
            self.terms.append(token)
            self.marks.append(token)
            self.concepts.setdefault(token, set()).add((token,))
            out.append(self.clause((token,)))
        have: set[Any] = set(tokens)
        covered: set[int] = set()
        for n in (4, 3, 2, 1):
            for i in range(0, len(words) - n + 1):
                if covered & set(range(i, i + n)) or all(w in quiet_words for w in words[i:i + n]):
                    continue
                text = " ".join(words[i:i + n])
                self.expanded = []
                found = self.expansions(text, have)
                if found:
                    covered |= set(range(i, i + n))
                    out += found
                    for token in self.tokens(text):
                        if token not in quiet:
                            self.concepts.setdefault(token, set()).update(self.expanded)
        return out

    def node(self, node: Node) -> Any | None:
        if isinstance(node, Word):
            return _or(self.words_run([node.text]))
        if isinstance(node, Phrase):
            toks = self.tokens(node.text)
            self.surface.append(node.text)
            self.terms += toks
            parts = [self.clause(toks)] if toks else []
            self.expanded = []
            parts += self.expansions(node.text, {tuple(toks)})
            if toks:
                self.concepts.setdefault(" ".join(toks), set()).update([tuple(toks), *self.expanded])
            return _or(parts)
        if isinstance(node, Either):
            return _or([self.node(c) for c in node.children])
        if isinstance(node, Not):
            return None  # handled by the enclosing group
        if isinstance(node, Group):
            positive: list[Any] = []
            negative: list[Any] = []
            run: list[str] = []
            for child in node.children:
                if isinstance(child, Word):
                    run.append(child.text)
                    continue
                if run:
                    positive += self.words_run(run)
                    run = []
                if isinstance(child, Not):
                    negative.append(_Compiler(self.ctx, self.quiet_function_words).node(child.child))
                else:
                    positive.append(self.node(child))
            if run:
                positive += self.words_run(run)
            pos = _or(positive)
            neg = _or(negative)
            if pos is None:
                return _NegativeOnly(neg) if neg is not None else None
            return wq.AndNot(pos, neg) if neg is not None else pos
        raise TypeError(node)


@dataclass
class _NegativeOnly:
    """A group of exclusions only ("-acne"): everything visible except those documents."""

    exclude: Any


def _or(parts: list[Any]) -> Any | None:
    parts = [p for p in parts if p is not None and p is not wq.NullQuery]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else _new_or(parts)


def _new_or(parts: list[Any]) -> Any:
    """An Or that always streams (a tree of union matchers with block-quality skipping).

    Whoosh preloads every posting of an Or into arrays when a segment has under 5,000
    documents; a full build writes segments of about that size, so that "optimisation"
    would read every posting of every word on every search.
    """
    q = wq.Or(parts)
    q.matcher_type = wq.Or.DEFAULT_MATCHER
    return q


def _has_content_words(parsed: Parsed) -> bool:
    """Whether any searched word is more than a question or function word (then those only rank)."""
    return any(not is_function_word(part) for word in parsed.words() for part in word.split())


def compile_query(ctx: _Request | TermStatistics, parsed: Parsed, text: str) -> _Compiled:
    compiler = _Compiler(ctx, _has_content_words(parsed))
    tree = Group([parsed.tree]) if isinstance(parsed.tree, Not) else parsed.tree
    match = compiler.node(tree) if tree is not None else None
    if isinstance(match, _NegativeOnly):
        return _Compiled(match=match, score=None)
    if match is None:
        if compiler.terms:  # words that no document contains: no results, but "Did you mean"
            return _Compiled(match=wq.NullQuery, score=None, surface=compiler.surface)
        return _Compiled(match=None, score=None, surface=compiler.surface)
    bonus: list[Any] = []
    phrase: tuple[str, ...] = ()
    if parsed.plain:
        words = parsed.words()
        key = title_key(" ".join(words))
        if key and ctx.has("title_key", key):
            bonus.append(wq.Term("title_key", key, boost=EXACT_TITLE_BOOST))
        toks = compiler.tokens(" ".join(words))
        quiet = set(compiler.quiet)
        if quiet and len([t for t in toks if t not in quiet]) > 1:
            toks = tuple(t for t in toks if t not in quiet)  # a question's phrase is its deciding words
        if len(toks) > 1:
            phrase = toks
    seen = set(compiler.terms)
    for token in dict.fromkeys(compiler.quiet):
        if token not in seen:
            seen.add(token)
            bonus.append(compiler.clause((token,), FUNCTION_WEIGHT))
    for word in intent_words(text):
        for token in compiler.tokens(word):
            if token not in seen:
                seen.add(token)
                bonus.append(compiler.clause((token,), INTENT_WEIGHT, INTENT_FIELDS))
    bonus_q = _or(bonus)
    score = wq.AndMaybe(match, bonus_q) if bonus_q is not None else match
    return _Compiled(match=match, score=score, phrase=phrase, concepts=list(compiler.concepts.values()),
                     highlight=list(dict.fromkeys(compiler.marks)),
                     surface=list(dict.fromkeys(compiler.surface)))
