"""Parsing with bounded depth, and reading the parsed tree: visible text and attributes. Pure.

Every other part of the extractor works on the tree `_parse` returns and reads it through these helpers,
so they sit under all of them.
"""

from __future__ import annotations

import itertools
import re
import warnings

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString, Script, Stylesheet, TemplateString

from kb.errors import SkipPage

MAX_DEPTH = 256  # deeper nesting is flattened to text: browsers cap it too, and it bounds our work
# lxml's HTML parser checks each new attribute against all earlier ones of its element, so n attributes cost
# ~3 ns x n² (20k: 1.2 s, 80k: a minute), and every element costs the extractor ~80 µs and ~1 KB. Markup past
# these bounds is an attack, not an article: the 195 pages of the extraction set, tests/data and the demo site
# have at most 1,602 elements and 50 attributes on a real element (663 on a "tag" inside minified script).
MAX_ATTRIBUTES = 5_000  # on one element (lxml: 0.06 s)
MAX_ATTRIBUTE_WORK = 100_000_000  # sum of n² over all elements (lxml: ~0.3 s); real pages use under 1 million
MAX_ELEMENTS = 50_000  # start tags in one page (the extractor: ~4 s)

_WS = "\t\n\f\r "
# One HTML5 attribute: a name (its first character may be anything but space, "/" and ">", even "=" or a
# quote) and an optional value, quoted (an unclosed quote runs to the end) or not.
_ATTRIBUTE = rf"""[^{_WS}/>][^{_WS}/>=]*(?:[{_WS}]*=[{_WS}]*(?:"[^"]*"?|'[^']*'?|[^{_WS}>]*))?"""
# A start tag with its attributes, as the HTML5 tokenizer reads them. The scan does not try to tell comments,
# scripts and styles apart (a wrong guess would skip markup the parser reads): "tags" there count too.
_START_TAG = re.compile(rf"<([A-Za-z][^{_WS}/>]*)((?:[{_WS}/]+|{_ATTRIBUTE})*)")
_ATTRIBUTES = re.compile(_ATTRIBUTE)

BLOCK_TAGS = frozenset(
    "address article aside blockquote body center dd details dialog dir div dl dt fieldset figcaption figure "
    "footer form frameset h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu nav ol p pre section summary "
    "table tbody thead tfoot tr td th caption ul legend option optgroup".split()
)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


# ------------------------------------------------------------------------------------------------ parsing

def check_markup(text: str) -> None:
    """Refuse markup that would make the HTML parsers superlinear or huge, before any parse (linear scan)."""
    elements, work = 0, 0
    for match in _START_TAG.finditer(text):
        elements += 1
        if elements > MAX_ELEMENTS:
            raise SkipPage(f"hostile markup: more than {MAX_ELEMENTS:,} elements in one page",
                           kind="hostile_markup")
        count = _count_attributes(match.group(2)) if match.group(2) else 0
        if count > MAX_ATTRIBUTES:
            raise SkipPage(f"hostile markup: a <{match.group(1)[:20]}> element has more than "
                           f"{MAX_ATTRIBUTES:,} attributes", kind="hostile_markup")
        work += count * count
        if work > MAX_ATTRIBUTE_WORK:
            raise SkipPage("hostile markup: too many attributes on its elements (would take the HTML parser "
                           "minutes)", kind="hostile_markup")


def _count_attributes(attributes: str) -> int:
    """Attributes in one start tag's attribute text, counted up to one past the limit."""
    return sum(1 for _ in itertools.islice(_ATTRIBUTES.finditer(attributes), MAX_ATTRIBUTES + 1))


def _parse(text: str) -> BeautifulSoup:
    """The page's tree, once check_markup has passed it, with nesting past MAX_DEPTH flattened."""
    check_markup(text)
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


