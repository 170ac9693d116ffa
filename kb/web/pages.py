"""The HTML pages: home, search results with facets, the FAQ, articles, and /healthz for load balancers.

Each view parses its parameters (kb.web.params), asks kb.web.reader for what this reader may see, and renders
an autoescaped template; the helpers here shape results and articles for those templates. The only trusted
HTML is the search snippet (`Hit.snippet_html`, marked safe in one macro) and article section markup
(`BodyPart.body_html`), built only by kb.extract.markup.clean().
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup

from kb.errors import IndexUnavailable
from kb.extract.markup import clean as clean_markup
from kb.models import Article, Results, Section
from kb.store import Store
from kb.web.app import get_searcher, get_store, state, static_url
from kb.web.format import page_window, paragraphs
from kb.web.params import FILTER_LABELS, FILTERS, SearchParams, audience_choice, parse_search_args
from kb.web.reader import audiences, run_search, visible_article

log = logging.getLogger(__name__)

# Staff may narrow results to one audience; a reader who sees one audience never gets this choice.
AUDIENCE_LABELS = {"public": "Public", "staff": "Staff only"}
HOME_TOPICS = 8  # topics listed on the home page; the rest sit behind "More topics"
HOME_MORE_TOPICS = 40
HOME_TAGS = 12  # one row of the most used tags
# Facet names the search layer may use, mapped to the filter parameter they narrow.
FACET_FILTER = {"tag": "tag", "tags": "tag", "category": "category", "categories": "category",
                "site": "site", "sites": "site", "year": "year", "years": "year"}
RESERVED_IDS = frozenset({"main", "q", "q-suggestions", "q-status", "results", "contents", "article-title"})


@dataclass
class BodyPart:
    """Part of a section body: the stored markup, re-run through the allow-list, else escaped paragraphs."""

    paragraphs: list[list[str]] = field(default_factory=list)
    body_html: Markup | None = None  # only ever kb.extract.markup.clean() output


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


bp = Blueprint("pages", __name__)


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


@bp.get("/")
def index() -> str:
    """Search box, a short list of topics with the most used tags, and what this site is."""
    facts = home_facts(get_store(), audiences())
    return render_template("index.html", q="", total=facts.total, topics=facts.topics[:HOME_TOPICS],
                           more_topics=facts.topics[HOME_TOPICS:], tags=facts.tags, site_count=facts.site_count,
                           params=SearchParams())


@bp.get("/search")
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
    # the answer box shows that record: the list below starts with the next one, never repeats it
    hits = [h for h in results.hits if faq_answer is None or h.id != faq_answer.id]
    facets = facet_groups(results, params)
    return render_template(
        "search.html", q=params.q, params=params, results=results, window=page_window(results.page, results.pages),
        facets=audience_group(params, audiences()) + facets if facets or params.audience else facets,
        first=first, last=first + len(results.hits) - 1, audience_labels=AUDIENCE_LABELS,
        hits=hits, faq_answer=faq_answer, faq_paragraphs=paragraphs(faq_answer.text) if faq_answer else [],
        can_browse=not results.total and _has_topics(),
    )


def _has_topics() -> bool:
    """Whether the home page lists any topic or tag for this reader (the no-results page links there only then)."""
    facts = home_facts(get_store(), audiences())
    return bool(facts.topics or facts.tags)


@bp.get("/faq")
def faq() -> str:
    """Frequently asked questions by topic, each with its answer and the page it comes from."""
    from kb.faq import faq_topics

    topics = faq_topics(get_store(), audiences())
    return render_template("faq.html", q="", topics=topics, params=SearchParams(), paragraphs=paragraphs)


@bp.get("/article/<article_id:article_id>")
def article(article_id: int) -> str:
    """One stored article with section anchors, a nested contents list and a link to the original.

    Section bodies are the stored markup re-run through kb.extract.markup's allow-list; rows without it are escaped text.
    """
    found = visible_article(article_id)
    if found is None:
        abort(404)
    lead, sections = article_sections(found)
    # The same text published elsewhere (near-duplicates), only where this reader may see it.
    copies = [c for c in get_store().copies(article_id, audiences()) if c["id"] != article_id]
    return render_template("article.html", q="", article=found, lead=lead, sections=sections,
                           toc=contents(sections), params=SearchParams(), copies=copies)


@bp.get("/healthz")
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


@bp.get("/favicon.ico")
def favicon() -> Response:
    return redirect(static_url("favicon.svg"), code=301)

