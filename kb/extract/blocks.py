"""The chosen containers as text blocks: headings and paragraphs in document order, boilerplate lines out. Pure.

A block remembers the text nodes it was made of, so each section's safe markup can be rebuilt from exactly
the text that made it into the article. Article pages, JSON-LD bodies and FAQ answers are all serialised here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from bs4 import Tag

from kb.extract.tree import BLOCK_TAGS, HEADINGS, _clean, _is_text, _parse

CELL_TAGS = frozenset({"td", "th"})

FEED_FOOTER_RE = re.compile(r"^The post .{1,300} appeared first on .{1,200}$", re.S)
BOILER_LINE_RE = re.compile(
    r"^(advert|advertisement|advertisements|sponsored|sponsored content|story continues below( advertisement)?"
    r"|continue reading( below)?|share this:?|share|like this:?|related|related posts:?|loading\.*"
    r"|skip to (main )?content|click to share.*|tweet|email|print|read more|\(opens in new window\)"
    r"|comments?|\d+ comments?|leave a (comment|reply)|subscribe|sign up|log ?in|caption|close)$",
    re.I,
)


# --------------------------------------------------------------------------------------- serialising

@dataclass
class _Block:
    text: str
    level: int = 0  # 1–6 for headings, 0 for paragraphs
    links: int = 0
    el: Tag | None = None
    nodes: tuple[int, ...] = ()  # ids of the text nodes it was made of, to rebuild its markup
    section: int = -1  # index of the Section whose body it is (-1: a heading, or left out)


_BR = object()
_CELL = object()


def _blocks(roots: list[Tag]) -> list[_Block]:
    """Serialise containers into paragraph and heading blocks, in document order."""
    out: list[_Block] = []
    for root in roots:
        out.extend(_blocks_of(root))
    return out


def _blocks_of(root: Tag) -> Iterator[_Block]:
    buf: list[object] = []
    links = 0
    stack: list[Tag] = []
    in_a = in_pre = 0
    heading: list[Tag] = []

    def flush(level: int = 0, el: Tag | None = None) -> Iterator[_Block]:
        nonlocal buf, links
        if not buf:
            return
        lines: list[str] = []
        line_nodes: list[list[int]] = [[]]
        line: list[str] = []
        for part in buf:
            if part is _BR:
                lines.append("".join(line))
                line = []
                line_nodes.append([])
            elif part is _CELL:
                line.append(" | ")
            else:
                value, node_id = part  # type: ignore[misc]
                line.append(value)
                line_nodes[-1].append(node_id)
        lines.append("".join(line))
        buf, n_links = [], links
        links = 0
        if in_pre:
            text = "\n".join(ln.rstrip() for ln in lines).strip("\n")
            if text.strip():
                yield _Block(text=text, level=level, links=n_links, el=el,
                             nodes=tuple(n for ids in line_nodes for n in ids))
            return
        # A blank line (<br><br>) inside one element separates paragraphs, as it does on screen.
        paragraphs: list[list[str]] = [[]]
        nodes: list[list[int]] = [[]]
        for ln, ids in zip(lines, line_nodes):
            ln = _clean(ln).strip(" |")
            if ln:
                paragraphs[-1].append(ln)
                nodes[-1].extend(ids)
            elif paragraphs[-1]:
                paragraphs.append([])
                nodes.append([])
        texts = [("\n".join(p), tuple(ids)) for p, ids in zip(paragraphs, nodes) if p]
        total = sum(len(t) for t, _ in texts) or 1
        for t, ids in texts:
            yield _Block(text=t, level=level, links=round(n_links * len(t) / total), el=el, nodes=ids)

    def close(tag: Tag) -> Iterator[_Block]:
        nonlocal in_a, in_pre
        name = tag.name
        if name == "a":
            in_a -= 1
        if name in HEADINGS and heading and heading[-1] is tag:
            heading.pop()
            yield from flush(HEADINGS[name], tag)
        elif name in CELL_TAGS:
            buf.append(_CELL)
        elif name in BLOCK_TAGS:
            yield from flush()
        if name == "pre":
            in_pre -= 1

    for node in root.descendants:
        parent = node.parent
        while stack and stack[-1] is not parent:
            yield from close(stack.pop())
        if isinstance(node, Tag):
            name = node.name
            if name == "br":
                buf.append(_BR)
                continue
            if name == "hr":
                yield from flush()
                continue
            if name in BLOCK_TAGS and name not in CELL_TAGS or name in HEADINGS:
                yield from flush()
            if name in HEADINGS:
                heading.append(node)
            if name == "a":
                in_a += 1
            if name == "pre":
                in_pre += 1
            stack.append(node)
        elif _is_text(node):
            s = str(node)
            if not in_pre:
                s = re.sub(r"\s+", " ", s)
            buf.append((s, id(node)))
            if in_a:
                links += len(s.strip())
    while stack:
        yield from close(stack.pop())
    yield from flush()


def _keep_block(block: _Block) -> bool:
    text = block.text
    if FEED_FOOTER_RE.match(text) or BOILER_LINE_RE.match(text.strip(" :|·•-—")):
        return False
    if block.level == 0 and block.links and block.links >= 0.8 * len(text.replace(" ", "")) and len(text) < 200:
        return False
    return True


def _fragment(fragment: str) -> tuple[list[_Block], list[Tag]]:
    """Blocks of a fragment and the parsed element they come from (none for plain text)."""
    if not re.search(r"<[a-zA-Z/]", fragment):
        return [_Block(text=_clean(p)) for p in re.split(r"\n\s*\n|\n", fragment) if _clean(p)], []
    soup = _parse(f"<div>{fragment}</div>")
    found = soup.find("div")
    root = found if isinstance(found, Tag) else soup
    return list(_blocks_of(root)), [root]
