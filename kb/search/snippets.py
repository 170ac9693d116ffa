"""Snippets: the fragment of a result's text that best shows the query, with the matched words marked.

Pure text work on the stored body, no index access: a `Marker` finds the query's words and whole
phrases (typed phrases and multi-word synonyms, never one word of them alone), and keeps a word only
when the caller's `accept` says it is one the query matched (the stemmer decides "sun" is not
"sunglasses"). The densest window of distinct marks wins, favouring sections whose heading matches,
and starts at a sentence or block when one is near. A heading or list item never runs into the next
sentence: line breaks in the window become " · " unless a sentence already ends there. The output is
escaped HTML (`snippet_html`); the fragment's offset tells the caller which section to deep-link.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

SNIPPET_CHARS = 200
LEAD_CHARS = 40  # context kept before the first mark when no sentence starts nearer
SENTENCE_REACH = 90  # how far back a window may start to begin with its sentence or block
BLOCK_SEPARATOR = " · "
_BREAK = re.compile(r"[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?:[.!?…:;][\"'”’)]*\s+|\n\s*)")
_ENDS_SENTENCE = ".!?…:;"


@dataclass
class _Mark:
    start: int
    end: int
    key: str

    def span(self) -> tuple[int, int]:
        return self.start, self.end


class Marker:
    """Finds what to mark: whole phrases first, then single words the caller accepts."""

    def __init__(self, words: re.Pattern[str] | None, phrases: re.Pattern[str] | None,
                 accept: Callable[[str], bool] | None = None) -> None:
        self.words = words
        self.phrases = phrases
        self.accept = accept

    def finditer(self, text: str) -> Iterator[_Mark]:
        """Marks in text order, phrases winning over the words inside them."""
        found: list[_Mark] = []
        if self.phrases is not None:
            found += [_Mark(m.start(), m.end(), m.group(0).casefold()) for m in self.phrases.finditer(text)]
        taken = [m.span() for m in found]
        if self.words is not None:
            for m in self.words.finditer(text):
                if any(s < m.end() and m.start() < e for s, e in taken):
                    continue
                if self.accept is None or self.accept(m.group(0)):
                    found.append(_Mark(m.start(), m.end(), m.group(0).casefold()))
        found.sort(key=lambda k: k.start)
        return iter(found)


def highlight_pattern(terms: Iterable[str], surface: Iterable[str],
                      accept: Callable[[str], bool] | None = None) -> Marker | None:
    """A Marker for analysed `terms` (word prefixes, kept if `accept`) and typed words and phrases."""
    words: set[str] = set()
    phrases: set[str] = set()
    for term in terms:
        term = term.strip()
        if len(term) >= 3 and re.fullmatch(r"\w+", term):
            words.add(re.escape(term) + r"\w*")
        elif term and re.fullmatch(r"\w+", term):
            words.add(re.escape(term) + r"\b")
    for word in surface:
        parts = word.split()
        if not parts or not re.search(r"\w", word):
            continue
        if len(parts) == 1:
            words.add(re.escape(parts[0]) + (r"\b" if parts[0][-1:].isalnum() else ""))
        else:  # a phrase: inflected last word allowed ("pulsed dye lasers")
            phrases.add(r"\s+".join(re.escape(w) for w in parts) + r"\w*")
    if not words and not phrases:
        return None
    return Marker(_alternatives(words), _alternatives(phrases), accept)


def _alternatives(alts: set[str]) -> re.Pattern[str] | None:
    if not alts:
        return None
    ordered = sorted(alts, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(ordered) + ")", re.IGNORECASE)


def make_snippet(text: str, pattern: Marker | None, sections: list[list[Any]] | None = None,
                 size: int = SNIPPET_CHARS) -> tuple[str, int]:
    """(escaped HTML with <mark>s, start offset of the chosen fragment or -1 when nothing matched)."""
    sections = sections or []
    matches: list[_Mark] = []
    if pattern is not None and text:
        for m in pattern.finditer(text):
            matches.append(m)
            if len(matches) >= 400:
                break
    if not matches:
        end = _sentence_end(text, 0, size)
        return _render(text, 0, end, []), -1
    first = matches[_best_window(matches, pattern, sections, size)].start
    start = _window_start(text, first)
    end = _sentence_end(text, start, size)
    return _render(text, start, end, [m for m in matches if m.start >= start and m.end <= end]), first


def _best_window(matches: list[_Mark], pattern: Marker | None, sections: list[list[Any]], size: int) -> int:
    """Index of the first mark of the window with the most distinct marks (heading matches help)."""
    heading_bonus: dict[int, int] = {}
    if sections and pattern is not None:
        for i, (_, heading, _start) in enumerate(sections):
            heading_bonus[i] = len({m.key for m in pattern.finditer(heading or "")})
    starts = [s[2] for s in sections]
    best = (-1.0, 0)
    j = 0
    for i, mark in enumerate(matches):
        j = max(j, i)
        while j + 1 < len(matches) and matches[j + 1].end <= mark.start + size:
            j += 1
        window = matches[i:j + 1]
        score = len({w.key for w in window}) * 10 + len(window)
        if sections:
            si = bisect_left(starts, mark.start + 1) - 1
            score += 6 * heading_bonus.get(si, 0) if si >= 0 else 0
        if score > best[0]:
            best = (score, i)
    return best[1]


def _window_start(text: str, first: int) -> int:
    """Start at the sentence or block holding the first mark when it is near, else at a word before it."""
    if first <= LEAD_CHARS:
        return 0
    reach = max(0, first - SENTENCE_REACH)
    boundary = -1
    for m in _SENTENCE_END.finditer(text, reach, first):
        boundary = m.end()
    if boundary >= 0:
        return boundary
    start = first - LEAD_CHARS
    space = text.find(" ", start, first)  # begin at a word, not inside one
    return space + 1 if space >= 0 else start


def _sentence_end(text: str, start: int, size: int) -> int:
    """End after `size` characters: at a sentence end a little before or after it, else at a word."""
    end = start + size
    if end >= len(text):
        return len(text)
    best = -1
    for m in _SENTENCE_END.finditer(text, start + size * 2 // 3, min(len(text), end + 40)):
        best = m.start() + 1 if text[m.start()] in _ENDS_SENTENCE else m.start()
        if best >= end:
            break
    if best > start:
        return best
    space = text.find(" ", end, end + 30)
    return space if space >= 0 else end


def _render(text: str, start: int, end: int, marks: list[_Mark]) -> str:
    """Escaped text[start:end] with <mark>s; line breaks become a visible separator."""
    out: list[str] = ["…"] if start else []
    pos = start
    for mark in marks:
        out.append(_plain(text, pos, mark.start))
        out.append("<mark>" + html.escape(text[mark.start:mark.end]) + "</mark>")
        pos = mark.end
    out.append(_plain(text, pos, end))
    if end < len(text):
        out.append("…")
    return "".join(out).strip()


def _plain(text: str, start: int, end: int) -> str:
    """Escaped text between marks, each line break shown as a space after a sentence, else " · "."""
    def sep(m: re.Match[str]) -> str:
        at = start + m.start()
        before = text[max(0, at - 40):at].rstrip()
        if at == 0 or start + m.end() >= len(text) or not before:
            return " "
        return " " if before[-1] in _ENDS_SENTENCE else BLOCK_SEPARATOR
    return html.escape(_BREAK.sub(sep, text[start:end]))
