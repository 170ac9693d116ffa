"""Crawl one source end to end (discover -> fetch -> extract -> store), and explain a single URL.

The store only changes when the site did: a 304 or an identical body writes no article rows and no
`changes` rows, so an incremental index update after an unchanged crawl has nothing to do. Removals
are deferred to the end of the crawl and guarded, because a failing site looks a lot like an empty one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from kb import crawl
from kb import extract as extraction
from kb.config import data_paths
from kb.crawl import HtmlInfo, Link
from kb.errors import BlockedByRobots, ConfigError, FetchError, SkipPage
from kb.extract.charset import decode_html
from kb.faults import checkpoint
from kb.fetch import Fetcher, robot_token
from kb.models import Article, CrawlStats, Page
from kb.sources import Source, load_sources, source_from_url
from kb.store import Store
from kb.text import paragraphs

log = logging.getLogger(__name__)

# Skips that mean the page no longer yields an article: its stored article goes (subject to the guard).
REMOVE_KINDS = frozenset({"http_404", "http_410", "noindex", "not_published", "duplicate"})
MAX_SKIP_DETAILS = 500  # skips listed one by one in the crawl log; pages.error keeps them all
FEED_ACCEPT = "application/rss+xml,application/atom+xml,application/xml;q=0.9,text/xml;q=0.9,*/*;q=0.1"
SITEMAP_ACCEPT = "application/xml,text/xml;q=0.9,*/*;q=0.1"
JSON_ACCEPT = "application/json"
# Version of the audience rules: a change makes the next crawl of each source check its stored records again.
AUDIENCE_RULES = "2"  # 2: staff paths match every spelling; redirect hops and canonicals count


@dataclass
class SourceCrawlStats(CrawlStats):
    """CrawlStats plus what one source's crawl log needs: the messages and every skip with its reason."""

    source: str = ""
    pages: int = 0  # page requests made (what max_pages limits)
    discovered: int = 0  # in-scope URLs listed by sitemaps, the REST API and feeds
    listings: int = 0  # archive pages followed for links but not stored
    removal_refused: int = 0  # removals held back by the REMOVE_MAX_SHARE guard
    truncated: bool = False  # stopped at max_pages with URLs left to visit
    skips: list[dict[str, str]] = field(default_factory=list)
    # site -> {"paragraphs", "added", "dropped", "reindex"}: its boilerplate set after this crawl
    boilerplate: dict[str, dict[str, int]] = field(default_factory=dict)

    def record_skip(self, url: str, exc: SkipPage) -> None:
        """Count a skip under its kind and keep its reason (robots, fetch errors and content skips apart)."""
        if isinstance(exc, BlockedByRobots):
            self.robots += 1
            self.errors_by_kind[exc.kind] = self.errors_by_kind.get(exc.kind, 0) + 1
        elif isinstance(exc, FetchError):
            self.error(exc.kind)
        else:
            self.skipped += 1
            self.errors_by_kind[exc.kind] = self.errors_by_kind.get(exc.kind, 0) + 1
        if len(self.skips) < MAX_SKIP_DETAILS:
            self.skips.append({"url": url, "kind": exc.kind, "reason": exc.message})

    def note(self, message: str) -> None:
        log.warning("%s", message)
        self.messages.append(message)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _directives(info: HtmlInfo, headers: dict[str, str], token: str) -> tuple[bool, bool]:
    """(noindex, nofollow) from meta robots and the X-Robots-Tag header."""
    header = crawl.robots_directives(headers.get("x-robots-tag", ""), token)
    return info.noindex or "noindex" in header, info.nofollow or "nofollow" in header


def _hop_allowed(fetcher: Fetcher, scope: Callable[[str], bool], url: str) -> bool:
    """The check each request and redirect hop must pass, on the hop's normalised identity: scope, then
    robots.txt. The fetcher checks robots.txt on the hop as spelled, where "//private/x" slips past
    "Disallow: /private/"; raising BlockedByRobots here stops the hop before it is requested."""
    norm = crawl.normalize_url(url)
    if norm is None or not scope(norm):
        return False
    for reading in crawl.robots_urls(norm):
        fetcher.check_robots(reading)
    return True


def _fetch_addresses(page: Page, requested: str) -> list[str]:
    """Every address one fetch went through or names for itself, normalised: requested, each redirect hop,
    the final URL and the canonicals of its HTTP `Link` header (counted like the HTML canonical)."""
    hops = (crawl.normalize_url(u) for u in [*page.redirects, page.url])
    return crawl.dedupe([requested, *(u for u in hops if u), *_header_canonicals(page)])


def _header_canonicals(page: Page) -> list[str]:
    """The rel="canonical" targets of the page's HTTP `Link` header (resolved against its final URL)."""
    return crawl.link_header_canonicals(page.headers.get("link", ""), page.url)


def _canonical_target(article: Article, url: str, source: Source) -> str | None:
    """The in-scope canonical URL the page names when it is another address than `url`, else None."""
    canonical = crawl.normalize_url(article.canonical, url) if article.canonical else None
    if canonical and canonical != url and crawl.in_scope(canonical, source) and not crawl.is_listing(canonical):
        return canonical
    return None


def _build_article(text: str, url: str, info: HtmlInfo, *, noindex: bool, source: Source,
                   content_type: str = "text/html", unpublished: set[str] | frozenset[str] = frozenset(),
                   terms: dict[str, tuple[list[str], list[str]]] | None = None, via: Iterable[str] = ()) -> Article:
    """The storable article of a fetched page (`via`: the other addresses of its fetch), or SkipPage saying
    why there is none."""
    if noindex:
        raise SkipPage("the page asks not to be indexed (robots noindex)", kind="noindex")
    if url in unpublished:
        raise SkipPage("the WordPress REST API lists this post as not published (draft, private or "
                       "password-protected)", kind="not_published")
    if crawl.is_listing(url):
        raise SkipPage("an archive listing (category, tag, author, date or page N): followed for links, "
                       "not stored", kind="listing")
    article = extraction.extract(text, url, content_type=content_type.split(";")[0].strip() or "text/html")
    if not article.canonical and info.canonical:
        article.canonical = info.canonical
    elif article.canonical:
        article.canonical = crawl.normalize_url(article.canonical, url) or article.canonical
    return _finish_article(article, url, url, source, terms, via)


def _finish_article(article: Article, target: str, url: str, source: Source,
                    terms: dict[str, tuple[list[str], list[str]]] | None, via: Iterable[str] = ()) -> Article:
    """Site, audience and REST categories/tags: what the page alone cannot say.

    The audience covers the whole fetch: staff when `target`, `url`, any address in `via` (requested URL,
    redirect hops) or the canonical the page declares is staff, so no address launders a staff page.
    """
    article.url = target
    article.site = source.host
    rest_categories, rest_tags = (terms or {}).get(target) or (terms or {}).get(url) or ([], [])
    if not article.categories:
        article.categories = list(rest_categories)
    if not article.tags:
        article.tags = list(rest_tags)
    canonical = crawl.normalize_url(article.canonical, url) if article.canonical else None
    article.audience = source.audience_for(target, [*article.categories, *rest_categories],
                                           via=[url, *via, canonical or ""])
    return article


_FAQ_PATH = re.compile(r"(?:^|[/_.-])(?:faqs?|frequently-asked(?:-questions)?)(?:[/_.-]|$)", re.IGNORECASE)
_FAQ_TITLE = re.compile(r"\bFAQs?\b|frequently asked|\bquestions\b|\bQ\s*&\s*A\b", re.IGNORECASE)


def is_faq_page(html: str, article: Article) -> bool:
    """FAQ pages only (FAQPage markup, "FAQ" in the address or title, or nearly all headings questions):
    an article with a few "What causes them?" headings does not become questions without context."""
    if "faqpage" in html.lower():
        return True
    if _FAQ_PATH.search(urlsplit(article.url).path) or _FAQ_TITLE.search(article.title or ""):
        return True
    headings = [s.heading.strip() for s in article.sections if s.heading.strip()]
    questions = [h for h in headings if h.endswith("?")]
    return len(questions) >= 5 and 3 * len(questions) >= 2 * len(headings)


def _faq_prefix(url: str) -> str:
    return url.split("#", 1)[0] + "#"


def faq_records(html: str, article: Article) -> list[Article]:
    """The question/answer pairs of a stored FAQ page as records of their own (kind="faq").

    Each gets a unique URL, the page's URL plus the question's anchor (or a slug of the question),
    and inherits the page's audience, site, topics and dates, so a staff page's questions stay staff.
    """
    if not is_faq_page(html, article):
        return []
    out: list[Article] = []
    used: set[str] = set()
    for record in extraction.extract_faqs(html, article.url):
        anchor = next((s.anchor.strip() for s in record.sections if s.anchor and s.anchor.strip()), "")
        if not anchor or re.search(r"\s", anchor):
            anchor = "faq-" + (re.sub(r"[^a-z0-9]+", "-", record.title.casefold()).strip("-")[:60] or "question")
        base, n = anchor, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        record.url = _faq_prefix(article.url) + anchor
        record.sections = []  # the URL already points at the answer; a section anchor would repeat it
        record.kind = "faq"
        record.canonical = ""
        record.audience = article.audience
        record.site = article.site
        record.categories = list(article.categories)
        record.tags = list(article.tags)
        record.published, record.modified = article.published, article.modified
        record.lang = record.lang or article.lang
        out.append(record)
    return out


class _Crawl:
    """The state of one source's crawl; `run()` is the whole of it."""

    def __init__(self, source: Source, store: Store, settings: dict[str, Any],
                 progress: Callable[[str], None] | None, force: bool) -> None:
        self.source = source
        self.store = store
        self.settings = settings
        self.progress = progress or (lambda message: None)
        self.force = force
        self.limit = int(source.max_pages or settings["MAX_PAGES"])
        self.token = robot_token(settings["USER_AGENT"])
        self.start = crawl.normalize_url(source.url) or source.url
        self.stats = SourceCrawlStats(source=source.name)
        self.queue: deque[str] = deque()
        self.known: set[str] = set()  # queued or done
        self.done: set[str] = set()  # fetched, or stored under this URL, in this crawl
        self.seen: set[str] = set()  # confirmed to exist this crawl (listed, fetched, or failing transiently)
        self.listed: dict[str, str | None] = {}  # URL -> modified, from sitemaps, REST and feeds
        self.unpublished: set[str] = set()
        self.terms: dict[str, tuple[list[str], list[str]]] = {}
        self.feeds_done: set[str] = set()
        self.pending_feeds: list[str] = []
        self.started = False  # discovery done, pages being fetched
        self.enumerated = False  # a sitemap or the REST API listed the site's pages: archives need no visit
        self.to_remove: dict[int, tuple[str, str]] = {}  # article id -> (url, reason)
        self.stored: set[str] = set()  # URLs that led to an article saved (or found unchanged) in this crawl
        self.pages_ok = 0
        self.fetcher: Fetcher | None = None

    # -- helpers ----------------------------------------------------------------------------------------
    def in_scope(self, url: str) -> bool:
        return crawl.in_scope(url, self.source)

    def host_scope(self, url: str) -> bool:
        return crawl.same_host(crawl.normalize_url(url) or url, self.start)

    def page_scope(self, url: str) -> bool:
        """Whether a page request or redirect hop may go ahead (raises BlockedByRobots when robots.txt says no)."""
        assert self.fetcher is not None
        return _hop_allowed(self.fetcher, self.in_scope, url)

    def discovery_scope(self, url: str) -> bool:
        """The same for sitemaps, feeds and the REST API: on the site's host, and allowed by robots.txt."""
        assert self.fetcher is not None
        return _hop_allowed(self.fetcher, self.host_scope, url)

    def enqueue(self, url: str) -> None:
        if url in self.known or not self.in_scope(url):
            return
        if self.enumerated and crawl.is_listing(url) and url != self.start:
            return  # archive pages only lead to posts a sitemap or the REST API already listed
        self.known.add(url)
        self.queue.append(url)

    def list_link(self, link: Link) -> None:
        """A URL named by a sitemap, the REST API or a feed: it exists, and it is worth fetching."""
        if not self.in_scope(link.url):
            return
        if link.url not in self.listed:
            self.stats.discovered += 1
            self.listed[link.url] = link.modified
        elif link.modified and (self.listed[link.url] or "") < link.modified:
            self.listed[link.url] = link.modified
        self.seen.add(link.url)
        if self.started:  # feeds found on the start page: queue their entries now
            self.enqueue(link.url)

    def record(self, url: str, prev: dict[str, Any] | None, **fields: Any) -> None:
        """Write the pages row, touching only columns that changed (plus fetched_at)."""
        fields["source"] = self.source.name
        changed = {k: v for k, v in fields.items() if prev is None or prev.get(k) != v}
        self.store.record_page(url, **changed)

    def get(self, url: str, *, accept: str, named: bool) -> Page | None:
        """Fetch a discovery document (sitemap, feed, API); failures of guessed addresses stay quiet."""
        assert self.fetcher is not None
        try:
            return self.fetcher.fetch(url, html_only=False, accept=accept, scope=self.discovery_scope)
        except BlockedByRobots as exc:
            if named:
                self.stats.note(f"Not reading {url}: {exc.message}.")
            return None
        except FetchError as exc:
            if exc.status in (404, 410) and not named:
                log.debug("no %s (%s)", url, exc.status)
                return None
            if named or exc.status is None or exc.status >= 500:
                self.stats.record_skip(url, exc)
            return None
        except SkipPage as exc:
            self.stats.record_skip(url, exc)
            return None

    # -- discovery -------------------------------------------------------------------------------------
    def discover(self) -> None:
        assert self.fetcher is not None
        rules = self.fetcher.robots(self.start)
        named = crawl.dedupe(u for u in (crawl.normalize_url(s) for s in rules.sitemaps)
                             if u and self.host_scope(u))
        root = crawl.site_root(self.start)
        guesses = [root + "sitemap.xml", root + "sitemap_index.xml", root + "wp-sitemap.xml"]
        self.read_sitemaps(named, [] if named else guesses)
        self.read_rest()
        for feed_url in crawl.feed_candidates(self.source):
            self.read_feed(feed_url, named=False)
        self.enqueue(self.start)
        # Most recently modified first, so a limited crawl spends its budget on fresh pages.
        for url, _ in sorted(self.listed.items(), key=lambda item: item[1] or "", reverse=True):
            self.enqueue(url)
        self.started = True

    def read_sitemaps(self, named: list[str], guesses: list[str]) -> None:
        queue: deque[str] = deque(named)
        done: set[str] = set()
        taken = 0
        while queue or guesses:
            from_guess = not queue
            url = queue.popleft() if queue else guesses.pop(0)
            if url in done:
                continue
            if len(done) >= crawl.MAX_SITEMAPS:
                self.stats.record_skip(url, SkipPage(
                    f"more than {crawl.MAX_SITEMAPS} sitemaps (a nested or looping sitemap index?); "
                    f"{len(queue) + 1} further sitemaps ignored", kind="sitemap_limit"))
                return
            done.add(url)
            page = self.get(url, accept=SITEMAP_ACCEPT, named=not from_guess)
            if page is None:
                continue
            try:
                sitemap = crawl.parse_sitemap(page.content, url, max_urls=max(0, crawl.MAX_SITEMAP_URLS - taken),
                                              max_bytes=int(self.settings["MAX_PAGE_BYTES"]))
            except SkipPage as exc:
                if not from_guess or b"<urlset" in page.content[:2048] or b"<sitemapindex" in page.content[:2048]:
                    self.stats.record_skip(url, exc)
                continue
            if from_guess:
                guesses.clear()  # one working sitemap is enough; the others are usually aliases of it
            taken += len(sitemap.links)
            self.enumerated |= any(self.in_scope(link.url) for link in sitemap.links)
            for link in sitemap.links:
                self.list_link(link)
            queue.extend(u for u in sitemap.sitemaps if u not in done and self.host_scope(u))
            if sitemap.truncated:
                self.stats.record_skip(url, SkipPage(
                    f"the sitemaps list more than {crawl.MAX_SITEMAP_URLS:,} URLs; the rest were ignored",
                    kind="sitemap_limit"))
                return

    def read_rest(self) -> None:
        for api_root in crawl.wp_api_roots(self.source):
            posts = self.read_rest_collection(api_root, "posts")
            if posts is None:
                continue
            items = posts + (self.read_rest_collection(api_root, "pages") or [])
            categories = self.read_rest_terms(api_root, "categories")
            tags = self.read_rest_terms(api_root, "tags")
            for item in items:
                if not item.publishable:
                    self.unpublished.add(item.url)
                    continue
                self.list_link(Link(item.url, item.modified))
                self.enumerated |= self.in_scope(item.url)
                names = ([categories[i] for i in item.categories if i in categories],
                         [tags[i] for i in item.tags if i in tags])
                if names[0] or names[1]:
                    self.terms[item.url] = names
            return

    def read_rest_collection(self, api_root: str, endpoint: str, fields: str | None = crawl.REST_FIELDS,
                             ) -> list[crawl.RestItem] | None:
        """Every item of one REST collection, page by page; None when there is no JSON API here."""
        items: list[crawl.RestItem] = []
        for number in range(1, crawl.MAX_REST_PAGES + 1):
            url = crawl.wp_api_url(api_root, endpoint, number, fields=fields)
            page = self.get(url, accept=JSON_ACCEPT, named=False)
            if page is None or "json" not in page.content_type:
                return None if number == 1 else items
            try:
                batch = crawl.parse_wp_items(page.content, url)
            except SkipPage as exc:
                if number == 1:
                    return None
                self.stats.record_skip(url, exc)
                return items
            if not batch:
                return items
            items.extend(batch)
            total = crawl.wp_total_pages(page.headers)
            if total is not None and number >= total:
                return items
        return items

    def read_rest_terms(self, api_root: str, taxonomy: str) -> dict[int, str]:
        terms: dict[int, str] = {}
        for number in range(1, crawl.MAX_REST_PAGES + 1):
            url = crawl.wp_api_url(api_root, taxonomy, number, fields="id,name")
            page = self.get(url, accept=JSON_ACCEPT, named=False)
            if page is None or "json" not in page.content_type:
                break
            try:
                batch = crawl.parse_wp_terms(page.content)
            except SkipPage as exc:
                self.stats.record_skip(url, exc)
                break
            if not batch:
                break
            terms.update(batch)
            total = crawl.wp_total_pages(page.headers)
            if total is not None and number >= total:
                break
        return terms

    def read_feed(self, feed_url: str, *, named: bool) -> None:
        if feed_url in self.feeds_done or not self.host_scope(feed_url):
            return
        self.feeds_done.add(feed_url)
        known: set[str] = set()
        for number in range(1, crawl.MAX_FEED_PAGES + 1):
            url = crawl.feed_page_url(feed_url, number)
            page = self.get(url, accept=FEED_ACCEPT, named=named and number == 1)
            if page is None:
                return
            try:
                links = crawl.parse_feed(page.content, url)
            except SkipPage as exc:
                looks_like_feed = any(t in page.content_type for t in ("xml", "rss", "atom"))
                if number == 1 and (named or looks_like_feed):
                    self.stats.record_skip(url, exc)
                return  # an invalid page ends the pagination
            fresh = [link for link in links if link.url not in known]
            if not fresh:
                return  # empty page, or a site that ignores ?paged= and repeats page 1
            known.update(link.url for link in fresh)
            for link in fresh:
                self.list_link(link)
        self.stats.note(f"The feed {feed_url} has more than {crawl.MAX_FEED_PAGES} pages; the rest were not read.")

    # -- pages -------------------------------------------------------------------------------------------
    def crawl_pages(self) -> None:
        while self.queue:
            if self.stats.pages >= self.limit:
                self.stats.truncated = True
                self.stats.note(f"Stopped after {self.stats.pages} pages (max_pages / MAX_PAGES = {self.limit}); "
                                f"{len(self.queue)} URLs were not visited this time.")
                return
            url = self.queue.popleft()
            if url in self.done:
                continue
            try:
                self.crawl_page(url)
            except Exception as exc:  # one page never stops the crawl; the traceback goes to the log
                log.warning("internal error while crawling %s", url, exc_info=True)
                self.stats.error("internal")
                reason = f"internal error: {exc.__class__.__name__}: {exc}"
                if len(self.stats.skips) < MAX_SKIP_DETAILS:
                    self.stats.skips.append({"url": url, "kind": "internal", "reason": reason})
                self.seen.add(url)
                self.store.record_page(url, source=self.source.name, error=f"internal: {reason}")
            while self.pending_feeds:
                self.read_feed(self.pending_feeds.pop(0), named=True)

    def say(self, outcome: str, url: str) -> None:
        self.progress(f"[{self.stats.pages}/{self.limit}] {outcome} {url}")

    def crawl_page(self, url: str, depth: int = 0) -> None:
        assert self.fetcher is not None
        self.done.add(url)
        prev = self.store.get_page(url)
        try:
            page = self.fetcher.fetch(url, etag=prev["etag"] if prev else None,
                                      last_modified=prev["last_modified"] if prev else None, scope=self.page_scope)
        except BlockedByRobots as exc:
            self.skip(url, prev, exc)
            self.say("robots.txt forbids", url)
            return
        except SkipPage as exc:
            self.stats.pages += 1
            self.skip(url, prev, exc)
            self.say(f"skipped ({exc.kind})", url)
            if url == self.start and exc.kind == "redirect_out_of_scope":
                self.stats.note(f"The start page {url} {exc.message}: if the site moved, use that address as "
                                "the url of this site in sources.toml.")
            return
        self.stats.pages += 1
        self.pages_ok += 1
        final = crawl.normalize_url(page.url) or url
        self.done.add(final)
        self.seen.update((url, final))
        if page.not_modified:
            self.stats.not_modified += 1
            raw = self.store.get_raw(url)
            if raw is None:
                self.record(url, prev, error=prev["error"] if prev else "", misses=0)
                self.say("not modified", url)
                return
            body, content_type = raw
        else:
            self.stats.fetched += 1
            body, content_type = page.content, page.headers.get("content-type", "")
        digest = _digest(body)
        state: dict[str, Any] = {
            "status": prev["status"] if page.not_modified and prev else page.status,
            "content_type": content_type.split(";")[0].strip().lower(),
            "etag": page.etag or (prev["etag"] if page.not_modified and prev else None),
            "last_modified": page.last_modified or (prev["last_modified"] if page.not_modified and prev else None),
            "content_hash": digest,
            "misses": 0,
        }
        if not page.not_modified and (prev is None or prev["content_hash"] != digest):
            self.store.put_raw(url, body, content_type)
        try:
            text = decode_html(body, content_type, strict=True)
            info = crawl.parse_html(text, final, self.token)
            noindex, nofollow = _directives(info, page.headers, self.token)
            if page.not_modified and prev and prev["error"].startswith("noindex:"):
                noindex = True  # a 304 need not repeat the X-Robots-Tag header the 200 had
            if not nofollow:
                for link in info.links:
                    self.enqueue(link)
            if url == self.start or final == self.start:
                self.pending_feeds.extend(info.feeds)
            article = _build_article(text, final, info, noindex=noindex, source=self.source,
                                     content_type=content_type, unpublished=self.unpublished, terms=self.terms,
                                     via=_fetch_addresses(page, url))
            canonical = _canonical_target(article, final, self.source)
            if canonical and canonical != url:
                if canonical in self.unpublished:
                    raise SkipPage(f"its canonical {canonical} is not published", kind="not_published")
                self.defer_to_canonical(canonical, depth)
        except SkipPage as exc:
            if exc.kind == "listing":
                self.stats.listings += 1
                self.record(url, prev, error=f"{exc.kind}: {exc.message}", **state)
            else:
                self.skip(url, prev, exc, **state)
            self.say(("not modified; " if page.not_modified else "") + f"skipped ({exc.kind})", url)
            return
        article_id, outcome = self.store.save_article(article, source=self.source.name)
        checkpoint("crawl:stored")  # crash tests: killed mid-crawl, after this article was committed
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        if "html" in state["content_type"] or not state["content_type"]:
            self.store_faqs(text, article)
        self.stored.update((url, final, article.url))  # each address that led to a stored article
        self.done.add(article.url)
        self.seen.add(article.url)
        if prev and prev["article_id"] and prev["article_id"] != article_id:
            self.to_remove[prev["article_id"]] = (url, f"the page is now stored as {article.url}")
        self.record(url, prev, canonical=article.url, article_id=article_id, error="", **state)
        self.say("not modified" if page.not_modified and outcome == "unchanged" else outcome, url)

    def store_faqs(self, html: str, article: Article) -> None:
        """Store the page's question/answer pairs as kind="faq" records; drop those the page no longer has."""
        try:
            records = faq_records(html, article)
        except Exception:  # noqa: BLE001 - the page itself is stored; its FAQ entries are a bonus
            log.warning("could not extract FAQ entries of %s", article.url, exc_info=True)
            return
        keep: set[str] = set()
        for record in records:
            self.store.save_article(record, source=self.source.name)
            keep.add(record.url)
        for url, faq_id in self.store.article_ids_with_prefix(_faq_prefix(article.url)).items():
            if url not in keep:
                self.store.delete_article(faq_id)

    def defer_to_canonical(self, canonical: str, depth: int) -> None:
        """Skip a page (SkipPage "duplicate") whose canonical page is stored itself, fetching that first.

        Otherwise the page is stored under its own fetched URL, never under the canonical: an address that
        was not fetched and checked (max_pages reached, a 404) must not carry this page's text and audience.
        """
        if canonical not in self.done and depth == 0 and self.stats.pages < self.limit and self.in_scope(canonical):
            self.known.add(canonical)
            self.crawl_page(canonical, depth + 1)  # fetch the original first: it, not the copy, is stored
        if canonical in self.stored:
            raise SkipPage(f"a duplicate of its canonical page {canonical}, which is stored instead",
                           kind="duplicate")

    def skip(self, url: str, prev: dict[str, Any] | None, exc: SkipPage, **state: Any) -> None:
        self.stats.record_skip(url, exc)
        if isinstance(exc, FetchError) and exc.status:
            state["status"] = exc.status
        if not isinstance(exc, BlockedByRobots) and exc.kind not in REMOVE_KINDS:
            self.seen.add(url)  # it is there, or the server merely failed: keep what is stored
        if exc.kind in REMOVE_KINDS and prev and prev["article_id"]:
            self.to_remove[prev["article_id"]] = (url, f"{exc.kind}: {exc.message}")
        self.record(url, prev, error=f"{exc.kind}: {exc.message}", **state)

    # -- removal ---------------------------------------------------------------------------------------
    def count_misses(self) -> None:
        if self.stats.truncated:
            self.stats.messages.append("Pages not seen were not counted as missing: the crawl stopped at max_pages.")
            return
        if self.pages_ok == 0:
            self.stats.note("No page of the site could be fetched; nothing is counted as missing.")
            return
        limit = int(self.settings["REMOVE_AFTER_MISSES"])
        for row in self.store.pages_for_source(self.source.name):
            if not row["article_id"] or row["url"] in self.seen or row["canonical"] in self.seen:
                continue
            if crawl.normalize_url(row["url"]) in self.seen:  # a URL stored under an older spelling
                continue
            misses = (row["misses"] or 0) + 1
            self.store.record_page(row["url"], misses=misses, fetched_at=row["fetched_at"])
            if misses >= limit:
                self.to_remove.setdefault(row["article_id"], (
                    row["url"], f"missing from the site's sitemaps, feeds, API and links for {misses} crawls"))

    def remove(self) -> None:
        if not self.to_remove:
            return
        total = (self.store.count_articles(source=self.source.name)
                 - self.store.count_articles(source=self.source.name, kind="faq"))  # FAQ records go with their page
        share = float(self.settings["REMOVE_MAX_SHARE"])
        allowed = max(1, int(total * share))
        if len(self.to_remove) > allowed and not self.force:
            self.stats.removal_refused = len(self.to_remove)
            self.stats.note(
                f"Refused to remove {len(self.to_remove)} of {total} articles of {self.source.name}: more than "
                f"REMOVE_MAX_SHARE ({share:.0%}) in one crawl usually means the site is failing, not shrinking. "
                "Check the site; if the pages really are gone, crawl again with --force to remove them.")
            return
        rows = self.store.pages_for_source(self.source.name)
        for article_id, (url, reason) in self.to_remove.items():
            others = [r for r in rows if r["article_id"] == article_id and r["url"] != url and not r["error"]
                      and r["url"] in self.seen]
            if others:  # another live URL still serves this article (canonical duplicates)
                mine = next((r for r in rows if r["url"] == url), None)
                self.store.record_page(url, article_id=None, fetched_at=mine["fetched_at"] if mine else None)
                continue
            if self.delete_with_faqs(article_id):
                self.stats.removed += 1
                self.progress(f"removed {url} ({reason})")
                log.info("removed article %s (%s): %s", article_id, url, reason)

    def delete_with_faqs(self, article_id: int) -> bool:
        """Delete an article and the FAQ records taken from its page; False when it was already gone."""
        stored = self.store.get_raw_article(article_id)
        if not self.store.delete_article(article_id):
            return False
        if stored is not None:
            for faq_id in self.store.article_ids_with_prefix(_faq_prefix(stored.url)).values():
                self.store.delete_article(faq_id)
        return True

    # -- records stored under older rules -------------------------------------------------------------
    def audit_stored(self) -> None:
        """Bring stored records up to today's staff rules before anything is fetched (see audit_audiences)."""
        fixed = audit_audiences(self.store, self.source)
        if fixed:
            self.stats.note(f"{len(fixed)} stored record(s) of {self.source.name} made staff by the current "
                            f"staff rules (e.g. {fixed[0]}); the next index update applies it.")

    def retire_old_spellings(self) -> None:
        """Drop records kept under a URL spelling that is not the normalised one once this crawl stored the
        page under its normalised URL: a rename, not a removal, so the removal guard does not hold it up."""
        for row in self.store.pages_for_source(self.source.name):
            norm = crawl.normalize_url(row["url"])
            if norm is None or norm == row["url"] or norm not in self.stored or not row["article_id"]:
                continue
            stored = self.store.get_raw_article(row["article_id"])
            if stored is not None and stored.url not in self.stored and self.delete_with_faqs(row["article_id"]):
                self.progress(f"renamed {row['url']} to {norm}")
                log.info("article %s (%s) is now stored as %s", row["article_id"], row["url"], norm)
            self.store.record_page(row["url"], article_id=None, error=f"renamed: now crawled as {norm}",
                                   fetched_at=row["fetched_at"])

    # -- site boilerplate -------------------------------------------------------------------------------
    def refresh_boilerplate(self) -> None:
        """Relearn which paragraphs repeat across the site, now that its pages are stored and removals done.

        An unchanged set writes nothing; a changed one logs an upsert for each article whose read text changes.
        """
        sites = {*self.store.article_sites(self.source.name), self.source.host}
        for site in sorted(s for s in sites if s):
            before = self.store.last_change()
            added, dropped = self.store.refresh_boilerplate(
                site, min_share=float(self.settings["BOILERPLATE_SHARE"]),
                min_pages=int(self.settings["BOILERPLATE_MIN_PAGES"]))
            reindex = self.store.last_change() - before
            count = len(self.store.boilerplate_fingerprints(site, "public"))
            staff = len(self.store.boilerplate_fingerprints(site, "staff"))
            if count or staff or added or dropped:
                self.stats.boilerplate[site] = {"paragraphs": count, "staff_paragraphs": staff, "added": added,
                                                "dropped": dropped, "reindex": reindex}
            if added or dropped:  # two sets: public pages learn from public pages only (non-interference)
                also = f" ({staff} counting staff pages)" if staff != count else ""
                message = (f"boilerplate: {count} repeated paragraph{'s' * (count != 1)} on {site}{also} "
                           f"({added} new, {dropped} dropped), {reindex} article{'s' * (reindex != 1)} to reindex")
                self.progress(message)
                self.stats.messages.append(message)  # printed after the crawl summary and kept in the crawl log
                log.info("%s", message)

    def run(self) -> SourceCrawlStats:
        crawl_id = self.store.start_crawl(self.source.name)
        try:
            self.audit_stored()
            with Fetcher(self.settings, delay=self.source.delay) as fetcher:
                self.fetcher = fetcher
                try:
                    self.discover()
                    self.crawl_pages()
                finally:
                    self.stats.messages.extend(fetcher.notes)
            self.retire_old_spellings()
            self.count_misses()
            self.remove()
            self.refresh_boilerplate()
        finally:
            self.store.finish_crawl(crawl_id, self.stats.to_dict())
        return self.stats


def audit_audiences(store: Store, source: Source, *, force: bool = False) -> list[str]:
    """Make staff each stored record of `source` that today's rules call staff by an address that led to it
    (its URL, the page fetched for it); returns their URLs. Writes through the store's change log.

    Records stored by older rules (another spelling of a staff path, a canonical that carried a staff page
    to a public address) would otherwise stay public until their page is fetched again, which a max_pages
    limit may put off. Runs once per change of the source's staff rules (or always with `force`).
    """
    key = f"audience_rules:{source.name}"
    rules = json.dumps([AUDIENCE_RULES, source.audience, sorted(source.staff_paths)])
    if store.get_meta(key) == rules and not force:
        return []
    fixed: list[str] = []
    if store.count_articles(source=source.name, audience="public"):  # else a new source, or a staff site
        addresses: dict[int, set[str]] = {}
        for row in store.pages_for_source(source.name):
            if row["article_id"]:
                addresses.setdefault(row["article_id"], set()).update((row["url"], row["canonical"]))
        for url, article_id in store.article_ids(source.name).items():
            if source.audience_for(url, via=addresses.get(article_id, ())) != "staff":
                continue
            article = store.get_raw_article(article_id)
            if article is not None and article.audience != "staff":
                article.audience = "staff"
                store.save_article(article, source=source.name)
                fixed.append(url)
    store.set_meta(key, rules)
    return fixed


def crawl_source(source: Source, store: Store, settings: dict, *, progress: Callable[[str], None] | None = None,
                 force: bool = False) -> CrawlStats:
    """Crawl one site politely and bring the store up to date with it; the outcome goes to the crawl log.

    `force` lifts the REMOVE_MAX_SHARE guard on removals. Never raises for a page; returns a
    SourceCrawlStats (a CrawlStats with messages and the list of skips).
    """
    return _Crawl(source, store, settings, progress, force).run()


def crawl_report(store: Store, source: str | None = None, limit: int = 10) -> dict[str, Any]:
    """Recent crawls and the pages currently skipped, with reasons (for `kb crawl --report`)."""
    crawls = store.recent_crawls(limit)
    if source is not None:
        crawls = [c for c in crawls if c["source"] == source]
    problems = store.page_errors(source)
    by_kind: dict[str, int] = {}
    for row in problems:
        kind = row["error"].split(":", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {"crawls": crawls, "problems": problems, "problems_by_kind": by_kind}


def _source_for(url: str, settings: dict[str, Any]) -> Source:
    """The configured source serving `url` (for its scope and audience rules), else an ad-hoc one."""
    path = data_paths(settings["DATA_DIR"])["sources"]
    same_host: Source | None = None
    if path.is_file():
        try:
            sources = load_sources(path)
        except ConfigError as exc:
            log.warning("ignoring %s in explain: %s", path, exc)
            sources = []
        for source in sources:
            if crawl.same_host(url, crawl.normalize_url(source.url) or source.url):
                if crawl.in_scope(url, source):
                    return source
                same_host = same_host or source
    return same_host or source_from_url(crawl.site_root(url))


def stripped_paragraphs(article: Article, store: Store) -> list[str]:
    """The paragraphs of `article` that reading it from `store` would strip as its site's boilerplate.

    Nothing when no paragraph repeats or when nothing would be left (the store's rule, applied by the store).
    """
    stripped = store.strip_site_boilerplate(article)
    if stripped is article:
        return []
    kept = Counter(paragraphs(stripped.text))
    out = []
    for para in paragraphs(article.text):
        if kept[para]:
            kept[para] -= 1
        else:
            out.append(para)
    return out


def explain(url: str, settings: dict, store: Store | None = None) -> dict:
    """Fetch one page (obeying robots.txt) and say what a crawl would store for it, or why nothing.

    Writes nothing. Keys: url, canonical, title, text, sections, published, modified, author, categories,
    tags, skipped (None or the reason), plus skip_kind, link_canonicals (the HTTP Link header's, counted for the
    audience), final_url, status, source, audience, notes,
    stored (None, or {"id", "up_to_date"} when `store` holds the article), disclaimer (the page carries a
    medical disclaimer) and boilerplate (paragraphs stripped on read, given the store's set for the site).
    """
    out: dict[str, Any] = {
        "url": url, "canonical": "", "title": "", "text": "", "sections": [], "published": None, "modified": None,
        "author": "", "categories": [], "tags": [], "skipped": None, "skip_kind": None, "final_url": None,
        "status": None, "source": None, "audience": None, "stored": None, "notes": [],
        "boilerplate": [], "disclaimer": False, "link_canonicals": [],
    }
    norm = crawl.normalize_url(url)
    if norm is None:
        out.update(skipped="not an http(s) address", skip_kind="bad_url")
        return out
    out["url"] = norm
    source = _source_for(norm, settings)
    out["source"] = source.name
    problem = crawl.scope_problem(norm, source)
    if problem:
        out.update(skipped=f"a crawl of {source.name} would not fetch it: {problem}", skip_kind="out_of_scope")
        return out
    token = robot_token(settings["USER_AGENT"])
    try:
        with Fetcher(settings, delay=source.delay) as fetcher:
            page = fetcher.fetch(norm, scope=partial(_hop_allowed, fetcher, partial(crawl.in_scope, source=source)))
        out.update(final_url=page.url, status=page.status)
        content_type = page.headers.get("content-type", "")
        text = decode_html(page.content, content_type, strict=True)
        final = crawl.normalize_url(page.url) or norm
        info = crawl.parse_html(text, final, token)
        noindex, _ = _directives(info, page.headers, token)
        via = _fetch_addresses(page, norm)
        out["link_canonicals"] = _header_canonicals(page)
        out["notes"].extend(f"canonical from the HTTP Link header: {u}" for u in out["link_canonicals"])
        article = _build_article(text, final, info, noindex=noindex, source=source, content_type=content_type,
                                 via=via)
        target = _canonical_target(article, final, source)
        if target:  # the page names its original: a crawl stores that page (fetched itself) and skips this copy
            _finish_article(article, target, final, source, None, via)
    except SkipPage as exc:
        out.update(skipped=exc.message, skip_kind=exc.kind)
        return out
    out.update(
        canonical=article.url, title=article.title, text=article.text,
        sections=[{"heading": s.heading, "anchor": s.anchor, "text": s.text} for s in article.sections],
        published=article.published, modified=article.modified, author=article.author,
        categories=article.categories, tags=article.tags, audience=article.audience,
        disclaimer=article.disclaimer,
    )
    if store is not None:
        out["boilerplate"] = stripped_paragraphs(article, store)
        stored = store.get_raw_article(url=article.url)  # as stored: the hash covers the unstripped text
        if stored is not None:
            if (not article.categories and stored.categories) or (not article.tags and stored.tags):
                # The crawl took these from the WordPress REST API, which explain does not query.
                terms = {article.url: (stored.categories, stored.tags)}
                _finish_article(article, article.url, final, source, terms, via)
                out.update(categories=article.categories, tags=article.tags, audience=article.audience)
                out["notes"].append("categories/tags from the WordPress REST API as of the last crawl")
            out["stored"] = {"id": stored.id, "up_to_date": stored.content_hash == article.content_hash}
    return out
