"""Snippets: the fragment of a result's text that best shows the query, with the query words marked.

Pure text work on the stored body, no index access: one regular expression marks analysed
terms as word prefixes and typed words as they are, and the densest window of distinct marks wins,
favouring sections whose heading matches. The output is escaped HTML (`snippet_html`), and the
fragment's offset tells the caller which section to deep-link (kb.schema.section_at).
"""

from __future__ import annotations

import html
import re
from bisect import bisect_left
from typing import Any, Iterable

SNIPPET_CHARS = 200


def highlight_pattern(terms: Iterable[str], surface: Iterable[str]) -> re.Pattern[str] | None:
    """One regex marking query words in text: analysed terms as word prefixes, typed words as is."""
    alts: set[str] = set()
    for term in terms:
        term = term.strip()
        if len(term) >= 3 and re.fullmatch(r"\w+", term):
            alts.add(re.escape(term) + r"\w*")
        elif term:
            alts.add(re.escape(term) + r"\b")
    for word in surface:
        word = " ".join(word.split())
        if word and re.search(r"\w", word):
            alts.add(r"\s+".join(re.escape(w) for w in word.split()) + (r"\b" if word[-1:].isalnum() else ""))
    if not alts:
        return None
    ordered = sorted(alts, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(ordered) + ")", re.IGNORECASE)


def make_snippet(text: str, pattern: re.Pattern[str] | None, sections: list[list[Any]] | None = None,
                 size: int = SNIPPET_CHARS) -> tuple[str, int]:
    """(escaped HTML with <mark>s, start offset of the chosen fragment or -1 when nothing matched)."""
    sections = sections or []
    matches = []
    if pattern is not None and text:
        for m in pattern.finditer(text):
            matches.append((m.start(), m.end(), m.group(0).casefold()))
            if len(matches) >= 400:
                break
    if not matches:
        end = _word_end(text, size)
        return html.escape(text[:end].strip()) + ("…" if end < len(text) else ""), -1
    heading_bonus: dict[int, int] = {}
    if sections and pattern is not None:
        for i, (_, heading, _start) in enumerate(sections):
            heading_bonus[i] = len({m.group(0).casefold() for m in pattern.finditer(heading or "")})
    starts = [s[2] for s in sections]
    best = (-1.0, 0)
    j = 0
    for i, (start, _, _) in enumerate(matches):
        j = max(j, i)
        while j + 1 < len(matches) and matches[j + 1][1] <= start + size:
            j += 1
        window = matches[i:j + 1]
        distinct = len({w[2] for w in window})
        score = distinct * 10 + len(window)
        if sections:
            si = bisect_left(starts, start + 1) - 1
            score += 6 * heading_bonus.get(si, 0) if si >= 0 else 0
        if score > best[0]:
            best = (score, i)
    first = matches[best[1]][0]
    start = max(0, first - 40)
    if start:
        space = text.find(" ", start, first)  # begin at a word, not inside one
        start = space + 1 if space >= 0 else start
    end = _word_end(text, start + size)
    out: list[str] = ["…"] if start else []
    pos = start
    for s, e, _ in matches:
        if s < start or e > end:
            continue
        out.append(html.escape(text[pos:s]))
        out.append("<mark>" + html.escape(text[s:e]) + "</mark>")
        pos = e
    out.append(html.escape(text[pos:end]))
    if end < len(text):
        out.append("…")
    return "".join(out).strip(), first


def _word_end(text: str, end: int) -> int:
    if end >= len(text):
        return len(text)
    space = text.find(" ", end, end + 30)
    return space if space >= 0 else end
