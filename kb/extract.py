"""Turn one HTML page into Article records: main text, sections with anchors, metadata. Pure: never fetches.

The crawler hands us bytes; everything here is a function of those bytes and the URL, so re-extraction from
the raw cache gives the same records, and every rule can be tested on a saved page.

How the main content is found (after readability and trafilatura):
1. Junk that is never article text is dropped from the whole page: scripts, styles, forms, iframes,
   navigation, sidebars and widgets, comment threads, share bars, cookie banners, hidden elements. An
   element is spared when it holds the page's main-content markers (the <h1>, <main>, `.entry-content`, …),
   because theme class names such as `tag-share` or `has-sidebar` sit on the very wrappers we need.
2. Paragraph-like blocks are scored by length and commas, discounted by link density, and their scores
   flow to their parent and grandparent; the best container plus similar siblings is the density choice.
3. Semantic containers (`.entry-content`, `article`, `main`, `[role=main]`, `#content`, …) win when they
   hold most of the density choice's prose; the density choice is the fallback for div soup.
4. Inside the chosen container, link lists, boilerplate classes and other low-text blocks are pruned, and
   what is left is serialised block by block: headings start Sections, paragraphs are separated by blank lines.
5. Each Section also gets the same blocks as safe markup (lists, sub-headings, emphasis, quotes, tables, links;
   kb.markup's allow-list), rebuilt from the text nodes its plain text was made of, for the article page.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, NavigableString, SoupStrainer, Tag
from bs4.element import PreformattedString, Script, Stylesheet, TemplateString

from kb.errors import SkipPage
from kb.markup import section_markup
from kb.models import Article, Section

log = logging.getLogger(__name__)

__all__ = [
    "extract", "extract_faqs", "meta_robots", "has_disclaimer", "decode_html", "slugify", "normalise_date",
]

# --------------------------------------------------------------------------------------------- constants

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml", "")
MAX_DEPTH = 256  # deeper nesting is flattened to text: browsers cap it too, and it bounds our work
MIN_PARAGRAPH = 25  # characters a block needs before its score counts (readability's threshold)

BLOCK_TAGS = frozenset(
    "address article aside blockquote body center dd details dialog dir div dl dt fieldset figcaption figure "
    "footer form frameset h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu nav ol p pre section summary "
    "table tbody thead tfoot tr td th caption ul legend option optgroup".split()
)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
SECTION_LEVELS = 4  # h1–h4 start sections; h5/h6 stay paragraphs
CELL_TAGS = frozenset({"td", "th"})

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

FEED_FOOTER_RE = re.compile(r"^The post .{1,300} appeared first on .{1,200}$", re.S)
BOILER_LINE_RE = re.compile(
    r"^(advert|advertisement|advertisements|sponsored|sponsored content|story continues below( advertisement)?"
    r"|continue reading( below)?|share this:?|share|like this:?|related|related posts:?|loading\.*"
    r"|skip to (main )?content|click to share.*|tweet|email|print|read more|\(opens in new window\)"
    r"|comments?|\d+ comments?|leave a (comment|reply)|subscribe|sign up|log ?in|caption|close)$",
    re.I,
)
TITLE_SEPARATORS = (" | ", " – ", " — ", " - ", " :: ", " · ", " » ", " • ", " // ")
DISCLAIMER_RE = re.compile(
    r"not (intended (as|to be|to provide)|a substitute for|to be (taken|construed) as|meant as|considered)?"
    r"\s*(professional\s+)?medical advice"
    r"|(for|is for) (general )?(informational|information|educational) purposes only"
    r"|(consult|talk to|speak (to|with)|see|ask|check with) (with )?(your|a|an) "
    r"(own )?(qualified )?(doctor|physician|dermatologist|gp|healthcare|health care|medical)"
    r"|does not (constitute|replace|provide) (professional )?medical advice"
    r"|no doctor[- ]patient relationship",
    re.I,
)
ARTICLE_TYPES = {
    "article", "newsarticle", "blogposting", "webpage", "medicalwebpage", "reportagenewsarticle",
    "analysisnewsarticle", "techarticle", "scholarlyarticle", "medicalscholarlyarticle", "faqpage",
    "qapage", "posting", "socialmediaposting", "liveblogposting", "opinionnewsarticle", "healthtopiccontent",
}


# ------------------------------------------------------------------------------------------- decoding

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]{1,40})""", re.I)
_CT_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([a-zA-Z0-9_.:-]{1,40})", re.I)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name.strip().lower())
    except (LookupError, ValueError):
        return None
    # Pages that claim Latin-1 are almost always Windows-1252 (the HTML standard says to treat them so).
    return "cp1252" if info.name in ("latin-1", "iso8859-1", "ascii") else info.name


def detect_charset(data: bytes, content_type: str = "") -> str:
    """The encoding of a page: BOM, then the HTTP header's charset, then <meta charset>, else UTF-8."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    m = _CT_CHARSET_RE.search(content_type or "")
    encoding = _codec(m.group(1)) if m else None
    if encoding is None:
        m = _META_CHARSET_RE.search(data[:4096])
        encoding = _codec(m.group(1).decode("ascii", "replace")) if m else None
        if encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
            encoding = None  # a <meta> we could read in ASCII cannot be in UTF-16 text
    return encoding or "utf-8"


def decode_html(data: str | bytes, content_type: str = "", *, strict: bool = False) -> str:
    """Bytes to text (bad bytes become U+FFFD); `strict` skips a mostly undecodable page rather than store it garbled."""
    if isinstance(data, str):
        text = data
    else:
        encoding = detect_charset(data, content_type)
        for bom, name in _BOMS:
            if name == encoding and data.startswith(bom):
                data = data[len(bom):]
                break
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            encoding, text = "utf-8", data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if strict and bad > 10 and bad / max(1, len(text)) > 0.02:
            raise SkipPage(f"{bad / len(text):.0%} of the page is not valid {encoding} text; skipped rather than "
                           "storing garbled text", kind="bad_encoding")
    return _CONTROL_RE.sub("", text.replace("\x00", "").removeprefix("\ufeff"))


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


def slugify(text: str) -> str:
    """A URL-fragment-safe slug: lower case, accents dropped, words joined by '-'."""
    value = unicodedata.normalize("NFKD", text)
    value = "".join(c for c in value if not unicodedata.combining(c)).lower()
    value = re.sub(r"[^\w\s-]", "", value)
    value = re.sub(r"[\s_-]+", "-", value).strip("-")
    return value[:80].strip("-") or "section"


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


# ------------------------------------------------------------------------------------------- metadata

def _json_ld(soup: BeautifulSoup) -> list[dict]:
    """All schema.org objects from JSON-LD blocks, @graph flattened; broken JSON is skipped."""
    found: list[dict] = []
    for script in soup.find_all("script", attrs={"type": re.compile(r"ld\+json", re.I)}):
        raw = script.string or script.get_text() or ""
        raw = raw.strip().removeprefix("<!--").removesuffix("-->").strip()
        if not raw:
            continue
        try:
            data = json.loads(raw, strict=False)
        except (ValueError, RecursionError):
            continue
        stack = [data]
        while stack and len(found) < 200:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                found.append(item)
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(reversed(graph))
    return found


def _ld_types(obj: dict) -> set[str]:
    t = obj.get("@type", "")
    values = t if isinstance(t, list) else [t]
    return {str(v).rsplit("/", 1)[-1].lower() for v in values if v}


def _ld_names(value: object) -> list[str]:
    """Names from a JSON-LD person/organisation/string or a list of them."""
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("name") or ""
        if isinstance(item, str) and item.strip() and not _looks_like_url(item):
            names.append(_clean(item))
    return names


def _ld_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [_clean(v) for v in value if isinstance(v, str) and v.strip()]
    return []


def _looks_like_url(value: str) -> bool:
    return bool(re.match(r"^(https?:)?//|^www\.", value.strip(), re.I))


def _meta_map(soup: BeautifulSoup) -> dict[str, list[str]]:
    metas: dict[str, list[str]] = {}
    for meta in soup.find_all("meta"):
        key = (_attr(meta, "property") or _attr(meta, "name") or _attr(meta, "itemprop")).strip().lower()
        content = _attr(meta, "content").strip()
        if key and content:
            metas.setdefault(key, []).append(content)
    return metas


def _first(metas: dict[str, list[str]], *keys: str) -> str:
    for key in keys:
        for value in metas.get(key, []):
            if value.strip():
                return _clean(value)
    return ""


_DATE_RE = re.compile(
    r"^\s*(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{1,2}):?(\d{2})(?::?(\d{2})(?:[.,]\d+)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_TEXT_DATE_FORMATS = (
    "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%b. %d, %Y", "%Y/%m/%d",
    "%d/%m/%Y", "%d.%m.%Y",
)


def normalise_date(value: str | None) -> str | None:
    """ISO 8601 from the date spellings pages use; None when it is not a date we can trust."""
    if not value or not isinstance(value, str):
        return None
    s = value.strip()[:100]
    m = _DATE_RE.match(s)
    if m:
        year, month, day, hour, minute, second, tz = m.groups()
        try:
            if hour is None:
                return datetime(int(year), int(month), int(day)).date().isoformat()
            dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
        except ValueError:
            return None
        if tz:
            if tz in ("Z", "z"):
                dt = dt.replace(tzinfo=timezone.utc)
            else:
                try:
                    dt = datetime.fromisoformat(dt.isoformat() + _tz_colon(tz))
                except ValueError:
                    pass
        return dt.isoformat()
    try:
        dt = parsedate_to_datetime(s)
        return dt.isoformat()
    except (TypeError, ValueError, IndexError):
        pass
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", s)
    cleaned = re.sub(r"^(on|posted on|published|updated)\s+", "", cleaned, flags=re.I).strip(" .")
    for fmt in _TEXT_DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _tz_colon(tz: str) -> str:
    tz = tz.replace(":", "")
    return f"{tz[:3]}:{tz[3:5] or '00'}"


def _split_title(title: str, site_names: Iterable[str], host: str) -> str:
    """Drop a ' – Site name' suffix (or 'Site name | ' prefix) from a <title>."""
    title = _clean(title)
    names = {n.lower() for n in site_names if n}
    host_key = re.sub(r"^www\.", "", host.lower()).split(".")[0]
    for sep in TITLE_SEPARATORS:
        if sep not in title:
            continue
        parts = [p.strip() for p in title.split(sep)]
        head, tail = sep.join(parts[:-1]).strip(), parts[-1]
        first, rest = parts[0], sep.join(parts[1:]).strip()

        def is_site(part: str) -> bool:
            low = part.lower()
            squashed = re.sub(r"[^a-z0-9]", "", low)
            return low in names or (bool(host_key) and squashed == re.sub(r"[^a-z0-9]", "", host_key)) or (
                bool(host_key) and host_key in squashed and len(part.split()) <= 4
            )

        if head and is_site(tail):
            return head
        if rest and is_site(first):
            return rest
        if head and len(tail.split()) <= 4 and len(head) >= len(tail):
            return head
    return title


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


# ---------------------------------------------------------------------------------------- the document

class _Page:
    """One parsed page: metadata read before cleanup, then the cleaned tree for content selection."""

    def __init__(self, html: str | bytes, url: str, content_type: str = "") -> None:
        self.url = url
        self.text = decode_html(html, content_type)
        self.soup = _parse(self.text)
        self.ld = _json_ld(self.soup)
        self.metas = _meta_map(self.soup)
        self.host = (urlsplit(url).hostname or "").lower()
        self.ids = {_attr(el, "id") for el in self.soup.find_all(id=True)}
        html_el = self.soup.find("html")
        self.lang = _attr(html_el, "lang").strip() if isinstance(html_el, Tag) else ""
        self.raw_title = self._raw_title()
        self.canonical = self._canonical()
        self.description = _first(self.metas, "description", "og:description", "twitter:description")
        self.site_name = _first(self.metas, "og:site_name", "application-name")

    # -- metadata read from the untouched tree ---------------------------------------------------
    def _raw_title(self) -> str:
        title = self.soup.find("title")
        if not isinstance(title, Tag):
            return ""
        # <title> is raw text in HTML: markup inside it is text to keep, not elements to drop.
        return _clean("".join(str(c) if not isinstance(c, Tag) else c.decode() for c in title.contents))

    def _canonical(self) -> str:
        for link in self.soup.find_all("link", href=True):
            rel = [r.lower() for r in (link.get("rel") or [])] if isinstance(link.get("rel"), list) else [
                _attr(link, "rel").lower()
            ]
            if "canonical" in rel:
                href = _attr(link, "href").strip()
                if href:
                    return urljoin(self.url, href)
        og = _first(self.metas, "og:url")
        return urljoin(self.url, og) if og else self.url

    def ld_objects(self, types: set[str] | None = None) -> list[dict]:
        types = types or ARTICLE_TYPES
        return [obj for obj in self.ld if _ld_types(obj) & types]

    def published(self) -> str | None:
        candidates = [
            *self.metas.get("article:published_time", []), *self.metas.get("datepublished", []),
            *[o.get("datePublished") for o in self.ld_objects()],
            *self.metas.get("og:published_time", []), *self.metas.get("date", []),
            *self.metas.get("dc.date", []), *self.metas.get("dc.date.issued", []),
            *self.metas.get("pubdate", []), *self.metas.get("publish-date", []),
            *self.metas.get("sailthru.date", []), *self.metas.get("parsely-pub-date", []),
        ]
        for value in candidates:
            date = normalise_date(value if isinstance(value, str) else None)
            if date:
                return date
        return self._time_element(("published", "entry-date", "post-date", "date"), skip=("updated",))

    def modified(self) -> str | None:
        candidates = [
            *self.metas.get("article:modified_time", []), *self.metas.get("datemodified", []),
            *[o.get("dateModified") for o in self.ld_objects()],
            *self.metas.get("og:updated_time", []), *self.metas.get("last-modified", []),
        ]
        for value in candidates:
            date = normalise_date(value if isinstance(value, str) else None)
            if date:
                return date
        return self._time_element(("updated", "modified"), require=True)

    def _time_element(self, prefer: tuple[str, ...], skip: tuple[str, ...] = (), require: bool = False) -> str | None:
        times = [t for t in self.soup.find_all("time") if _attr(t, "datetime") or _text(t)]
        for t in times:
            cls = _attr(t, "class").lower() + " " + _attr(t, "itemprop").lower()
            if any(p in cls for p in prefer) and not any(s in cls for s in skip):
                date = normalise_date(_attr(t, "datetime") or _text(t))
                if date:
                    return date
        if require:
            return None
        for t in times:
            cls = _attr(t, "class").lower()
            if any(s in cls for s in skip):
                continue
            date = normalise_date(_attr(t, "datetime") or _text(t))
            if date:
                return date
        return None

    def author(self) -> str:
        meta = _first(self.metas, "author", "article:author", "dc.creator", "parsely-author", "sailthru.author")
        if meta and not _looks_like_url(meta):
            return _strip_by(meta)
        for obj in self.ld_objects():
            names = _ld_names(obj.get("author"))
            if names:
                return ", ".join(dict.fromkeys(names))
        for el in self.soup.find_all(True, class_=re.compile(r"^(author|byline|author-name|entry-author|fn)$")):
            if el.find_parent(class_=re.compile(r"comment")):
                continue
            name = _strip_by(_text(el))
            if 0 < len(name) <= 80:
                return name
        for a in self.soup.find_all("a", rel=True):
            rel = a.get("rel")
            if "author" in (rel if isinstance(rel, list) else [rel]):
                name = _text(a)
                if 0 < len(name) <= 80:
                    return name
        return ""

    def taxonomy(self) -> tuple[list[str], list[str]]:
        categories: list[str] = []
        tags: list[str] = []
        for a in self.soup.find_all("a", rel=True):
            rel = [r.lower() for r in (a.get("rel") if isinstance(a.get("rel"), list) else [a.get("rel")])]
            if a.find_parent(class_=re.compile(r"widget|sidebar|tag-?cloud")) is not None:
                continue
            name = _text(a)
            if not name:
                continue
            if "category" in rel:
                categories.append(name)
            elif "tag" in rel:
                tags.append(name)
        for box_class, target in ((r"cat-links|post-categories|entry-categories", categories),
                                  (r"tags?-links|post-tags|entry-tags", tags)):
            for box in self.soup.find_all(class_=re.compile(rf"(^|\s)({box_class})(\s|$)")):
                target.extend(_text(a) for a in box.find_all("a"))
        tags.extend(_clean(t) for t in self.metas.get("article:tag", []))
        categories.extend(_clean(t) for t in self.metas.get("article:section", []))
        for obj in self.ld_objects():
            tags.extend(_ld_strings(obj.get("keywords")))
            categories.extend(_ld_strings(obj.get("articleSection")))
        return _dedupe(categories), _dedupe(tags)

    def ld_article_body(self) -> str:
        for obj in self.ld_objects():
            value = obj.get("articleBody") or ""
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ""

    def ld_headline(self) -> str:
        for obj in self.ld_objects():
            value = obj.get("headline") or ""
            if isinstance(value, str) and value.strip():
                return _clean(value)
        return ""


def _strip_by(name: str) -> str:
    return _clean(re.sub(r"^\s*(by|posted by|written by|author:)\s+", "", name, flags=re.I))


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        v = _clean(v)
        if v and v.lower() not in seen and len(v) <= 100 and not v.startswith("@"):  # "@post-id:…" machine tags
            seen.add(v.lower())
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------- public

def _main_content(page: _Page, *, by_name: bool = True) -> tuple[list[_Block], str, list[Tag]]:
    """Clean the tree, choose and prune the container; its blocks, the in-content <h1>, and the containers.

    With by_name=False furniture is recognised by tag only: the second try for pages whose content
    sits in wrappers named like furniture (a team page of `doctor-author` boxes).
    """
    soup = page.soup if by_name else _parse(page.text)
    _remove_junk(soup, by_name=by_name)
    body = soup.body if isinstance(soup.body, Tag) else soup.find("html") or soup
    if not isinstance(body, Tag):
        return [], "", []
    m = _measure(body)
    roots = _choose_content(body, m)
    h1 = ""
    for root in roots:
        found = root.find("h1") if root.name != "h1" else root
        if isinstance(found, Tag):
            h1 = _text(found)
            break
    if not h1:
        found = body.find("h1")
        h1 = _text(found) if isinstance(found, Tag) else ""
    _prune(roots, by_name=by_name)
    blocks = _drop_empty_headings([b for b in _blocks(roots) if _keep_block(b)])
    return blocks, h1, roots


def _drop_empty_headings(blocks: list[_Block]) -> list[_Block]:
    """A heading with nothing under it (its list of links was pruned) is furniture, e.g. "More stories"."""
    kept: list[_Block] = []
    for i, block in enumerate(blocks):
        if block.level:
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            if nxt is None or (nxt.level and nxt.level <= block.level):
                continue
        kept.append(block)
    return kept


def _title(page: _Page, h1: str) -> str:
    og = _first(page.metas, "og:title", "twitter:title")
    names = [page.site_name]
    if og:
        return _split_title(og, names, page.host) if page.site_name and page.site_name in og else og
    if h1:
        return h1
    headline = page.ld_headline()
    if headline:
        return headline
    return _split_title(page.raw_title, names, page.host)


def _title_from_url(url: str) -> str:
    """Last path segment as words ("/acne-scars.html" -> "Acne scars"), when a page names itself nowhere."""
    segment = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    segment = re.sub(r"\.[a-z0-9]{1,5}$", "", segment, flags=re.I)
    words = re.sub(r"[-_+]+|%20", " ", segment).strip()
    if not words or words.isdigit():
        return ""
    return words[:1].upper() + words[1:]


def _same(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return re.sub(r"\W+", " ", s).strip().lower()
    return bool(a) and norm(a) == norm(b)


def _sections(blocks: list[_Block], title: str, used: set[str]) -> tuple[str, list[Section]]:
    """Article text and its sections; the title heading itself is neither."""
    paragraphs: list[str] = []
    sections: list[Section] = []
    current = Section(heading="", anchor="", text="", level=0)
    body: list[str] = []

    def close() -> None:
        if current.heading or body:
            current.text = "\n\n".join(body)
            sections.append(current)

    for i, block in enumerate(blocks):
        if block.level and block.level <= SECTION_LEVELS:
            if block.level == 1 and (_same(block.text, title) or (not paragraphs and i == 0)):
                continue  # the page title, shown apart from the text
            close()
            current = Section(heading=block.text, anchor=_anchor(block.el, block.text, used), text="",
                              level=block.level)
            body = []
            paragraphs.append(block.text)
            continue
        paragraphs.append(block.text)
        body.append(block.text)
        block.section = len(sections)  # the index `current` gets when closed
    close()
    return "\n\n".join(paragraphs), sections


def _fill_markup(sections: list[Section], blocks: list[_Block], roots: list[Tag], url: str) -> None:
    """Give each section the safe markup of exactly the blocks its plain text was made of."""
    owner = {node: block.section for block in blocks if block.section >= 0 for node in block.nodes}
    markup = section_markup(roots, lambda node: owner.get(id(node)), len(sections), base_url=url)
    for section, value in zip(sections, markup):
        section.html = value


def _anchor(el: Tag | None, heading: str, used: set[str]) -> str:
    """The heading's own id (or an enclosed/preceding <a id|name>), else a slug unique on the page."""
    if el is not None:
        for candidate in _anchor_candidates(el):
            if candidate:
                used.add(candidate)
                return candidate
    base = slugify(heading)
    slug, n = base, 2
    while slug in used:
        slug = f"{base}-{n}"
        n += 1
    used.add(slug)
    return slug


def _anchor_candidates(el: Tag) -> Iterator[str]:
    yield _attr(el, "id").strip()
    for inner in el.find_all(True):
        if inner.name == "a":
            yield (_attr(inner, "id") or _attr(inner, "name")).strip()
        elif inner.name == "span" and inner.has_attr("id"):
            yield _attr(inner, "id").strip()
    prev = el.previous_sibling
    while prev is not None and not isinstance(prev, Tag) and not str(prev).strip():
        prev = prev.previous_sibling
    if isinstance(prev, Tag) and prev.name == "a" and not _text(prev):
        yield (_attr(prev, "id") or _attr(prev, "name")).strip()


def extract(html: str | bytes, url: str, *, content_type: str = "text/html") -> Article:
    """Extract the article of one page; raises SkipPage(kind="empty") when it has no main text."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/plain":
        return _plain_article(decode_html(html, content_type), url)
    if ctype not in HTML_TYPES and not ctype.endswith("+xml"):
        raise SkipPage(f"cannot extract text from {ctype} at {url}", kind="type")
    page = _Page(html, url, content_type)
    sample = page.text[:8192]
    if sample and sample.count("\ufffd") > 0.2 * len(sample):
        raise SkipPage(f"no main text found at {url}: the content is not text", kind="empty")
    published, modified = page.published(), page.modified()
    author = page.author()
    categories, tags = page.taxonomy()
    page_text = _text(page.soup)  # before _main_content prunes the tree: a disclaimer often sits in the footer
    blocks, h1, roots = _main_content(page)
    if all(b.level for b in blocks):  # no paragraph at all: the content may sit in furniture-named wrappers
        blocks, h1, roots = _main_content(page, by_name=False)
    ld_body = page.ld_article_body()
    if ld_body and len(ld_body) > max(200, 2 * sum(len(b.text) for b in blocks)):
        # Script-rendered pages often ship the article only as JSON-LD articleBody.
        log.debug("main content: JSON-LD articleBody (%d chars)", len(ld_body))
        blocks, roots = _fragment(ld_body)
        blocks = [b for b in blocks if _keep_block(b)]
    title = _title(page, h1)
    if not title:
        title = next((b.text for b in blocks if b.level), "") or _title_from_url(url) or page.host
    text, sections = _sections(blocks, title if not h1 else h1, set(page.ids))
    if not text.strip():
        raise SkipPage(f"no main text found at {url}", kind="empty")
    _fill_markup(sections, blocks, roots, url)
    return Article(
        url=url, title=title, text=text, sections=sections, canonical=page.canonical,
        description=page.description, author=author, published=published, modified=modified,
        categories=categories, tags=tags, site=page.host, lang=page.lang,
        disclaimer=has_disclaimer(text) or has_disclaimer(page_text),
    )


def _plain_article(text: str, url: str) -> Article:
    paragraphs = [_clean(p) for p in re.split(r"\n\s*\n", text) if _clean(p)]
    if not paragraphs:
        raise SkipPage(f"no main text found at {url}", kind="empty")
    site = (urlsplit(url).hostname or "").lower()
    body = "\n\n".join(paragraphs)
    return Article(url=url, title=paragraphs[0][:200], text=body, canonical=url, site=site,
                   sections=[Section(heading="", anchor="", text=body, level=0)], disclaimer=has_disclaimer(body))


# ------------------------------------------------------------------------------------------------- FAQs

def extract_faqs(html: str | bytes, url: str) -> list[Article]:
    """Question/answer pairs (FAQPage JSON-LD, <details> accordions, question headings) as kind="faq"."""
    page = _Page(html, url)
    site = page.host
    seen: set[str] = set()
    pairs: list[tuple[str, str, str]] = []

    def add(question: str, answer: str, anchor: str) -> None:
        question, answer = _clean(question), answer.strip()
        key = re.sub(r"\W+", " ", question).strip().lower()
        if not question or not answer or key in seen:
            return
        seen.add(key)
        pairs.append((question, answer, anchor))

    faq_objects = page.ld_objects({"faqpage"})
    anchors = _question_anchors(page.soup) if faq_objects else {}
    for obj in faq_objects:
        entities = obj.get("mainEntity") or []
        for q in entities if isinstance(entities, list) else [entities]:
            if not isinstance(q, dict):
                continue
            question = q.get("name") or q.get("text") or ""
            accepted = q.get("acceptedAnswer") or q.get("suggestedAnswer") or {}
            if isinstance(accepted, list):
                accepted = accepted[0] if accepted else {}
            answer = accepted.get("text", "") if isinstance(accepted, dict) else str(accepted)
            if isinstance(question, str) and isinstance(answer, str):
                add(question, _html_to_text(answer), anchors.get(_key(question), ""))
    for details in page.soup.find_all("details"):
        summary = details.find("summary")
        if not isinstance(summary, Tag):
            continue
        question = _text(summary)
        parts = [_text(c) if isinstance(c, Tag) else _clean(str(c)) for c in details.children
                 if c is not summary and (isinstance(c, Tag) or _is_text(c))]
        answer = "\n\n".join(p for p in parts if p)
        anchor = _attr(details, "id") or _attr(summary, "id")
        add(question, answer, anchor or anchors.get(_key(question), ""))
    try:
        article = extract(page.text, url)
    except SkipPage:
        article = None
    if article is not None:
        for section in article.sections:
            if section.heading.rstrip().endswith("?") and section.text:
                add(section.heading, section.text, section.anchor)
    return [
        Article(url=url, title=q, text=a, sections=[Section(heading=q, anchor=anchor, text=a, level=2)],
                canonical=page.canonical, site=site, lang=page.lang, kind="faq")
        for q, a, anchor in pairs
    ]


def _key(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _question_anchors(soup: BeautifulSoup) -> dict[str, str]:
    """Question text -> id of the element showing it, so JSON-LD answers can deep-link."""
    found: dict[str, str] = {}
    for el in soup.find_all(list(HEADINGS) + ["summary", "dt", "button", "div", "span", "p"]):
        text = _text(el)
        if not text.endswith("?") or len(text) > 300:
            continue
        anchor = next((c for c in _anchor_candidates(el) if c), "")
        if not anchor and el.parent is not None and el.parent.name == "details":
            anchor = _attr(el.parent, "id")
        if anchor:
            found.setdefault(_key(text), anchor)
    return found


def _fragment_blocks(fragment: str) -> list[_Block]:
    """Blocks of an HTML or plain-text fragment (JSON-LD answers and article bodies carry either)."""
    return _fragment(fragment)[0]


def _fragment(fragment: str) -> tuple[list[_Block], list[Tag]]:
    """Blocks of a fragment and the parsed element they come from (none for plain text)."""
    if not re.search(r"<[a-zA-Z/]", fragment):
        return [_Block(text=_clean(p)) for p in re.split(r"\n\s*\n|\n", fragment) if _clean(p)], []
    soup = _parse(f"<div>{fragment}</div>")
    found = soup.find("div")
    root = found if isinstance(found, Tag) else soup
    return list(_blocks_of(root)), [root]


def _html_to_text(fragment: str) -> str:
    return "\n\n".join(b.text for b in _fragment_blocks(fragment))


# ------------------------------------------------------------------------------------ page-level signals

def meta_robots(html: str | bytes) -> set[str]:
    """Directives of <meta name="robots"> (e.g. {"noindex", "nofollow"}); "none" means both."""
    text = decode_html(html)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(text, "lxml", parse_only=SoupStrainer("meta"))
    out: set[str] = set()
    for meta in soup.find_all("meta"):
        if _attr(meta, "name").strip().lower() != "robots":
            continue
        for token in re.split(r"[,\s]+", _attr(meta, "content").lower()):
            if token == "none":
                out |= {"noindex", "nofollow"}
            elif token:
                out.add(token)
    return out


def has_disclaimer(text: str) -> bool:
    """True when the text carries a medical disclaimer ("not medical advice", "consult your doctor", ...)."""
    return bool(text) and bool(DISCLAIMER_RE.search(" ".join(text.split())))
