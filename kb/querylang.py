"""The search box language, parsed into a small tree; pure functions, no index access.

    acne scars            words (any may match; documents matching more rank higher)
    "pulsed dye laser"    phrase
    -steroid  -"x y"      exclude
    acne OR rosacea       either side
    (a OR b) c            grouping
    tag:laser  category:"Skin cancer"  site:example.org  year:2023    filters (always required)

Anything malformed (unbalanced quotes or parentheses, lone operators, control characters)
never raises: `parse()` falls back to the plain words and says so in `Parsed.notice`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 400
MAX_WORDS = 32
FILTER_FIELDS = {"tag": "tag", "tags": "tag", "category": "category", "categories": "category",
                 "site": "site", "year": "year"}
OPERATORS = {"OR", "AND", "NOT"}


@dataclass
class Word:
    text: str


@dataclass
class Phrase:
    text: str


@dataclass
class Not:
    child: "Node"


@dataclass
class Group:
    """Implicit conjunction: any child may match, documents matching more children rank higher."""

    children: list["Node"]


@dataclass
class Either:
    """Explicit OR."""

    children: list["Node"]


Node = Word | Phrase | Not | Group | Either


@dataclass
class Parsed:
    tree: Node | None  # None when nothing is left to search for
    filters: dict[str, list[str]] = field(default_factory=dict)
    notice: str = ""
    plain: bool = True  # no operators, phrases or groups: whole-query bonuses apply

    def words(self, *, negative: bool = False) -> list[str]:
        """Words and phrase texts in query order (those under NOT only when `negative`)."""
        out: list[str] = []

        def walk(node: Node | None, neg: bool) -> None:
            if node is None:
                return
            if isinstance(node, (Word, Phrase)):
                if neg == negative:
                    out.append(node.text)
            elif isinstance(node, Not):
                walk(node.child, True)
            else:
                for child in node.children:
                    walk(child, neg)

        walk(self.tree, False)
        return out


class QuerySyntaxError(ValueError):
    """Internal: the query is malformed; `parse` turns it into the plain-words fallback."""


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})
_PLAIN_WORD = re.compile(r"[^\W_](?:[\w'\u2019.+\-]*[^\W_])?")


def clean(text: str) -> tuple[str, list[str]]:
    """Normalised query text and the problems found (control characters, excessive length)."""
    problems: list[str] = []
    text = unicodedata.normalize("NFC", text or "")
    if _CONTROL.search(text):
        problems.append("it contained control characters")
        text = _CONTROL.sub(" ", text)
    text = text.translate(_QUOTES)
    text = " ".join(text.split())
    if len(text) > MAX_QUERY_CHARS:
        problems.append(f"it was longer than {MAX_QUERY_CHARS} characters")
        cut = text[:MAX_QUERY_CHARS]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text, problems


def plain_words(text: str) -> list[str]:
    """The words of any string, operators and punctuation dropped (the fallback query)."""
    words = [w for w in _PLAIN_WORD.findall(text) if w not in OPERATORS]
    return words[:MAX_WORDS]


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens: word, phrase, filter, not, or, lparen, rparen."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise QuerySyntaxError("unbalanced quotes")
            out.append(("phrase", text[i + 1:end]))
            i = end + 1
        elif c == "(":
            out.append(("lparen", c))
            i += 1
        elif c == ")":
            out.append(("rparen", c))
            i += 1
        elif c == "-" and i + 1 < n and not text[i + 1].isspace() and (not out or text[i - 1].isspace()
                                                                         or text[i - 1] == "("):
            out.append(("not", c))
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '()"':
                j += 1
            word = text[i:j]
            name, sep, value = word.partition(":")
            if sep and name.lower() in FILTER_FIELDS:
                if not value and j < n and text[j] == '"':
                    end = text.find('"', j + 1)
                    if end < 0:
                        raise QuerySyntaxError("unbalanced quotes")
                    value, j = text[j + 1:end], end + 1
                value = " ".join(value.split())
                if not value:
                    raise QuerySyntaxError(f"{name}: needs a value")
                out.append(("filter", f"{FILTER_FIELDS[name.lower()]}:{value}"))
            elif word in ("OR", "|", "||"):
                out.append(("or", word))
            elif word in ("AND", "&", "&&", "+"):
                pass  # words are combined anyway
            elif word == "NOT":
                out.append(("not", word))
            else:
                out.append(("word", word))
            i = j
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.filters: dict[str, list[str]] = {}
        self.plain = True

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def parse(self) -> Node | None:
        node = self.either()
        if self.pos != len(self.tokens):
            raise QuerySyntaxError("unbalanced parentheses")
        return node

    def either(self) -> Node | None:
        parts = [self.group()]
        while self.peek() == "or":
            self.plain = False
            self.pos += 1
            parts.append(self.group())
        if len(parts) > 1:
            if any(p is None for p in parts):
                raise QuerySyntaxError("OR needs words on both sides")
            return Either([p for p in parts if p is not None])
        return parts[0]

    def group(self) -> Node | None:
        children: list[Node] = []
        while self.peek() not in (None, "or", "rparen"):
            child = self.unary()
            if child is not None:
                children.append(child)
        if not children:
            return None
        return children[0] if len(children) == 1 else Group(children)

    def unary(self) -> Node | None:
        kind = self.peek()
        if kind == "not":
            self.plain = False
            self.pos += 1
            if self.peek() in (None, "or", "rparen", "not"):
                raise QuerySyntaxError("a minus sign needs a word after it")
            child = self.primary()
            return Not(child) if child is not None else None
        return self.primary()

    def primary(self) -> Node | None:
        kind, value = self.tokens[self.pos]
        self.pos += 1
        if kind == "word":
            return Word(value)
        if kind == "phrase":
            self.plain = False
            value = " ".join(value.split())
            return Phrase(value) if value else None
        if kind == "filter":
            self.plain = False
            name, _, val = value.partition(":")
            self.filters.setdefault(name, [])
            if val not in self.filters[name]:
                self.filters[name].append(val)
            return None
        if kind == "lparen":  # grouping alone keeps the query plain: "What is (are) rosacea?"
            if self.peek() == "rparen":
                self.pos += 1
                raise QuerySyntaxError("empty parentheses")
            node = self.either()
            if self.peek() != "rparen":
                raise QuerySyntaxError("unbalanced parentheses")
            self.pos += 1
            return node
        raise QuerySyntaxError("unbalanced parentheses" if kind == "rparen" else f"unexpected {value!r}")


def _count_words(node: Node | None) -> int:
    if node is None:
        return 0
    if isinstance(node, (Word, Phrase)):
        return 1
    if isinstance(node, Not):
        return _count_words(node.child)
    return sum(_count_words(c) for c in node.children)


def _fallback(text: str, reason: str, problems: list[str]) -> Parsed:
    words = plain_words(text)
    tree: Node | None = None
    if words:
        tree = Word(words[0]) if len(words) == 1 else Group([Word(w) for w in words])
    why = "; ".join([*problems, reason])
    notice = f"Your query could not be read as written ({why}); searched for its words instead."
    return Parsed(tree=tree, notice=notice, plain=True)


def parse(text: str) -> Parsed:
    """Parse the search box; never raises, malformed input degrades to plain words with a notice."""
    cleaned, problems = clean(text)
    try:
        parser = _Parser(_tokens(cleaned))
        tree = parser.parse()
    except QuerySyntaxError as exc:
        return _fallback(cleaned, str(exc), [])
    except RecursionError:
        return _fallback(cleaned, "too deeply nested", [])
    if _count_words(tree) > MAX_WORDS:
        return _fallback(cleaned, f"more than {MAX_WORDS} words", problems)
    notice = ""
    if problems:
        notice = f"Your query was adjusted ({'; '.join(problems)})."
    return Parsed(tree=tree, filters=parser.filters, notice=notice, plain=parser.plain)


# -- question intents ------------------------------------------------------------------------------

#: Consumer-health questions name what they want to know with lay words ("outlook", "how many
#: people"); the answering text uses other words ("prognosis", "prevalence"). Each pattern adds
#: those words at a low weight, so they only decide between pages on the same subject.
QUESTION_INTENTS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern, re.I), tuple(words.split())) for pattern, words in (
        (r"\bsymptoms?\b|\bsigns?\b", "signs symptoms"),
        (r"\btreat(?:ment|ments|ed|ing|s)?\b|\btherap", "treatment treated therapy"),
        (r"\bdiagnos", "diagnosis diagnosed tests testing"),
        (r"\bgenetic changes?\b|\bgenes?\b|\bgenetic\b", "mutations gene"),
        (r"\bhow many people\b|\bhow common\b|\bprevalen", "prevalence affects estimated incidence"),
        (r"\binherit|\bhereditary\b", "inherited inheritance autosomal pattern"),
        (r"\bresearch\b|\bclinical trials?\b", "research trials studies"),
        (r"\boutlook\b|\bprognosis\b", "prognosis outlook"),
        (r"\bprevent", "prevention prevent prevented"),
        (r"\brisk\b", "risk"),
        (r"\bcauses?\b|\bcaused\b", "cause caused"),
        (r"\bwhat to do for\b|\bdiet\b|\beat\b", "eating diet nutrition"),
        (r"\bcomplications?\b", "complications"),
        (r"\bstages?\b", "stage stages staging"),
        (r"\bside effects?\b", "side effects"),
    )
)


def intent_words(text: str) -> list[str]:
    """Words the answer to a question of this kind tends to use (see QUESTION_INTENTS)."""
    out: list[str] = []
    for pattern, words in QUESTION_INTENTS:
        if pattern.search(text):
            out += [w for w in words if w not in out]
    return out
