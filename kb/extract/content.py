"""Which part of a page is the article: junk removal, text measures, container choice, pruning. Pure.

Steps 1-4 of kb.extract's recipe (after readability and trafilatura) live here, with the class and id
words that name page furniture; what is left is serialised by kb.extract.blocks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, Tag

from kb.extract.tree import BLOCK_TAGS, HEADINGS, _attr, _clean, _is_text, _text

log = logging.getLogger(__name__)

MIN_PARAGRAPH = 25  # characters a block needs before its score counts (readability's threshold)

# Tags whose content is never article text.
DROP_TAGS = frozenset(
    "script style noscript template iframe frame frameset object embed applet svg canvas math button select "
    "textarea input option datalist dialog map audio video source track picture link meta base head figcaption"
    .split()
)
# Page furniture: dropped unless it wraps the main content (some sites wrap everything in a <form>).
FURNITURE_TAGS = frozenset({"nav", "aside", "footer", "header", "form", "menu"})

# Class/id words of page furniture (matched as whole words of a class or id, split on - and _).
JUNK_WORDS = frozenset(
    """
    nav navbar navigation menu menus submenu breadcrumb breadcrumbs sidebar sidebars widget widgets widgetarea
    comment comments commentlist respond disqus share shares sharing sharedaddy sharethis addthis social
    socials related relatedposts recommended recommendations newsletter subscribe subscription signup
    promo promos advert advertisement advertisements adsense ad ads advertising sponsor sponsored cookie
    cookies consent gdpr popup modal pagination pager caption captions credit credits
    outbrain taboola trending popular masthead toolbar byline dateline author tags tagged taglinks
    catlinks categories meta postmeta entrymeta footer header copyright login signin
    """.split()
)
# Multi-word class names that are furniture as a whole (word matching would be too broad for their parts).
JUNK_NAMES = frozenset(
    """
    screen-reader-text sr-only visually-hidden visuallyhidden post-navigation nav-links nav-previous nav-next
    jp-relatedposts yarpp-related more-stories read-more readmore read-next most-read most-popular author-box
    author-bio about-author entry-footer entry-meta post-meta cat-links tags-links tag-links post-tags
    comment-respond comments-area share-buttons social-share social-links cookie-banner cookie-notice
    wp-block-latest-posts wp-block-categories wp-block-tag-cloud tag-cloud site-header site-footer
    """.split()
)
# Class/id weights for the density scorer (readability's lists).
POSITIVE_RE = re.compile(r"article|body|content|entry|hentry|h-entry|main|page|post|text|blog|story", re.I)
NEGATIVE_RE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|foot|footer|footnote|gdpr|masthead"
    r"|media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|shopping|tags|tool"
    r"|widget",
    re.I,
)
COMMENT_RE = re.compile(r"comment|respond|disqus|discussion|replies", re.I)
HIDDEN_STYLE_RE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
WORD_SPLIT_RE = re.compile(r"[-_\s]+|(?<=[a-z])(?=[A-Z])")

# Semantic main-content containers, most specific first.
SEMANTIC_SELECTORS = (
    "[itemprop=articleBody]",
    ".entry-content",
    ".post-content",
    ".article-body",
    ".article-content",
    ".story-body",
    ".post-body",
    "article",
    "main",
    "[role=main]",
    "#content",
)
# Elements whose presence inside a junk-looking wrapper means the wrapper holds the page, not furniture.
MARKER_SELECTORS = ("h1", "main", "[role=main]", "[itemprop=articleBody]", ".entry-content")


# ---------------------------------------------------------------------------------------- furniture names

def _names(el: Tag) -> str:
    return f"{_attr(el, 'class')} {_attr(el, 'id')}".strip()


def _is_junk_name(el: Tag) -> bool:
    """True when a class or id names page furniture (nav, sidebar, share bar, comments, ...)."""
    for name in _names(el).split():
        low = name.lower()
        if low in JUNK_NAMES:
            return True
        for word in WORD_SPLIT_RE.split(name):
            if word.lower() in JUNK_WORDS:
                return True
    return False


def _is_comments(el: Tag) -> bool:
    return bool(COMMENT_RE.search(_names(el)))


def _is_hidden(el: Tag) -> bool:
    if el.has_attr("hidden") or _attr(el, "aria-hidden").lower() == "true":
        return True
    style = _attr(el, "style")
    return bool(style and HIDDEN_STYLE_RE.search(style))


def _class_weight(el: Tag) -> int:
    weight = 0
    for value in (_attr(el, "class"), _attr(el, "id")):
        if not value:
            continue
        if NEGATIVE_RE.search(value):
            weight -= 25
        if POSITIVE_RE.search(value):
            weight += 25
    return weight


# --------------------------------------------------------------------------------------------- measures

@dataclass
class _Measure:
    """Per-element text statistics, computed bottom-up in one pass so scoring stays linear."""

    text: dict[int, int] = field(default_factory=dict)  # visible characters
    links: dict[int, int] = field(default_factory=dict)  # characters inside <a>
    prose: dict[int, int] = field(default_factory=dict)  # characters in link-poor paragraphs
    inline: dict[int, int] = field(default_factory=dict)  # characters not inside a nested block
    inline_links: dict[int, int] = field(default_factory=dict)

    def density(self, el: Tag) -> float:
        t = self.text.get(id(el), 0)
        return self.links.get(id(el), 0) / t if t else 0.0


def _measure(root: Tag) -> _Measure:
    m = _Measure()
    tags = [root] + [n for n in root.descendants if isinstance(n, Tag)]
    for el in reversed(tags):
        text = links = prose = inline = inline_links = 0
        is_link = el.name == "a"
        for child in el.children:
            if isinstance(child, Tag):
                cid = id(child)
                text += m.text.get(cid, 0)
                links += m.links.get(cid, 0)
                prose += m.prose.get(cid, 0)
                if child.name not in BLOCK_TAGS:
                    inline += m.inline.get(cid, 0)
                    inline_links += m.inline_links.get(cid, 0)
            elif _is_text(child):
                n = len(child.strip())
                if n:
                    n = len(_clean(child))
                    text += n
                    inline += n
                    if is_link:
                        links += n
                        inline_links += n
        if is_link:
            links, inline_links = text, inline
        if el.name in BLOCK_TAGS or el is root:
            if inline and inline_links / inline < 0.5:
                prose += inline - inline_links
        key = id(el)
        m.text[key], m.links[key], m.prose[key] = text, links, prose
        m.inline[key], m.inline_links[key] = inline, inline_links
    return m


# ---------------------------------------------------------------------------------------------- cleanup

def _mark_ancestors(elements: Iterable[Tag]) -> set[int]:
    marked: set[int] = set()
    for el in elements:
        node: Tag | None = el
        while node is not None and id(node) not in marked:
            marked.add(id(node))
            node = node.parent
    return marked


def _select_all(root: Tag, selectors: Iterable[str]) -> list[Tag]:
    found: list[Tag] = []
    for sel in selectors:
        try:
            found.extend(root.select(sel))
        except (ValueError, RecursionError, NotImplementedError):  # pragma: no cover - soupsieve limits
            continue
    return found


def _remove_junk(soup: BeautifulSoup, *, by_name: bool = True) -> None:
    """Drop page furniture everywhere, sparing wrappers that hold the main-content markers."""
    for el in soup.find_all(DROP_TAGS):
        if el.parent is not None:
            el.decompose()
    if not by_name:
        return
    protected = _mark_ancestors(_select_all(soup, MARKER_SELECTORS))
    m = _measure(soup)
    total = m.prose.get(id(soup), 0)
    doomed: list[Tag] = []
    for el in soup.find_all(True):
        if el.name in ("html", "body") or id(el) in protected:
            continue
        if el.name in FURNITURE_TAGS or _is_hidden(el) or _is_junk_name(el):
            # Most of the page's prose is the article, whatever its wrapper is called; comment
            # threads are the exception, as they can outgrow a short post.
            if total and m.prose.get(id(el), 0) >= 0.5 * total and not _is_comments(el):
                continue
            doomed.append(el)
    removed: set[int] = set()
    for el in doomed:
        if _any_ancestor_in(el, removed):
            continue
        removed.add(id(el))
        el.extract()


def _any_ancestor_in(el: Tag, ids: set[int]) -> bool:
    node = el.parent
    while node is not None:
        if id(node) in ids:
            return True
        node = node.parent
    return False


# ----------------------------------------------------------------------------------- content selection

def _density_choice(body: Tag, m: _Measure) -> list[Tag]:
    """Readability's choice: paragraphs vote for their parent and grandparent; best container + siblings."""
    scores: dict[int, float] = {}
    nodes: dict[int, Tag] = {}
    for el in [body] + body.find_all(True):
        inline = m.inline.get(id(el), 0)
        if el.name not in BLOCK_TAGS or inline < MIN_PARAGRAPH:
            continue
        if m.inline_links.get(id(el), 0) / inline >= 0.5:
            continue
        text = _inline_text(el)
        score = 1 + text.count(",") + min(len(text) / 100, 3)
        has_blocks = any(isinstance(c, Tag) and c.name in BLOCK_TAGS for c in el.children)
        # A leaf paragraph votes for its parent; a container with loose text votes for itself too.
        ancestors: list[Tag] = [el] if has_blocks else []
        node = el.parent
        while node is not None and len(ancestors) < 3 and node.name != "[document]":
            ancestors.append(node)
            node = node.parent
        for level, anc in enumerate(ancestors):
            key = id(anc)
            if key not in scores:
                scores[key] = _initial_score(anc)
                nodes[key] = anc
            scores[key] += score / (1 if level == 0 else 2 if level == 1 else level * 3)
    if not scores:
        return []
    best_key = max(scores, key=lambda k: scores[k] * (1 - m.density(nodes[k])))
    top = nodes[best_key]
    top_score = scores[best_key] * (1 - m.density(top))
    parent = top.parent
    if parent is None or top is body:
        return [top]
    threshold = max(10.0, top_score * 0.2)
    chosen: list[Tag] = []
    for sib in parent.children:
        if not isinstance(sib, Tag):
            continue
        if sib is top:
            chosen.append(sib)
            continue
        key = id(sib)
        bonus = top_score * 0.2 if _attr(sib, "class") and _attr(sib, "class") == _attr(top, "class") else 0
        if key in scores and scores[key] * (1 - m.density(sib)) + bonus >= threshold:
            chosen.append(sib)
        elif sib.name == "p":
            n = m.text.get(key, 0)
            d = m.density(sib)
            text = _text(sib)
            if (n > 80 and d < 0.25) or (0 < n <= 80 and d == 0 and re.search(r"\.( |$)", text)):
                chosen.append(sib)
    return chosen


def _initial_score(el: Tag) -> float:
    base = {"div": 5, "article": 5, "section": 3, "main": 5, "pre": 3, "td": 3, "blockquote": 3}.get(el.name, 0)
    if el.name in ("address", "ol", "ul", "dl", "dd", "dt", "li", "form"):
        base = -3
    elif el.name in HEADINGS or el.name == "th":
        base = -5
    return base + _class_weight(el)


def _inline_text(el: Tag) -> str:
    parts: list[str] = []
    for child in el.children:
        if isinstance(child, Tag):
            if child.name not in BLOCK_TAGS:
                parts.append(_text(child))
        elif _is_text(child):
            parts.append(str(child))
    return _clean(" ".join(parts))


def _semantic_choice(body: Tag, m: _Measure) -> tuple[str, Tag] | None:
    for sel in SEMANTIC_SELECTORS:
        matches = _select_all(body, [sel])
        if not matches:
            continue
        best = max(matches, key=lambda el: m.prose.get(id(el), 0))
        if m.prose.get(id(best), 0) > 0:
            return sel, best
    return None


def _choose_content(body: Tag, m: _Measure) -> list[Tag]:
    density = _density_choice(body, m)
    density_prose = sum(m.prose.get(id(el), 0) for el in density)
    semantic = _semantic_choice(body, m)
    if semantic is not None:
        sel, el = semantic
        prose = m.prose.get(id(el), 0)
        if prose >= 0.6 * density_prose:
            log.debug("main content: %s (%d chars of prose, density choice %d)", sel, prose, density_prose)
            return [el]
    if density:
        return density
    return [body]


# ------------------------------------------------------------------------------------------- pruning

def _prune(roots: list[Tag], *, by_name: bool = True) -> None:
    """Remove furniture and link lists inside the chosen container, bottom-up with live measures."""
    for root in roots:
        m = _measure(root)
        total_prose = m.prose.get(id(root), 0)
        elements = root.find_all(True)
        for el in reversed(elements):
            if el.parent is None or el.name in HEADINGS or el.name in ("a", "br"):
                continue
            key = id(el)
            text = m.text.get(key, 0)
            if text == 0:
                continue
            prose = m.prose.get(key, 0)
            big = total_prose and prose >= 0.5 * total_prose
            remove = False
            if not big and ((by_name and _is_junk_name(el)) or el.name in FURNITURE_TAGS or _is_hidden(el)):
                remove = True
            elif el.name in ("div", "section", "ul", "ol", "table", "dl", "figure", "span", "center"):
                density = m.links.get(key, 0) / text
                weight = _class_weight(el)
                if not big and (density > 0.5 or (weight < 0 and density > 0.25)):
                    remove = True
            if remove:
                _subtract(el, root, m)
                el.extract()


def _subtract(el: Tag, root: Tag, m: _Measure) -> None:
    key = id(el)
    text, links, prose = m.text.get(key, 0), m.links.get(key, 0), m.prose.get(key, 0)
    if not (text or links or prose):
        return
    node = el.parent
    while node is not None:
        k = id(node)
        m.text[k] = m.text.get(k, 0) - text
        m.links[k] = m.links.get(k, 0) - links
        m.prose[k] = m.prose.get(k, 0) - prose
        if node is root:
            break
        node = node.parent
