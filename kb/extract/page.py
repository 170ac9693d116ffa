"""One page to one Article: the parsed document, its main content, title, sections, anchors and markup. Pure.

This is `extract`, the extractor's entry point: it reads the metadata (kb.extract.metadata), chooses and
prunes the content (kb.extract.content), serialises it (kb.extract.blocks), splits it into sections under
their headings with stable anchors, and gives each section its safe markup (kb.extract.markup).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from urllib.parse import urljoin, urlsplit

from bs4 import Tag

from kb.disclaimer import has_disclaimer
from kb.errors import SkipPage
from kb.extract.blocks import _Block, _blocks, _fragment, _keep_block
from kb.extract.charset import decode_html
from kb.extract.content import _choose_content, _measure, _prune, _remove_junk
from kb.extract.markup import section_markup
from kb.extract.metadata import (
    ARTICLE_TYPES,
    _first,
    _json_ld,
    _ld_names,
    _ld_strings,
    _ld_types,
    _looks_like_url,
    _meta_map,
    _split_title,
    normalise_date,
)
from kb.extract.tree import _attr, _clean, _parse, _text
from kb.models import Article, Section
from kb.text import slugify

log = logging.getLogger(__name__)

__all__ = ["HTML_TYPES", "extract"]

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml", "")
SECTION_LEVELS = 4  # h1–h4 start sections; h5/h6 stay paragraphs


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
