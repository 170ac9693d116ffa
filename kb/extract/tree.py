"""Parsing with bounded depth, and reading the parsed tree: visible text and attributes. Pure.

Every other part of the extractor works on the tree `_parse` returns and reads it through these helpers,
so they sit under all of them.
"""

from __future__ import annotations

import warnings

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString, Script, Stylesheet, TemplateString

MAX_DEPTH = 256  # deeper nesting is flattened to text: browsers cap it too, and it bounds our work

BLOCK_TAGS = frozenset(
    "address article aside blockquote body center dd details dialog dir div dl dt fieldset figcaption figure "
    "footer form frameset h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu nav ol p pre section summary "
    "table tbody thead tfoot tr td th caption ul legend option optgroup".split()
)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


# ------------------------------------------------------------------------------------------------ parsing

def _parse(text: str) -> BeautifulSoup:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bs4's "looks like a URL/filename" and XML-as-HTML hints
        soup = BeautifulSoup(text, "lxml")
    _flatten_deep(soup)
    return soup


def _flatten_deep(soup: BeautifulSoup) -> None:
    """Collapse anything nested deeper than MAX_DEPTH into its text, so later passes stay linear."""
    depth: dict[int, int] = {id(soup): 0}
    boundary: list[Tag] = []
    for node in soup.descendants:
        if not isinstance(node, Tag):
            continue
        d = depth[id(node.parent)] + 1
        depth[id(node)] = d
        if d == MAX_DEPTH and any(isinstance(c, Tag) for c in node.children):
            boundary.append(node)
    for node in boundary:
        text = " ".join(s for s in node.stripped_strings)
        for child in list(node.children):
            child.extract()
        node.append(NavigableString(text))


# ----------------------------------------------------------------------------------------- text helpers

def _is_text(node: object) -> bool:
    return isinstance(node, NavigableString) and not isinstance(
        node, (PreformattedString, Script, Stylesheet, TemplateString)
    )


def _clean(text: str) -> str:
    return " ".join(text.split())


def _text(el: Tag | None) -> str:
    """Visible text of an element with whitespace collapsed."""
    if el is None:
        return ""
    return _clean(" ".join(s for s in el.descendants if _is_text(s)))


def _attr(el: Tag, name: str) -> str:
    value = el.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value or ""


