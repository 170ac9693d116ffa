"""Safe article markup: an allow-list serialiser over parsed HTML trees. Pure: never fetches.

Crawled HTML is hostile. The article page shows lists, sub-headings, emphasis, quotes and tables as the
source had them, so this module rebuilds markup from a parsed tree, writing only allow-listed elements with
allow-listed attributes and escaping every text node; everything else is unwrapped (its text kept) or, for
scripts, styles, frames and the like, dropped with its content. Nothing here is regex over HTML.

`Writer` is driven two ways: extraction walks the pruned page tree and keeps exactly the text nodes that
made it into the article's plain text, splitting the markup by section (`section_markup`); the web layer
re-runs stored markup through the same allow-list before showing it (`clean`), shifting sub-heading levels
under the section heading they sit in.
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString, Script, Stylesheet, TemplateString

log = logging.getLogger(__name__)

__all__ = ["ALLOWED_TAGS", "clean", "safe_href", "section_markup"]

HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
INLINE_TAGS = frozenset({"strong", "em", "b", "i", "a"})
BLOCK_TAGS = frozenset({"p", "ul", "ol", "li", "blockquote", "table", "thead", "tbody", "tr", "th", "td",
                        *HEADING_TAGS})
ALLOWED_TAGS = INLINE_TAGS | BLOCK_TAGS | {"br"}
# Allowed elements that hold text directly; text elsewhere gets an implied <p> (or <li> inside a list).
TEXT_HOLDERS = frozenset({"p", "li", "th", "td", *HEADING_TAGS})
LISTS = frozenset({"ul", "ol"})
# Elements that end a paragraph of running text in the source (as in kb.extract.blocks' serialiser).
BREAKING_TAGS = BLOCK_TAGS | frozenset(
    "address article aside body center dd details dialog dir div dl dt fieldset figcaption figure footer form "
    "header hgroup hr html main menu nav pre section summary caption tfoot legend".split()
)
# Elements dropped with everything inside them: never article text, often active content.
DROP_WITH_CONTENT = frozenset(
    "script style noscript template iframe frame frameset object embed applet svg canvas math button select "
    "textarea input option datalist dialog map audio video source track picture link meta base head title "
    "xmp plaintext noembed noframes img image".split()
)  # not <form>: some sites wrap the whole page in one, so its text is unwrapped like any other element's
LINK_REL = "nofollow noopener"
MAX_HREF = 2048
MAX_SPAN = 100  # colspan/rowspan beyond this are layout tricks, not tables
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_SPACE_RE = re.compile(r"\s+")


def _is_text(node: object) -> bool:
    return isinstance(node, NavigableString) and not isinstance(
        node, (PreformattedString, Script, Stylesheet, TemplateString)
    )


def safe_href(href: str, base_url: str = "") -> str | None:
    """`href` made absolute against `base_url`, or None unless it is an http(s) URL with a host."""
    value = (href or "").strip()
    if not value or len(value) > MAX_HREF or _CONTROL_RE.search(value.replace(" ", "")):
        return None  # browsers strip tabs and newlines inside schemes ("java\tscript:"): refuse them all
    try:
        # Only a scheme-less href is relative: "https://" or "https:///x" are broken links, not the page itself.
        absolute = urljoin(base_url, value) if base_url and not urlsplit(value).scheme else value
        parts = urlsplit(absolute)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    return absolute.replace(" ", "%20")


def _span(value: object) -> str | None:
    text = value if isinstance(value, str) else ""
    return text.strip() if text.strip().isdigit() and 1 < int(text.strip()) <= MAX_SPAN else None


class Writer:
    """Writes allow-listed markup for a stream of enter/text/exit events, opening elements only around text.

    Elements open lazily, when text inside them is written, so an element whose text was all dropped (a
    pruned share bar, a boilerplate paragraph) leaves no empty tags behind; `switch` closes what is open and
    starts another output, and the elements still being walked reopen there around their next text.
    """

    def __init__(self, base_url: str = "", headings: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headings = headings or {}  # source heading tag -> written heading tag
        self.out: list[str] = []
        self.path: list[Tag] = []  # enclosing elements of the walk position (all, allowed or not)
        self.open: list[tuple[str, Tag | None]] = []  # written open tags; None marks an implied <p>/<li>
        self.pending_break = 0  # <br>s met since the last text (two or more end a paragraph)
        self.can_space = False  # a space may follow: the last thing written was text or inline
        self.in_text = False  # text was written since the last block started or ended: a <br> counts

    # -- events -------------------------------------------------------------------------------------
    def enter(self, el: Tag) -> None:
        if el.name in BREAKING_TAGS:
            self._close_implied()
        if el.name == "br":
            if self.in_text:
                self.pending_break = min(2, self.pending_break + 1)
            return
        self.path.append(el)

    def exit(self, el: Tag) -> None:
        if el.name == "br":
            return
        if el.name in BREAKING_TAGS:
            self._close_implied()
        if self.path and self.path[-1] is el:
            self.path.pop()
        if self.open and self.open[-1][1] is el:
            self._close_top()

    def text(self, value: str) -> None:
        if not value.strip():
            if self.can_space and self.open:
                self.out.append(" ")
                self.can_space = False
            return
        if self.pending_break > 1:
            self._split_paragraph()
        self._open_pending()
        if self.pending_break:
            self.out.append("<br>" * self.pending_break)
        self.pending_break = 0
        value = _SPACE_RE.sub(" ", value)
        last = self.out[-1] if self.out else "<"
        if (last.startswith("<") and not last.startswith("</")) or last.endswith(" "):
            value = value.lstrip()  # no space right after an opening tag, a <br> or another space
        self.out.append(html.escape(value, quote=False))
        self.can_space = not value[-1:].isspace()
        self.in_text = True

    def switch(self) -> str:
        """Close everything written so far and return it; later text starts a new output."""
        while self.open:
            self._close_top()
        done, self.out = "".join(self.out), []
        self.pending_break, self.can_space, self.in_text = 0, False, False
        return done

    # -- opening and closing ---------------------------------------------------------------------------
    def _start_tag(self, el: Tag) -> str | None:
        """The open tag written for `el`, or None when it is not allowed here (its text is still written)."""
        name = el.name
        if name not in ALLOWED_TAGS or name == "br":
            return None
        if name in HEADING_TAGS:
            return f"<{self.headings.get(name, name)}>"
        if name == "a":
            if any(t == "a" for t, _ in self.open):
                return None  # no links inside links
            href = safe_href(el.get("href") if isinstance(el.get("href"), str) else "", self.base_url)
            if href is None:
                return None
            return f'<a href="{html.escape(href, quote=True)}" rel="{LINK_REL}">'
        if name in ("td", "th"):
            attrs = "".join(f' {attr}="{value}"' for attr in ("colspan", "rowspan")
                            if (value := _span(el.get(attr))) is not None)
            return f"<{name}{attrs}>"
        return f"<{name}>"

    def _open_pending(self) -> None:
        """Open the allowed elements around the walk position that are not open yet, outermost first."""
        opened = {id(el) for _, el in self.open if el is not None}
        start = max((i + 1 for i, el in enumerate(self.path) if id(el) in opened), default=0)
        pending = [el for el in self.path[start:] if _allowed_name(el)]
        last_block = max((i for i, el in enumerate(pending) if el.name in BLOCK_TAGS), default=-1)
        if last_block >= 0:
            self.pending_break = 0  # a new block starts a new line anyway
        for i, el in enumerate(pending):
            if el.name in INLINE_TAGS and i < last_block:
                continue  # an inline element around a block (<b><p>..</p></b>) is broken by it, as in browsers
            tag = self._start_tag(el)
            if tag is None:
                continue
            if el.name in INLINE_TAGS:
                self._imply_holder()
            self.out.append(tag)
            self.open.append((el.name, el))
            self.can_space = False
            self.in_text = self.in_text and el.name in INLINE_TAGS
        self._imply_holder()

    def _imply_holder(self) -> None:
        """Open a <p> (an <li> inside a list) when text or inline markup would sit outside a text holder."""
        block = next((name for name, _ in reversed(self.open) if name in BLOCK_TAGS), None)
        if block in TEXT_HOLDERS or any(el is None for _, el in self.open):
            return
        name = "li" if block in LISTS else "p"
        self.out.append(f"<{name}>")
        self.open.append((name, None))
        self.can_space = self.in_text = False

    def _split_paragraph(self) -> None:
        """A blank line (<br><br>) inside a paragraph starts another one, as in the plain text."""
        block = max((i for i, (name, _) in enumerate(self.open) if name in BLOCK_TAGS), default=-1)
        if block >= 0 and self.open[block][0] == "p":
            while len(self.open) > block:
                self._close_top()  # the <p> and what is open in it reopen around the next text
            self.pending_break = 0

    def _close_implied(self) -> None:
        if any(el is None for _, el in self.open):
            while self.open:
                _, el = self.open[-1]
                self._close_top()
                if el is None:
                    break
        self.pending_break = 0

    def _close_top(self) -> None:
        name, el = self.open.pop()
        if el is not None and name in HEADING_TAGS:
            name = self.headings.get(name, name)
        if name in BLOCK_TAGS and self.out and not self.out[-1].startswith("<"):
            self.out[-1] = self.out[-1].rstrip(" ")  # no space before the end of a block ("a <b>b </b>c" keeps it)
        self.out.append(f"</{name}>")
        self.can_space = name in INLINE_TAGS
        if name in BLOCK_TAGS:
            self.pending_break = 0
            self.in_text = False


def _allowed_name(el: Tag) -> bool:
    return el.name in ALLOWED_TAGS and el.name != "br"


def _events(roots: Iterable[object]) -> Iterator[tuple[str, Tag | NavigableString]]:
    """("enter", tag), ("text", string), ("exit", tag) in document order, roots included; no recursion."""
    for root in roots:
        if not isinstance(root, Tag):
            if _is_text(root):
                yield "text", root  # type: ignore[misc]
            continue
        if root.name in DROP_WITH_CONTENT:
            continue
        yield "enter", root
        stack: list[tuple[Tag, Iterator]] = [(root, iter(list(root.children)))]
        while stack:
            parent, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                yield "exit", parent
            elif isinstance(child, Tag):
                if child.name in DROP_WITH_CONTENT:
                    continue
                yield "enter", child
                stack.append((child, iter(list(child.children))))
            elif _is_text(child):
                yield "text", child


def section_markup(roots: Iterable[Tag], owner: Callable[[NavigableString], int | None], count: int,
                   base_url: str = "") -> list[str]:
    """Markup of `count` sections from the content tree: each text node goes to section `owner(node)`.

    Text nodes whose owner is None (dropped blocks, section headings, the title) are left out, and so is any
    element left with no text; whitespace is kept only inside written elements.
    """
    writer = Writer(base_url)
    out = [""] * count
    current: int | None = None
    for kind, node in _events(roots):
        if kind == "enter":
            writer.enter(node)  # type: ignore[arg-type]
        elif kind == "exit":
            writer.exit(node)  # type: ignore[arg-type]
        elif not str(node).strip():
            writer.text(str(node))
        else:
            target = owner(node)  # type: ignore[arg-type]
            if target is None or not 0 <= target < count:
                continue
            if target != current:
                if current is not None:
                    out[current] += writer.switch()
                else:
                    writer.switch()
                current = target
            writer.text(str(node))
    if current is not None:
        out[current] += writer.switch()
    return out


def clean(fragment: str, base_url: str = "", heading_level: int | None = None) -> str:
    """`fragment` rewritten through the allow-list; sub-headings become levels below `heading_level`.

    With `heading_level` (the level of the section heading the fragment is shown under), the fragment's
    heading levels, in order of rank, become heading_level + 1, + 2, … (at most h6), so a page's outline
    never skips a level whatever the source used.
    """
    if not fragment or not fragment.strip():
        return ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bs4's "looks like a URL/filename" hints
        soup = BeautifulSoup(f"<div>{fragment}</div>", "lxml")  # the <div> keeps loose text from lxml's own <p>
    root = soup.body  # not the <div>: a stray "</div>" in the fragment must not hide what follows it
    if not isinstance(root, Tag):
        return ""
    headings: dict[str, str] = {}
    if heading_level is not None:
        used = sorted({h.name for h in root.find_all(list(HEADING_TAGS))})
        headings = {name: f"h{min(6, heading_level + 1 + rank)}" for rank, name in enumerate(used)}
    writer = Writer(base_url, headings)
    for kind, node in _events(list(root.children)):
        if kind == "enter":
            writer.enter(node)  # type: ignore[arg-type]
        elif kind == "exit":
            writer.exit(node)  # type: ignore[arg-type]
        else:
            writer.text(str(node))
    return writer.switch()
