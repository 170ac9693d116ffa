"""Small dataclasses passed between pipeline stages, so each stage can be tested alone."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

AUDIENCES = ("public", "staff")


@dataclass
class Page:
    """One HTTP response as fetched; the raw material extraction works on."""

    url: str  # final URL after redirects
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    requested_url: str = ""
    fetched_at: str = ""  # ISO 8601 UTC
    redirects: list[str] = field(default_factory=list)
    not_modified: bool = False  # a 304 answer to a conditional GET

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Section:
    """A heading and the text under it; the anchor makes `url#anchor` deep links.

    `text` is what is indexed and searched; `html` is the same body as allow-listed markup (lists,
    sub-headings, emphasis, quotes, tables, safe links; see kb.extract.markup) for the article page, "" when unknown.
    """

    heading: str
    anchor: str
    text: str
    level: int = 2
    html: str = ""


@dataclass
class Article:
    """The extracted, storable record of one page or document."""

    url: str
    title: str
    text: str
    sections: list[Section] = field(default_factory=list)
    canonical: str = ""
    description: str = ""
    author: str = ""
    published: str | None = None  # ISO 8601 date or datetime
    modified: str | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    site: str = ""  # host name the article came from
    audience: str = "public"
    lang: str = ""
    kind: str = "article"  # "article", "faq" or "document"
    disclaimer: bool = False  # the page carries a medical disclaimer (often stripped as boilerplate)
    id: int | None = None  # assigned by the store
    # Every copy of a near-duplicate group ({"url", "site", "title"}, primary first; empty when not merged).
    # Filled on read for the indexer and the article page; not content, so not part of content_hash.
    sources: list[dict[str, str]] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """Hash of everything indexed, so unchanged content causes no writes (section markup is not indexed)."""
        h = hashlib.sha256()
        for part in (
            self.title, self.text, self.canonical, self.description, self.author,
            self.published or "", self.modified or "", "\x1f".join(self.categories),
            "\x1f".join(self.tags), self.audience, self.kind,
            "\x1f".join(f"{s.heading}\x1e{s.anchor}\x1e{s.level}\x1e{s.text}" for s in self.sections),
        ):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        if self.disclaimer:  # only when set, so hashes stored before the flag existed still match
            h.update(b"disclaimer\x00")
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Article":
        data = dict(data)
        data["sections"] = [Section(**s) for s in data.get("sections") or []]
        return cls(**data)


@dataclass
class Hit:
    """One search result: an article, with the best-matching section for a deep link."""

    id: int
    url: str
    title: str
    snippet_html: str  # escaped text plus <mark> tags: the only trusted HTML
    score: float
    site: str = ""
    published: str | None = None
    tags: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    anchor: str = ""  # section anchor, "" for the top of the article
    section: str = ""  # heading of that section
    audience: str = "public"
    kind: str = "article"
    sources: list[dict[str, str]] = field(default_factory=list)  # every copy of a merged result, primary first

    @property
    def link(self) -> str:
        return f"{self.url}#{self.anchor}" if self.anchor else self.url

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "link": self.link,
            "title": self.title,
            "snippet": self.snippet_html,
            "score": round(self.score, 4),
            "site": self.site,
            "published": self.published,
            "tags": self.tags,
            "categories": self.categories,
            "anchor": self.anchor,
            "section": self.section,
            "audience": self.audience,
            "kind": self.kind,
            "sources": self.sources,
        }


@dataclass
class Results:
    """A page of hits plus what the UI needs around them."""

    query: str
    total: int
    hits: list[Hit] = field(default_factory=list)
    page: int = 1
    per_page: int = 10
    suggestions: list[str] = field(default_factory=list)  # "Did you mean …?" candidates
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    notice: str = ""  # e.g. "Your query could not be parsed; searched for the words instead."
    #: the words actually searched when misspelt words were corrected ("Showing results for …"), else None
    corrected_query: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
            "pages": self.pages,
            "results": [h.to_json() for h in self.hits],
            "suggestions": self.suggestions,
            "corrected_query": self.corrected_query,
            "facets": {k: [{"value": v, "count": c} for v, c in vals] for k, vals in self.facets.items()},
            "notice": self.notice,
        }


@dataclass
class CrawlStats:
    """Counters of one crawl, shown as its summary and kept in the crawl log."""

    fetched: int = 0
    not_modified: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    robots: int = 0  # skipped because robots.txt disallows
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # notes for the operator (e.g. a refused removal)

    @property
    def stored(self) -> int:
        return self.new + self.updated

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"stored": self.stored}
