"""Flask pages and JSON API over the search layer; the store backs article pages.

The web layer never touches Whoosh or the network: it parses and validates
request parameters, asks `kb.search.Searcher` (one per process) or the SQLite
`Store` (one per request), and renders autoescaped templates. The only trusted
HTML is the search snippet (`Hit.snippet_html`), marked safe in one macro, and
article section markup (`BodyPart.body_html`), built only by kb.markup.clean().
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.resources
import logging
import os
import queue
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlencode, urlsplit

from flask import (Blueprint, Flask, Response, abort, current_app, g, jsonify, redirect, render_template,
                   request, url_for)
from flask.json.provider import DefaultJSONProvider
import langcodes
from jinja2 import BaseLoader, Environment, TemplateNotFound
from jinja2.loaders import split_template_path
from markupsafe import Markup, escape
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import IntegerConverter, Map

from kb import __version__, auth, config
from kb.config import data_paths
from kb.errors import IndexDamaged, IndexUnavailable
from kb.markup import clean as clean_markup
from kb.models import Article, Results, Section
from kb.store import Store

if TYPE_CHECKING:
    from kb.search import Searcher

log = logging.getLogger(__name__)

FILTERS: tuple[str, ...] = ("category", "tag", "site", "year")
FILTER_LABELS = {"category": "Topic", "tag": "Tag", "site": "Source site", "year": "Year"}
# Staff may narrow results to one audience; a reader who sees one audience never gets this choice.
AUDIENCE_LABELS = {"public": "Public", "staff": "Staff only"}
HOME_TOPICS = 8  # topics listed on the home page; the rest sit behind "More topics"
HOME_MORE_TOPICS = 40
HOME_TAGS = 12  # one row of the most used tags
# Facet names the search layer may use, mapped to the filter parameter they narrow.
FACET_FILTER = {"tag": "tag", "tags": "tag", "category": "category", "categories": "category",
                "site": "site", "sites": "site", "year": "year", "years": "year"}
SORTS: tuple[str, ...] = ("relevance", "date")
MAX_PER_PAGE = 100
MAX_PAGE = 1000  # deep pages cost Whoosh page*per_page scored documents
MAX_QUERY_LENGTH = 500
MAX_FILTER_VALUES = 20
MAX_SUGGEST = 20
MAX_ARTICLE_ID = 2**63 - 1  # SQLite's largest INTEGER: a larger id in a URL is simply no article
MAX_LANG_LENGTH = 64
STATIC_MAX_AGE = timedelta(days=7)  # URLs carry a content hash (?v=), so a week is safe
RESERVED_IDS = frozenset({"main", "q", "q-suggestions", "q-status", "results", "contents", "article-title"})

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'", "object-src 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

INDEX_UNAVAILABLE_MESSAGE = "The search index is not available yet; it may be being built right now."
INDEX_UNAVAILABLE_REMEDY = "Try again in a few minutes. Site maintainers: run `kb reindex` to build the index."
INDEX_DAMAGED_MESSAGE = "The search index cannot be read right now."
INDEX_DAMAGED_REMEDY = ("Try again in a few minutes. Site maintainers: run `kb reindex` to rebuild it from the store "
                        "(`kb check` shows what is damaged).")
ERROR_TEXT: dict[int, tuple[str, str]] = {
    400: ("The request had a parameter we could not use.", "Check the address, or start a new search."),
    404: ("There is no page at this address.", "Check the address for typos, or search from the home page."),
    405: ("This address does not accept that kind of request.",
          "Use a GET request (follow a link or the search form)."),
    500: ("Something went wrong on our side.",
          "Try again in a moment; if it keeps happening, tell the site maintainer."),
}


# -- pieces with no Flask state (tested directly) ---------------------------------------------------------------

class ArticleIdConverter(IntegerConverter):
    """Article ids in URLs: 0 to SQLite's largest INTEGER; a larger number is no article (404), not an overflow."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, max=MAX_ARTICLE_ID)


class BadParam(BadRequest):
    """A request parameter is out of range or malformed; the description says which and how to fix it."""


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # one regex scan: this runs for every link of every result page
_HTTP_URL = re.compile(r"(?i)https?://[^\s/?#\\]+(?:[/?#]|$)")


def http_url(url: str | None) -> str | None:
    """Return `url` if it is safe to put in an href (absolute http or https), else None.

    Crawled URLs are untrusted: `javascript:`, `data:` and anything with control
    characters (which browsers silently strip) must never become a link.
    """
    if not url or not isinstance(url, str):
        return None
    text = url.strip()
    if _CONTROL_CHARS.search(text):
        return None
    if not _HTTP_URL.match(text):
        return None
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return text if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def language_tag(value: str | None) -> str:
    """A crawled language as a valid BCP 47 tag in its standard form (`en_us` -> `en-US`), else "".

    Pages declare anything in `lang`; only a tag the IANA registry knows may reach an attribute or API client.
    """
    if not value or not isinstance(value, str) or len(value) > MAX_LANG_LENGTH:
        return ""
    text = value.strip()
    try:
        return langcodes.standardize_tag(text) if langcodes.tag_is_valid(text) else ""
    except (langcodes.LanguageTagError, ValueError):
        return ""


def public_article(article: Article) -> dict[str, Any]:
    """An article for API clients: crawled `canonical` and `lang` only when safe to use as a link and a tag."""
    data = article.to_dict()
    data["canonical"] = http_url(article.canonical) or ""
    data["lang"] = language_tag(article.lang)
    return data


def host_name(url: str | None) -> str:
    """Host shown next to a result so readers see where it comes from."""
    try:
        return (urlsplit((url or "").strip()).hostname or "") if http_url(url) else ""
    except ValueError:
        return ""


def iso_date(value: str | None) -> str:
    """The YYYY-MM-DD part of an ISO date/datetime, or "" when it is not one (for <time datetime>)."""
    if not value:
        return ""
    try:
        return date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        return ""


def human_date(value: str | None) -> str:
    """A date people read without thinking about formats (`3 March 2024`); odd values pass through."""
    text = iso_date(value)
    if not text:
        return str(value or "")
    d = date.fromisoformat(text)
    return f"{d.day} {d.strftime('%B')} {d.year}"


def page_window(page: int, pages: int, radius: int = 2) -> list[int | None]:
    """Page numbers around `page` plus first and last; None marks a gap (ellipsis)."""
    shown = {1, pages, *range(max(1, page - radius), min(pages, page + radius) + 1)}
    out: list[int | None] = []
    previous = 0
    for n in sorted(shown):
        if n - previous > 1:
            out.append(None)
        out.append(n)
        previous = n
    return out


def paragraphs(text: str) -> list[list[str]]:
    """Split stored plain text into paragraphs (blank-line separated) of lines, for escaped rendering."""
    blocks = re.split(r"\n[ \t]*\n", (text or "").replace("\r\n", "\n").strip())
    out = []
    for block in blocks:
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if lines:
            out.append(lines)
    return out


@dataclass
class BodyPart:
    """Part of a section body: the stored markup, re-run through the allow-list, else escaped paragraphs."""

    paragraphs: list[list[str]] = field(default_factory=list)
    body_html: Markup | None = None  # only ever kb.markup.clean() output


@dataclass
class RenderedSection:
    heading: str
    id: str
    level: int
    parts: list[BodyPart]


@dataclass
class TocEntry:
    section: RenderedSection
    children: list[TocEntry] = field(default_factory=list)


def body_part(section: Section, base_url: str, level: int) -> BodyPart:
    """A section's body shown under a level-`level` heading; markup from the store is sanitised again."""
    if section.html.strip():
        markup = clean_markup(section.html, base_url, heading_level=level)
        if markup:
            return BodyPart(body_html=Markup(markup))
    return BodyPart(paragraphs=paragraphs(section.text))


def contents(sections: list[RenderedSection]) -> list[TocEntry]:
    """The table of contents nested by level: a sub-heading is listed inside its heading's entry."""
    top: list[TocEntry] = []
    stack: list[TocEntry] = []
    for section in sections:
        while stack and stack[-1].section.level >= section.level:
            stack.pop()
        entry = TocEntry(section)
        (stack[-1].children if stack else top).append(entry)
        stack.append(entry)
    return top


def article_sections(article: Article) -> tuple[list[BodyPart], list[RenderedSection]]:
    """Lead and sections of an article with unique ids equal to the anchors where possible.

    Anchors come from the crawled page, so they may repeat, be empty or clash
    with ids of our own page; those get a generated `section-N` id instead.
    """
    if not article.sections:
        return [BodyPart(paragraphs=paragraphs(article.text))], []
    lead: list[BodyPart] = []
    first = article.sections[0]
    cut = -1
    for probe in (first.heading, first.text[:80]):
        if probe and probe.strip():
            cut = article.text.find(probe.strip())
            if cut >= 0:
                break
    if cut > 0:
        lead = [BodyPart(paragraphs=paragraphs(article.text[:cut]))]
    used: set[str] = set()
    out: list[RenderedSection] = []
    seen_h2 = False
    for n, section in enumerate(article.sections, 1):
        anchor = (section.anchor or "").strip()
        if not anchor or anchor in used or anchor in RESERVED_IDS or re.search(r"\s", anchor):
            anchor = f"section-{n}"
            while anchor in used:
                anchor += "-x"
        used.add(anchor)
        if not section.heading.strip():  # headless text joins whatever precedes it
            (out[-1].parts if out else lead).append(body_part(section, article.url, out[-1].level if out else 1))
            continue
        level = 3 if section.level >= 3 and seen_h2 else 2  # a lead's headless text is no <h2>: h1 > h3 skips
        seen_h2 = seen_h2 or level == 2
        out.append(RenderedSection(section.heading.strip(), anchor, level, [body_part(section, article.url, level)]))
    return lead, out


@dataclass
class SearchParams:
    """Validated search parameters; builds URLs that change one thing and keep the rest."""

    q: str = ""
    page: int = 1
    per_page: int = 10
    filters: dict[str, list[str]] = field(default_factory=dict)
    sort: str = "relevance"
    audience: str = ""  # one audience a staff reader narrowed results to; "" is everything they may see

    def pairs(self, *, q: str | None = None, page: int | None = None, filters: dict[str, list[str]] | None = None,
              sort: str | None = None, audience: str | None = None) -> list[tuple[str, str]]:
        q = self.q if q is None else q
        filters = self.filters if filters is None else filters
        sort = self.sort if sort is None else sort
        audience = self.audience if audience is None else audience
        out: list[tuple[str, str]] = [("q", q)] if q else []
        for name in FILTERS:
            out += [(name, v) for v in filters.get(name, [])]
        if audience:
            out.append(("audience", audience))
        if sort != "relevance":
            out.append(("sort", sort))
        if page and page > 1:
            out.append(("page", str(page)))
        return out

    def url(self, **changes: Any) -> str:
        """URL of the HTML search page with `changes` applied; filter or query changes go back to page 1."""
        base = self.__dict__.get("_base")
        if base is None:  # a results page builds ~60 facet and chip links: resolve the route once
            base = self.__dict__["_base"] = url_for("pages.search")
        return base + "?" + urlencode(self.pairs(**changes))

    def page_url(self, page: int) -> str:
        return self.url(page=page)

    def sort_url(self, sort: str) -> str:
        return self.url(sort=sort)

    def query_url(self, q: str) -> str:
        return self.url(q=q)

    def has(self, name: str, value: str) -> bool:
        return value in self.filters.get(name, [])

    def with_filter(self, name: str, value: str) -> str:
        filters = {k: list(v) for k, v in self.filters.items()}
        if value not in filters.setdefault(name, []):
            filters[name].append(value)
        return self.url(filters=filters)

    def without_filter(self, name: str, value: str) -> str:
        filters = {k: [x for x in v if not (k == name and x == value)] for k, v in self.filters.items()}
        return self.url(filters={k: v for k, v in filters.items() if v})

    def toggle_filter(self, name: str, value: str) -> str:
        return self.without_filter(name, value) if self.has(name, value) else self.with_filter(name, value)

    @property
    def narrowed(self) -> bool:
        """Whether any filter (audience included) narrows the results, for "search without filters" links."""
        return bool(self.filters or self.audience)

    def scope(self, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """The audiences to search: the chosen one when the reader may see it, else all they may see."""
        return (self.audience,) if self.audience in allowed else allowed


def _int_arg(args: MultiDict, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadParam(f"Parameter {name} must be a whole number, not {raw[:40]!r}.") from None
    if not minimum <= value <= maximum:
        raise BadParam(f"Parameter {name} must be between {minimum} and {maximum} (got {value}).")
    return value


def parse_search_args(args: MultiDict, *, default_per_page: int = 10, allow_per_page: bool = False) -> SearchParams:
    """Validate query-string parameters of a search; raises BadParam (400) with a fix-it message."""
    q = " ".join((args.get("q") or "").split())
    if len(q) > MAX_QUERY_LENGTH:
        raise BadParam(f"The query is too long ({len(q)} characters); use at most {MAX_QUERY_LENGTH}.")
    page = _int_arg(args, "page", 1, 1, MAX_PAGE)
    per_page = default_per_page
    if allow_per_page:
        per_page = _int_arg(args, "per_page", default_per_page, 1, MAX_PER_PAGE)
    sort = (args.get("sort") or "relevance").strip().lower()
    if sort not in SORTS:
        raise BadParam(f"Parameter sort must be one of {', '.join(SORTS)}.")
    filters: dict[str, list[str]] = {}
    for name in FILTERS:
        values: list[str] = []
        for raw in args.getlist(name):
            value = " ".join(raw.split())
            if not value or value in values:
                continue
            if len(value) > 200:
                raise BadParam(f"Filter {name} value is too long; use at most 200 characters.")
            if name == "year" and not re.fullmatch(r"\d{4}", value):
                raise BadParam(f"Filter year must be a four-digit year, not {value[:40]!r}.")
            values.append(value)
        if len(values) > MAX_FILTER_VALUES:
            raise BadParam(f"Use at most {MAX_FILTER_VALUES} values for filter {name}.")
        if values:
            filters[name] = values
    return SearchParams(q=q, page=page, per_page=per_page, filters=filters, sort=sort)


def audience_choice(args: MultiDict, allowed: tuple[str, ...]) -> str:
    """The one audience a reader who sees several narrowed results to, or "" for all they may see.

    A reader with one audience (every anonymous visitor) has nothing to choose: the parameter is
    ignored outright, so their page cannot depend on it (DESIGN: anonymous responses never vary
    with staff material). Staff sending an unknown value get a 400 that names the choices.
    """
    if len(allowed) < 2:
        return ""
    value = " ".join((args.get("audience") or "").split()).lower()
    if value and value not in allowed:
        raise BadParam(f"Parameter audience must be one of {', '.join(allowed)}, not {value[:40]!r}.")
    return value


@dataclass
class FacetItem:
    value: str
    count: int | None  # None: not counted (the audience choice), so no number is shown
    selected: bool
    url: str
    label: str = ""  # shown instead of the value when set

    @property
    def text(self) -> str:
        return self.label or self.value


@dataclass
class FacetGroup:
    name: str  # the filter parameter
    label: str
    items: list[FacetItem]


def facet_groups(results: Results, params: SearchParams) -> list[FacetGroup]:
    """Facet links that add (or, when selected, remove) one filter; selected values always stay visible."""
    groups: dict[str, FacetGroup] = {}
    for key, values in (results.facets or {}).items():
        name = FACET_FILTER.get(key)
        if name is None:
            continue
        group = groups.setdefault(name, FacetGroup(name, FILTER_LABELS[name], []))
        for value, count in values:
            value = str(value)
            if any(item.value == value for item in group.items):
                continue
            group.items.append(FacetItem(value, int(count), params.has(name, value), params.toggle_filter(name, value)))
    for name, values in params.filters.items():
        group = groups.setdefault(name, FacetGroup(name, FILTER_LABELS[name], []))
        for value in values:
            if not any(item.value == value for item in group.items):
                group.items.insert(0, FacetItem(value, 0, True, params.without_filter(name, value)))
    return [groups[name] for name in FILTERS if name in groups and groups[name].items]


def audience_group(params: SearchParams, allowed: tuple[str, ...]) -> list[FacetGroup]:
    """The audience choice as a facet group, only for readers who may see more than one audience."""
    if len(allowed) < 2:
        return []
    items = []
    for value in allowed:
        selected = params.audience == value  # a selected choice links back to everything the reader may see
        items.append(FacetItem(value, None, selected, params.url(audience="" if selected else value),
                               AUDIENCE_LABELS.get(value, value)))
    return [FacetGroup("audience", "Audience", items)]


class HTMLSafeJSONProvider(DefaultJSONProvider):
    """JSON whose text never contains <, >, & or ' so crawled strings cannot act as markup if mis-served."""

    sort_keys = False  # keep Results.to_json() order, the same as `kb search --json`
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        text = super().dumps(obj, **kwargs)
        # Outside strings JSON has none of these characters, so the replacement only touches string contents.
        return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("'", "\\u0027"))


class ResourceLoader(BaseLoader):
    """Jinja loader over an importlib.resources Traversable, so templates work from a checkout, an
    editable install and a wheel (where they ship as the data package kb.templates)."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        node = self.root
        for piece in split_template_path(template):  # rejects "..", so no escape from the root
            node = node.joinpath(piece)
        if not node.is_file():
            raise TemplateNotFound(template)
        source = node.read_text("utf-8")
        if isinstance(node, Path):
            mtime = node.stat().st_mtime

            def uptodate() -> bool:
                try:
                    return node.stat().st_mtime == mtime
                except OSError:
                    return False

            return source, str(node), uptodate
        return source, None, lambda: True

    def list_templates(self) -> list[str]:
        found: list[str] = []

        def walk(node: Traversable, prefix: str) -> None:
            for child in node.iterdir():
                if child.is_dir():
                    walk(child, f"{prefix}{child.name}/")
                elif child.name.endswith(".html"):
                    found.append(prefix + child.name)

        walk(self.root, "")
        return sorted(found)


def template_root() -> Traversable:
    """Where templates live: the kb.templates package when installed, else the checkout's templates/."""
    try:
        root = importlib.resources.files("kb.templates")
    except ModuleNotFoundError:  # plain checkout on sys.path: top-level templates/ is not a kb subpackage
        root = Path(__file__).resolve().parent.parent / "templates"
    if not root.joinpath("base.html").is_file():
        raise RuntimeError(f"kb templates not found at {root}; reinstall kb (pip install -e .).")
    return root


# -- per-process state ---------------------------------------------------------------------------------------------

class QueryLogWriter:
    """Writes query-log rows over one long-lived SQLite connection, owned by its own thread.

    Opening the store per search cost more than the search on a quiet server: closing the last connection to
    a WAL database checkpoints it (17 ms measured, against 0.05 ms for the insert on an open connection), and
    every open re-checks the schema. sqlite3 connections belong to the thread that made them, so one daemon
    thread keeps the process's connection. Callers wait for their row at most `wait` seconds, so a crawl
    holding the write lock never holds up a reader's results for long (kb.querylog itself gives up after
    its busy timeout, dropping that one row).
    """

    def __init__(self, store_path: Path, settings: Mapping[str, Any], wait: float = 0.5) -> None:
        self.store_path = store_path
        self.settings = settings
        self.wait = wait
        self._jobs: queue.SimpleQueue[tuple[tuple[Any, ...], threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def log(self, query: str, total: int, elapsed_ms: float, audience: str) -> None:
        done = threading.Event()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kb-query-log", daemon=True)
                self._thread.start()
            self._jobs.put(((query, total, elapsed_ms, audience), done))
        done.wait(self.wait)

    def _run(self) -> None:
        from kb import querylog

        store: Store | None = None
        try:
            while (job := self._jobs.get()) is not None:
                args, done = job
                try:
                    if store is None:
                        store = Store(self.store_path)
                    querylog.log_query(store, *args, settings=self.settings)
                except Exception:  # noqa: BLE001 - a broken log must not cost the reader their results
                    log.warning("search not recorded in the query log", exc_info=True)
                finally:
                    done.set()
        finally:
            if store is not None:
                store.close()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the connection (in its own thread)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._jobs.put(None)
        if thread is not None:
            thread.join(timeout)


class KBState:
    """What one app shares across requests: settings, data paths and the one lazily opened Searcher."""

    def __init__(self, settings: dict[str, Any], searcher: Any = None) -> None:
        self.settings = settings
        self.paths = data_paths(settings["DATA_DIR"])
        self._searcher = searcher
        self._owned = searcher is None
        self._lock = threading.Lock()
        self.query_log = QueryLogWriter(self.paths["store"], settings)

    def searcher(self) -> "Searcher":
        """The process-wide Searcher; not cached while the index is missing, so a later reindex is picked up."""
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    from kb.search import Searcher

                    self._searcher = Searcher(self.paths["index"])
        return self._searcher

    def close(self) -> None:
        self.query_log.close()
        with self._lock:
            if self._searcher is not None and self._owned:
                self._searcher.close()
                self._searcher = None


def _close_state(ref: "weakref.ref[KBState]") -> None:
    state = ref()
    if state is not None:
        state.close()


def state() -> KBState:
    return current_app.extensions["kb"]


def get_searcher() -> "Searcher":
    return state().searcher()


def get_store() -> Store:
    """The request's Store connection (SQLite connections are per thread), closed on teardown."""
    if "kb_store" not in g:
        g.kb_store = Store(state().paths["store"])
    return g.kb_store


def audiences() -> tuple[str, ...]:
    """Whose view this request gets; kb.auth decides (public, or public + staff when signed in)."""
    return auth.current_audiences()


def visible_article(article_id: int) -> Article | None:
    """The article if this request may see it; a hidden one is indistinguishable from a missing one."""
    return get_store().get_visible_article(article_id, audiences())


def run_search(params: SearchParams) -> Results:
    """Ask the process-wide Searcher; a new query (page 1) goes to the query log for `kb report queries`."""
    started = time.perf_counter()
    results = get_searcher().search(params.q, page=params.page, per_page=params.per_page,
                                    filters=params.filters or None, sort=params.sort,
                                    audiences=params.scope(audiences()))
    if params.q and params.page == 1:
        _log_search(params.q, results.total, (time.perf_counter() - started) * 1000)
    return results


def _log_search(query: str, total: int, elapsed_ms: float) -> None:
    """Record the search; logging is a by-product and must never break or slow a search noticeably."""
    try:
        audience = "staff" if "staff" in audiences() else "public"
        state().query_log.log(query, total, elapsed_ms, audience)
    except Exception:  # noqa: BLE001 - a broken log must not cost the reader their results
        log.warning("search not recorded in the query log", exc_info=True)


def _secret_key(data_dir: Path) -> str:
    """Read or create DATA_DIR/secret_key (mode 0600) so sessions survive restarts without a config step."""
    path = data_dir / "secret_key"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text("ascii").strip()
        if key:
            return key
        path.unlink()  # an empty file (a crash mid-write) is replaced
        return _secret_key(data_dir)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key


_static_versions: dict[str, str] = {}


def static_url(filename: str) -> str:
    """Static URL with a content hash, so browsers may cache for a week yet see changes at once."""
    folder = current_app.static_folder or ""
    version = _static_versions.get(os.path.join(folder, filename))
    if version is None:
        try:
            version = hashlib.sha256(Path(folder, filename).read_bytes()).hexdigest()[:10]
        except OSError:
            version = __version__
        _static_versions[os.path.join(folder, filename)] = version
    return url_for("static", filename=filename, v=version)


# -- app factory --------------------------------------------------------------------------------------------------

def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app (flaskr style): settings from kb.config.load(), then the rest of `test_config`.

    Keys of `test_config` that are kb settings (DATA_DIR, PER_PAGE, ...) go
    through config.load like any override; other keys (TESTING, SEARCHER,
    AUDIENCES, ...) go straight into app.config. SEARCHER injects a searcher
    object (tests); otherwise one `Searcher` per process opens lazily.
    """
    test_config = dict(test_config or {})
    overrides = {k: v for k, v in test_config.items() if k in config.DEFAULTS}
    extra = {k: v for k, v in test_config.items() if k not in config.DEFAULTS}
    settings = config.load(overrides)

    static_folder = Path(__file__).resolve().parent / "static"
    app = Flask(__name__, static_folder=str(static_folder), static_url_path="/static", template_folder=None)
    app.json = HTMLSafeJSONProvider(app)
    app.config.update(settings)
    app.config.update(SEND_FILE_MAX_AGE_DEFAULT=STATIC_MAX_AGE, JSON_SORT_KEYS=False, AUDIENCES=("public",),
                      MAX_CONTENT_LENGTH=64 * 1024)
    app.config.update(extra)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(Path(settings["DATA_DIR"]))

    app.jinja_loader = ResourceLoader(template_root())  # type: ignore[assignment]
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters.update(http_url=http_url, host=host_name, iso_date=iso_date, human_date=human_date)
    app.jinja_env.globals.update(static_url=static_url, version=__version__, filter_labels=FILTER_LABELS)

    kb_state = KBState(settings, app.config.pop("SEARCHER", None))
    app.extensions["kb"] = kb_state
    atexit.register(_close_state, weakref.ref(kb_state))

    app.url_map.converters["article_id"] = ArticleIdConverter
    app.register_blueprint(pages)
    app.register_blueprint(api)
    auth.init_app(app)  # sessions, CSRF, sign-in rate limit, /login and /logout
    app.register_error_handler(IndexUnavailable, _index_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_security_headers)
    app.teardown_appcontext(_close_store)
    return app


def _close_store(exc: BaseException | None) -> None:
    store = g.pop("kb_store", None)
    if store is not None:
        store.close()


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# -- errors (Datasette style: {status}.html, then error.html; JSON under /api) -----------------------------------

def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def error_response(status: int, message: str, remedy: str = "", headers: Mapping[str, str] | None = None) -> Response:
    """JSON {"error": {...}} for API paths, else the status template; never a traceback."""
    if _wants_json():
        response = jsonify(error={"status": status, "message": f"{message} {remedy}".strip()})
    else:
        title = HTTP_STATUS_CODES.get(status, "Error")
        try:
            body = render_template([f"{status}.html", "error.html"], status=status, title=title, message=message,
                                   remedy=remedy, q="")
        except Exception:  # a broken template must not turn an error page into a traceback
            log.exception("rendering the %s error page failed", status)
            body = (f"<!doctype html><html lang=\"en\"><title>{status} {escape(title)}</title>"
                    f"<h1>{escape(title)}</h1><p>{escape(message)} {escape(remedy)}</p></html>")
        response = current_app.response_class(body, mimetype="text/html")
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc
    message, remedy = ERROR_TEXT.get(exc.code, (HTTP_STATUS_CODES.get(exc.code, "Error") + ".", ""))
    if isinstance(exc, BadParam) and exc.description:
        message = exc.description  # our own fix-it text; werkzeug's defaults are not shown
    headers = {}
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return error_response(exc.code, message, remedy, headers)


def _index_unavailable(exc: IndexUnavailable) -> Response:
    log.warning("search index unavailable: %s", exc)
    if isinstance(exc, IndexDamaged):
        return error_response(503, INDEX_DAMAGED_MESSAGE, INDEX_DAMAGED_REMEDY, {"Retry-After": "60"})
    return error_response(503, INDEX_UNAVAILABLE_MESSAGE, INDEX_UNAVAILABLE_REMEDY, {"Retry-After": "60"})


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    message, remedy = ERROR_TEXT[500]
    return error_response(500, message, remedy)


# -- HTML pages ---------------------------------------------------------------------------------------------------

pages = Blueprint("pages", __name__)


@dataclass(frozen=True)
class HomeFacts:
    """What the home page counts for one set of audiences: articles, sites, topics and the most used tags."""

    total: int
    site_count: int
    topics: list[tuple[str, int]]
    tags: list[tuple[str, int]]


HOME_FACTS_TTL = 60.0  # seconds; the store's change log already invalidates on every article write
_home_facts: dict[tuple[str, tuple[str, ...]], tuple[int, float, HomeFacts]] = {}


def home_facts(store: Store, allowed: tuple[str, ...]) -> HomeFacts:
    """Counts for the home page, recounted only when the store changed (they scan every article: ~50 ms at 10,000).

    Counted in SQL over `allowed` only, so no staff topic, tag or count reaches a patient; the cache is keyed
    by the audiences for the same reason.
    """
    key = (str(state().paths["store"]), tuple(allowed))
    seq, now = store.last_change(), time.monotonic()
    cached = _home_facts.get(key)
    if cached is not None and cached[0] == seq and now - cached[1] < HOME_FACTS_TTL:
        return cached[2]
    total = sum(store.count_articles(audience=a) for a in allowed)
    sites = {row["site"] for row in store.counts_by("site", "audience") if row["audience"] in allowed}
    facts = HomeFacts(total, len(sites),
                      store.topic_counts("categories", allowed, limit=HOME_MORE_TOPICS) if total else [],
                      store.topic_counts("tags", allowed, limit=HOME_TAGS) if total else [])
    _home_facts[key] = (seq, now, facts)
    return facts


@pages.get("/")
def index() -> str:
    """Search box, a short list of topics with the most used tags, and what this site is."""
    facts = home_facts(get_store(), audiences())
    return render_template("index.html", q="", total=facts.total, topics=facts.topics[:HOME_TOPICS],
                           more_topics=facts.topics[HOME_TOPICS:], tags=facts.tags, site_count=facts.site_count,
                           params=SearchParams())


@pages.get("/search")
def search() -> Any:
    """Results page: hits with source links, facets, sorting, pagination and spelling help."""
    params = parse_search_args(request.args, default_per_page=int(current_app.config["PER_PAGE"]))
    if not params.q and not params.filters:
        return redirect(url_for("pages.index"))
    params.audience = audience_choice(request.args, audiences())
    results = run_search(params)
    first = (results.page - 1) * results.per_page + 1
    faq_answer = None
    if results.page == 1 and params.q and results.hits and results.hits[0].kind == "faq":
        faq_answer = visible_article(results.hits[0].id)  # the best match is a question: answer it inline
    facets = facet_groups(results, params)
    return render_template(
        "search.html", q=params.q, params=params, results=results, window=page_window(results.page, results.pages),
        facets=audience_group(params, audiences()) + facets if facets or params.audience else facets,
        first=first, last=first + len(results.hits) - 1, audience_labels=AUDIENCE_LABELS,
        faq_answer=faq_answer, faq_paragraphs=paragraphs(faq_answer.text) if faq_answer else [],
        can_browse=not results.total and _has_topics(),
    )


def _has_topics() -> bool:
    """Whether the home page lists any topic or tag for this reader (the no-results page links there only then)."""
    facts = home_facts(get_store(), audiences())
    return bool(facts.topics or facts.tags)


@pages.get("/faq")
def faq() -> str:
    """Frequently asked questions by topic, each with its answer and the page it comes from."""
    from kb.faq import faq_topics

    topics = faq_topics(get_store(), audiences())
    return render_template("faq.html", q="", topics=topics, params=SearchParams(), paragraphs=paragraphs)


@pages.get("/article/<article_id:article_id>")
def article(article_id: int) -> str:
    """One stored article with section anchors, a nested contents list and a link to the original.

    Section bodies are the stored markup re-run through kb.markup's allow-list; rows without it are escaped text.
    """
    found = visible_article(article_id)
    if found is None:
        abort(404)
    lead, sections = article_sections(found)
    # The same text published elsewhere (near-duplicates), only where this reader may see it.
    copies = [c for c in get_store().copies(article_id, audiences()) if c["id"] != article_id]
    return render_template("article.html", q="", article=found, lead=lead, sections=sections,
                           toc=contents(sections), params=SearchParams(), copies=copies)


@pages.get("/healthz")
def healthz() -> Response:
    """For load balancers: 200 when the store and the live index answer a query, 503 (JSON body) otherwise."""
    from kb.maintenance import health

    facts = health(state().paths["root"])
    if facts["ok"]:
        try:
            get_searcher().search("health", per_page=1, audiences=("public",))
        except Exception as exc:  # any failure to read the index means: do not send traffic here
            log.warning("health check: the index could not be searched: %s", exc,
                        exc_info=not isinstance(exc, IndexUnavailable))
            facts = {**facts, "ok": False, "index": "unreadable"}
    response = jsonify(facts)
    response.status_code = 200 if facts["ok"] else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/favicon.ico")
def favicon() -> Response:
    return redirect(static_url("favicon.svg"), code=301)


# -- JSON API -----------------------------------------------------------------------------------------------------

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/search")
def api_search() -> Response:
    """Exactly Results.to_json(), the same document `kb search --json` prints."""
    params = parse_search_args(request.args, default_per_page=int(current_app.config["PER_PAGE"]),
                               allow_per_page=True)
    if not params.q and not params.filters:
        raise BadParam("Parameter q is required (or at least one filter: tag, category, site, year).")
    results = run_search(params)
    return jsonify(results.to_json())


@api.get("/suggest")
def suggest() -> Response:
    """Completions for the search box (suggest-as-you-type)."""
    q = " ".join((request.args.get("q") or "").split())
    if len(q) > MAX_QUERY_LENGTH:
        raise BadParam(f"The query is too long; use at most {MAX_QUERY_LENGTH} characters.")
    limit = _int_arg(request.args, "limit", 8, 1, MAX_SUGGEST)
    suggestions = get_searcher().suggest(q, limit=limit, audiences=audiences()) if q else []
    return jsonify(query=q, suggestions=list(suggestions))


@api.get("/articles/<article_id:article_id>")
def api_article(article_id: int) -> Response:
    found = visible_article(article_id)
    if found is None:
        abort(404)
    copies = get_store().copies(article_id, audiences())
    if len(copies) > 1:  # near-duplicates: every copy, the group's primary first
        found.sources = [{"url": c["url"], "site": c["site"], "title": c["title"]} for c in copies]
    for section in found.sections:  # clients may show it as HTML: the same allow-list as the article page
        section.html = clean_markup(section.html, found.url)
    return jsonify(public_article(found))


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


def _param(name: str, description: str, schema: dict[str, Any], *, required: bool = False,
           explode: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "description": description,
                             "schema": schema}
    if explode:
        param.update(style="form", explode=True)
    return param


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of /api/*, built from the same limits the views enforce."""
    error = {"description": "Error",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    filters = [
        _param(name, f"Only results with this {name}; repeat to allow several values.",
               {"type": "array", "items": {"type": "string", "pattern": r"^\d{4}$"} if name == "year"
                else {"type": "string", "maxLength": 200}, "maxItems": MAX_FILTER_VALUES}, explode=True)
        for name in FILTERS
    ]
    string_list = {"type": "array", "items": {"type": "string"}}
    source_list = {"type": "array", "description": "Every site publishing this text (near-duplicates merged), "
                   "the first copy first; empty when there is only one", "items": {
                       "type": "object", "properties": {"url": {"type": "string"}, "site": {"type": "string"},
                                                        "title": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kb dermatology knowledge base API",
            "version": __version__,
            "description": "Full-text search over crawled dermatology articles. Errors are JSON "
                           "{\"error\": {\"status\", \"message\"}}. 503 means the index is not built yet "
                           "(run `kb reindex`).",
        },
        "servers": [{"url": "/"}],
        # Anonymous requests get the public view; a staff token adds staff-only records.
        "security": [{}, {"bearerAuth": []}],
        "paths": {
            "/api/search": {"get": {
                "operationId": "search",
                "summary": "Search articles (same JSON as `kb search --json`)",
                "parameters": [
                    _param("q", "Query: words, \"phrases\", AND/OR/NOT. Optional when a filter is given.",
                           {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
                    _param("page", "Page number, from 1.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                                            "default": 1}),
                    _param("per_page", "Results per page.", {"type": "integer", "minimum": 1,
                                                              "maximum": MAX_PER_PAGE, "default": 10}),
                    _param("sort", "Ranking order.", {"type": "string", "enum": list(SORTS), "default": "relevance"}),
                    *filters,
                ],
                "responses": {
                    "200": {"description": "A page of results",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}},
                    "400": error, "401": error, "503": error,
                },
            }},
            "/api/suggest": {"get": {
                "operationId": "suggest",
                "summary": "Completions for a partly typed query",
                "parameters": [
                    _param("q", "What has been typed so far.", {"type": "string", "maxLength": MAX_QUERY_LENGTH},
                           required=True),
                    _param("limit", "Most suggestions returned.", {"type": "integer", "minimum": 1,
                                                                    "maximum": MAX_SUGGEST, "default": 8}),
                ],
                "responses": {
                    "200": {"description": "Suggestions", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["query", "suggestions"],
                        "properties": {"query": {"type": "string"}, "suggestions": string_list}}}}},
                    "400": error, "401": error, "503": error,
                },
            }},
            "/api/articles/{id}": {"get": {
                "operationId": "getArticle",
                "summary": "One stored article with its sections",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ARTICLE_ID}}],
                "responses": {
                    "200": {"description": "The article",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Article"}}}},
                    "401": error, "404": error,
                },
            }},
            "/api/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {"securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "Staff API token (`kb token create USER`). Without one the public view is returned; "
                           "a wrong or revoked token gets 401."}}, "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["status", "message"],
                "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}}}},
            "Hit": {"type": "object", "required": ["id", "url", "link", "title", "snippet", "score"], "properties": {
                "id": {"type": "integer"},
                "url": {"type": "string", "description": "The original page"},
                "link": {"type": "string", "description": "url#anchor of the best-matching section"},
                "title": {"type": "string"},
                "snippet": {"type": "string", "description": "Escaped text with <mark> around matches (HTML)"},
                "score": {"type": "number"},
                "site": {"type": "string"},
                "published": {"type": ["string", "null"]},
                "tags": string_list, "categories": string_list,
                "anchor": {"type": "string"}, "section": {"type": "string"},
                "audience": {"type": "string"}, "kind": {"type": "string"},
                "sources": source_list}},
            "Results": {"type": "object", "required": ["query", "total", "results"], "properties": {
                "query": {"type": "string"}, "total": {"type": "integer"}, "page": {"type": "integer"},
                "per_page": {"type": "integer"}, "pages": {"type": "integer"},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                "suggestions": {**string_list, "description": "\"Did you mean …?\" alternatives"},
                "facets": {"type": "object", "additionalProperties": {"type": "array", "items": {
                    "type": "object", "properties": {"value": {"type": "string"}, "count": {"type": "integer"}}}}},
                "notice": {"type": "string"}}},
            "Section": {"type": "object", "properties": {
                "heading": {"type": "string"}, "anchor": {"type": "string"}, "text": {"type": "string"},
                "level": {"type": "integer"},
                "html": {"type": "string", "description": "The section body as sanitised HTML (p, ul, ol, li, "
                         "h3-h6, strong, em, b, i, blockquote, table parts, br, and a with an absolute http(s) "
                         "href and rel=\"nofollow noopener\"), or empty when only the text is known"}}},
            "Article": {"type": "object", "required": ["id", "url", "title", "text"], "properties": {
                "id": {"type": "integer"}, "url": {"type": "string"}, "title": {"type": "string"},
                "text": {"type": "string"},
                "sections": {"type": "array", "items": {"$ref": "#/components/schemas/Section"}},
                "canonical": {"type": "string", "description": "The page's canonical http(s) URL, or empty"},
                "description": {"type": "string"}, "author": {"type": "string"},
                "published": {"type": ["string", "null"]}, "modified": {"type": ["string", "null"]},
                "categories": string_list, "tags": string_list, "site": {"type": "string"},
                "audience": {"type": "string"}, "kind": {"type": "string"},
                "lang": {"type": "string", "description": "The page's BCP 47 language tag (en-GB), or empty"},
                "disclaimer": {"type": "boolean", "description": "The source page carries a medical disclaimer"},
                "sources": source_list}},
        }},
    }

