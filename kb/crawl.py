"""Which URLs a crawl visits next: URL normalisation, scope rules and link discovery.

Everything here is pure (bytes or str in, lists out; trafilatura-style `parse_*` apart from fetching), so
each rule is tested without a network. Discovery sources, in the order the pipeline uses them:
sitemaps (urlset, sitemapindex, WordPress wp-sitemap.xml, text, gzip), the WordPress REST API,
RSS/Atom feeds (WordPress `?paged=N`), and finally links in HTML pages.
"""

from __future__ import annotations

import gzip
import html as html_lib
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import lxml.html
from lxml import etree

from kb.errors import SkipPage
from kb.extract.tree import check_markup
from kb.sources import Source, lenient_reading, normalize_path, path_readings, server_paths

log = logging.getLogger(__name__)

MAX_SITEMAPS = 50  # sitemap files read per crawl (an index nesting more is a bomb, not a site)
MAX_SITEMAP_URLS = 50_000  # URLs taken from all sitemaps together (the sitemaps.org per-file limit)
MAX_FEED_PAGES = 50  # ?paged=N pages of one feed
MAX_REST_PAGES = 100  # ?page=N pages of one REST collection (100 items each)
MAX_PAGE_LINKS = 10_000  # distinct links taken from one page (a real page has a few hundred)

TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "mc_cid", "mc_eid", "_ga", "_gl",
    "igshid", "mkt_tok", "_hsenc", "_hsmi", "hsctatracking", "ref_src", "spm", "oly_anon_id", "oly_enc_id",
    "vero_id", "wickedid", "twclid", "ttclid", "srsltid",
})
# Query keys that produce endless or duplicate pages on WordPress sites (search, comment replies, share buttons).
NOISE_QUERY_KEYS = frozenset({"replytocom", "share", "s", "preview", "doing_wp_cron", "amp", "like_comment",
                              "print", "output"})
NON_HTML_EXTENSIONS = frozenset("""
    7z aac ai apk avi avif bin bmp bz2 csv dmg doc docm docx dot dotx eot eps epub exe flac flv gif gz heic ico ics
    iso jar jpeg jpg js json m4a m4v mid mov mp3 mp4 mpeg mpg msi odp ods odt oga ogg ogv otf pdf png pps ppt pptx
    ps psd rar rss rtf svg svgz swf tar tgz tif tiff ttf txt wav webm webp wma wmv woff woff2 xls xlsm xlsx xml xz
    zip css map
""".split())
# WordPress machinery that is never an article.
WORDPRESS_PATHS = ("/wp-admin", "/wp-login.php", "/wp-json", "/xmlrpc.php", "/wp-content/", "/wp-includes/",
                   "/wp-cron.php", "/wp-signup.php", "/wp-trackback.php")
_FEED_PATH = re.compile(r"/(feed|rss2?|atom|rdf|trackback|embed)(/|$)|/comments/feed", re.I)
_LISTING_PATH = re.compile(
    r"^(?:.*/)?(?:category|tag|author)(?:/[^/]+)+/?$"  # taxonomy and author archives
    r"|/page/\d+/?$"  # paginated home or archive
    r"|^/\d{4}/(?:\d{2}/(?:\d{2}/)?)?$",  # date archives (/2024/, /2024/05/, /2024/05/10/)
    re.I,
)


@dataclass
class Link:
    """A URL found by discovery and when it last changed (ISO 8601, when the listing says)."""

    url: str
    modified: str | None = None


@dataclass
class Sitemap:
    """One parsed sitemap file: page links (urlset) and child sitemaps (sitemapindex)."""

    links: list[Link] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass
class HtmlInfo:
    """What the crawler needs from a page: its links, robots directives, canonical and feeds."""

    links: list[str] = field(default_factory=list)
    noindex: bool = False
    nofollow: bool = False
    canonical: str | None = None
    feeds: list[str] = field(default_factory=list)
    api_root: str | None = None  # WordPress REST root from <link rel="https://api.w.org/">


@dataclass
class RestItem:
    """One post or page from the WordPress REST API."""

    url: str
    modified: str | None
    status: str
    protected: bool
    categories: list[int] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)

    @property
    def publishable(self) -> bool:
        return self.status == "publish" and not self.protected


# -- URLs and scope ------------------------------------------------------------------------------------------

def normalize_url(url: str, base: str | None = None) -> str | None:
    """The one identity of a page, decided before any scope, robots, audience or storage decision.

    RFC 3986 section 6.2.2 syntax-based normalisation (lower-case scheme and host, upper-case escapes,
    unreserved characters decoded, dot segments removed, "%2e" ones included; through yarl), repeated
    slashes collapsed, no default port, user info, fragment or tracking parameters, sorted query.
    "%2F" stays encoded: it names another resource. None for anything that is not an http(s) URL.
    """
    if not isinstance(url, str):
        return None
    url = url.strip().replace("\\", "/")
    if not url or url.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
        return None
    try:
        if base:
            url = urljoin(base, url)
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    query = ""
    if parts.query:
        pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k.lower() not in TRACKING_PARAMS and not k.lower().startswith("utm_")]
        query = urlencode(sorted(pairs))
    return urlunsplit((scheme, netloc, normalize_path(parts.path), query, ""))


_LINK_VALUE = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def link_header_canonicals(value: str, base: str) -> list[str]:
    """Every rel="canonical" target of an HTTP `Link` header (RFC 8288), normalised against `base`: each one
    counts for the audience like the HTML canonical, so all are kept, not only the first."""
    found: list[str] = []
    for match in _LINK_VALUE.finditer(value or ""):
        rels = " ".join(a or b for a, b in _REL.findall(match.group(2))).lower().split()
        if "canonical" in rels:
            url = normalize_url(match.group(1).strip(), base)
            if url:
                found.append(url)
    return dedupe(found)


def robots_urls(url: str) -> list[str]:
    """What robots.txt is asked about for a normalised URL: the URL, then each other path a lenient server
    may route it to ("/private%2Fx" and "/private;s=1/x" are "/private/x" there; "/%EF%BC%8Fprivate/x", a
    fullwidth slash, is "/private/x" to a server that folds Unicode); one Disallow stops all."""
    parts = urlsplit(url)
    folded = {quote(form, safe="/") for form in lenient_reading(parts.path).forms}
    others = sorted((server_paths(parts.path) | folded) - {parts.path})
    return [url, *(urlunsplit(parts._replace(path=path)) for path in others)]


def _netloc(url: str) -> str:
    return urlsplit(url).netloc


def same_host(url: str, other: str) -> bool:
    """Whether two normalised URLs are on the same host (and port); http and https count as the same site."""
    return _netloc(url) == _netloc(other)


def scope_problem(url: str, source: Source) -> str | None:
    """Why the crawl of `source` must not fetch `url` as a page, or None when it may."""
    norm = normalize_url(url)
    if norm is None:
        return "not an http(s) address"
    start = normalize_url(source.url) or source.url
    if not same_host(norm, start):
        return f"on another host ({_netloc(norm)})"
    parts = urlsplit(norm)
    path = parts.path
    if not source.included(path):
        return f"outside the included paths ({', '.join(source.include)})"
    prefix = source.excluded(path)
    if prefix is not None:
        return f"excluded by the source's exclude {prefix!r}"
    last = path.rsplit("/", 1)[-1]
    if "." in last:
        ext = last.rsplit(".", 1)[-1].lower()
        if ext in NON_HTML_EXTENSIONS:
            return f"not an HTML page (.{ext})"
    if any(form.startswith(WORDPRESS_PATHS) or _FEED_PATH.search(form) for form in path_readings(path)):
        return "a WordPress admin, API or feed address, not an article"
    keys = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    noisy = keys & NOISE_QUERY_KEYS
    if noisy:
        return f"a search, share or comment-reply link (?{sorted(noisy)[0]}=)"
    return None


def in_scope(url: str, source: Source) -> bool:
    """Whether the crawl of `source` may fetch `url` as a page."""
    return scope_problem(url, source) is None


def is_listing(url: str) -> bool:
    """WordPress archive pages (category, tag, author, date, /page/N/): followed for links, never stored."""
    path = urlsplit(url).path or "/"
    return bool(_LISTING_PATH.search(path))


def site_root(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


# -- dates ---------------------------------------------------------------------------------------------------

def iso_date(value: Any) -> str | None:
    """An ISO 8601 UTC timestamp from a sitemap/REST string or a feedparser struct_time; None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, time.struct_time):
        try:
            return datetime(*value[:6], tzinfo=timezone.utc).isoformat(timespec="seconds")
        except ValueError:
            return None
    text = str(value).strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


# -- sitemaps ------------------------------------------------------------------------------------------------

def _xml_parser() -> etree.XMLParser:
    """An XML parser that cannot be turned against us: no entities, no DTD, no network, no huge trees."""
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                           remove_comments=True, remove_pis=True)


def _gunzip(content: bytes, max_bytes: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as fh:
            data = fh.read(max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise SkipPage(f"the gzip-compressed sitemap is damaged ({exc})", kind="bad_sitemap") from None
    if len(data) > max_bytes:
        raise SkipPage(f"the gzip-compressed sitemap unpacks to more than {max_bytes:,} bytes; ignored",
                       kind="too_large")
    return data


def _local(tag: Any) -> str:
    return etree.QName(tag).localname.lower() if isinstance(tag, str) else ""


def parse_sitemap(content: bytes, base_url: str, *, max_urls: int = MAX_SITEMAP_URLS,
                  max_bytes: int = 50_000_000) -> Sitemap:
    """Page links and child sitemaps of one sitemap file (XML urlset/sitemapindex, gzip, or plain text).

    Raises SkipPage(kind="bad_sitemap") for anything that is not a readable sitemap (including XML bombs).
    """
    if content[:2] == b"\x1f\x8b":
        content = _gunzip(content, max_bytes)
    result = Sitemap()
    head = content.lstrip()[:1]
    if head and head != b"<":  # sitemaps.org text format: one URL per line
        for line in content.decode("utf-8", "replace").splitlines():
            url = normalize_url(line.strip(), base_url) if line.strip().lower().startswith("http") else None
            if url:
                if len(result.links) >= max_urls:
                    result.truncated = True
                    break
                result.links.append(Link(url))
        if not result.links:
            raise SkipPage("not a sitemap: neither XML nor a list of URLs", kind="bad_sitemap")
        return result
    try:
        root = etree.fromstring(content, _xml_parser())
    except etree.XMLSyntaxError as exc:
        raise SkipPage(f"the sitemap is not well-formed XML ({exc})", kind="bad_sitemap") from None
    if root is None:
        raise SkipPage("the sitemap is empty", kind="bad_sitemap")
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise SkipPage(f"not a sitemap (root element <{kind or '?'}>)", kind="bad_sitemap")
    child_tag = "url" if kind == "urlset" else "sitemap"
    for entry in root:
        if _local(entry.tag) != child_tag:
            continue
        loc = modified = None
        for part in entry:
            name = _local(part.tag)
            if name == "loc" and part.text:
                loc = part.text.strip()
            elif name == "lastmod" and part.text:
                modified = iso_date(part.text)
        url = normalize_url(loc, base_url) if loc else None
        if not url:
            continue
        if kind == "sitemapindex":
            result.sitemaps.append(url)
        else:
            if len(result.links) >= max_urls:
                result.truncated = True
                break
            result.links.append(Link(url, modified))
    return result


# -- feeds -------------------------------------------------------------------------------------------------

_DOCTYPE_SUBSET = re.compile(rb"<!DOCTYPE[^\[>]*\[.*?\]\s*>", re.S | re.I)


def parse_feed(content: bytes, base_url: str) -> list[Link]:
    """Entry links (with modified dates) of an RSS or Atom feed; [] for a valid feed with no entries.

    Raises SkipPage(kind="bad_feed") when the body is not a feed at all. Inline DTDs are dropped first
    so entity expansion cannot blow up memory.
    """
    head = content[:65_536]
    if b"<!DOCTYPE" in head.upper() or b"<!doctype" in head:
        content = _DOCTYPE_SUBSET.sub(b"", head, count=1) + content[65_536:]
    parsed = feedparser.parse(content)
    entries = dict.get(parsed, "entries") or []
    bozo = dict.get(parsed, "bozo")
    if not entries and (bozo or not dict.get(parsed, "version")):
        problem = dict.get(parsed, "bozo_exception") if bozo else "no RSS or Atom root element"
        raise SkipPage(f"not a readable RSS/Atom feed ({problem})", kind="bad_feed")
    links: list[Link] = []
    for entry in entries:
        href = dict.get(entry, "link")  # dict.get: feedparser's own get() warns about legacy key mapping
        if not href:
            for link in dict.get(entry, "links") or []:
                if link.get("rel", "alternate") == "alternate" and link.get("href"):
                    href = link["href"]
                    break
        url = normalize_url(href, base_url) if href else None
        if url:
            modified = dict.get(entry, "updated_parsed") or dict.get(entry, "published_parsed")
            links.append(Link(url, iso_date(modified)))
    if bozo and not links:
        raise SkipPage(f"not a readable RSS/Atom feed ({dict.get(parsed, 'bozo_exception')}; no entry has a link)",
                       kind="bad_feed")
    if bozo:
        log.info("feed %s is malformed (%s); using its %d readable entries", base_url,
                 dict.get(parsed, "bozo_exception"), len(links))
    return links


def feed_page_url(feed_url: str, page: int) -> str:
    """WordPress feed pagination: page 1 is the feed itself, page N adds `paged=N`."""
    if page <= 1:
        return feed_url
    parts = urlsplit(feed_url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "paged"]
    pairs.append(("paged", str(page)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(sorted(pairs)), ""))


def feed_candidates(source: Source) -> list[str]:
    """Where WordPress keeps the main feed of a site: `/feed/` at the root and under the start path."""
    root = site_root(source.url)
    found = [urljoin(root, "feed/")]
    start = urlsplit(source.url).path or "/"
    if start != "/":
        base = start if start.endswith("/") else start.rsplit("/", 1)[0] + "/"
        if base != "/":
            found.append(urljoin(root, base.lstrip("/") + "feed/"))
    return found


# -- WordPress REST API ----------------------------------------------------------------------------------------

REST_FIELDS = "id,link,modified_gmt,status,categories,tags,content.protected"


def wp_api_roots(source: Source) -> list[str]:
    """Candidate REST roots: `/wp-json/` at the site root and under the start path (WordPress in a folder)."""
    root = site_root(source.url)
    found = [urljoin(root, "wp-json/")]
    start = urlsplit(source.url).path or "/"
    base = start if start.endswith("/") else start.rsplit("/", 1)[0] + "/"
    if base != "/":
        found.append(urljoin(root, base.lstrip("/") + "wp-json/"))
    return found


def wp_api_url(api_root: str, endpoint: str, page: int, *, fields: str | None = REST_FIELDS) -> str:
    """`/wp-json/wp/v2/<endpoint>?per_page=100&page=N` (only the fields discovery needs)."""
    query = {"per_page": "100", "page": str(page)}
    if fields:
        query["_fields"] = fields
    return urljoin(api_root, f"wp/v2/{endpoint}") + "?" + urlencode(sorted(query.items()))


def _json(content: bytes, what: str) -> Any:
    try:
        return json.loads(content.decode("utf-8-sig", errors="replace"))
    except (ValueError, RecursionError) as exc:
        raise SkipPage(f"the WordPress REST answer ({what}) is not valid JSON ({exc})", kind="bad_rest") from None


def parse_wp_items(content: bytes, base_url: str) -> list[RestItem]:
    """Posts or pages of one REST answer; raises SkipPage(kind="bad_rest") when it is not such a list."""
    data = _json(content, "posts")
    if not isinstance(data, list):
        code = data.get("code") if isinstance(data, dict) else None
        raise SkipPage(f"the WordPress REST answer is not a list of posts ({code or type(data).__name__})",
                       kind="bad_rest")
    items: list[RestItem] = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        url = normalize_url(entry.get("link") or "", base_url)
        if not url:
            continue
        content_field = entry.get("content")
        protected = bool(content_field.get("protected")) if isinstance(content_field, dict) else False
        modified = entry.get("modified_gmt")
        items.append(RestItem(
            url=url,
            modified=iso_date(modified + "Z" if isinstance(modified, str) and modified else None),
            status=str(entry.get("status") or "publish"),
            protected=protected,
            categories=[i for i in entry.get("categories") or [] if isinstance(i, int)],
            tags=[i for i in entry.get("tags") or [] if isinstance(i, int)],
        ))
    return items


def parse_wp_terms(content: bytes) -> dict[int, str]:
    """id -> name of REST categories or tags (HTML entities in names decoded)."""
    data = _json(content, "terms")
    if not isinstance(data, list):
        raise SkipPage("the WordPress REST answer is not a list of terms", kind="bad_rest")
    terms: dict[int, str] = {}
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("name"), str):
            terms[entry["id"]] = html_lib.unescape(entry["name"]).strip()
    return terms


def wp_total_pages(headers: dict[str, str]) -> int | None:
    value = headers.get("x-wp-totalpages", "").strip()
    return int(value) if value.isdigit() else None


# -- HTML ------------------------------------------------------------------------------------------------------

_DIRECTIVES = {"all", "noindex", "nofollow", "none", "index", "follow", "noarchive", "nosnippet", "notranslate",
               "noimageindex", "noodp", "noydir", "indexifembedded", "max-snippet", "max-image-preview",
               "max-video-preview", "unavailable_after"}


def robots_directives(value: str, robot_token: str = "kb") -> set[str]:
    """Directives of a meta robots content or an X-Robots-Tag header that apply to us.

    `X-Robots-Tag: googlebot: noindex` applies to Googlebot only; unprefixed directives apply to everyone.
    "none" means noindex and nofollow.
    """
    found: set[str] = set()
    agent: str | None = None
    for token in (value or "").split(","):
        token = token.strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*:\s*(.*)$", token)
        if match and match.group(1).lower() not in _DIRECTIVES:
            agent, token = match.group(1).lower(), match.group(2).strip()
        directive = token.split(":", 1)[0].strip().lower()
        if not directive or (agent is not None and agent != robot_token.lower()):
            continue
        if directive == "none":
            found |= {"noindex", "nofollow"}
        else:
            found.add(directive)
    return found


def parse_html(html: str | bytes, base_url: str, robot_token: str = "kb") -> HtmlInfo:
    """Links (normalised, in page order), meta robots, canonical and feed links of a page.

    rel="nofollow" on single links is ignored (it concerns ranking, not crawling); meta robots nofollow
    turns off link discovery for the whole page. Raises SkipPage(kind="hostile_markup") for markup that would
    take the parser minutes (kb.extract.tree.check_markup).
    """
    info = HtmlInfo()
    data = html.encode("utf-8", "replace") if isinstance(html, str) else html
    if not data.strip():
        return info
    check_markup(html if isinstance(html, str) else data.decode("latin-1"))  # latin-1: keeps every "<" and ">"
    parser = lxml.html.HTMLParser(encoding="utf-8" if isinstance(html, str) else None, remove_comments=True)
    try:
        doc = lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError):
        return info
    base = base_url
    for el in doc.iter("base"):
        href = el.get("href")
        if href:
            base = urljoin(base_url, href.strip())
        break
    token = robot_token.lower()
    for el in doc.iter("meta"):
        name = (el.get("name") or "").strip().lower()
        if name in ("robots", token):
            directives = robots_directives(el.get("content") or "", token)
            info.noindex |= "noindex" in directives
            info.nofollow |= "nofollow" in directives
    for el in doc.iter("link"):
        rels = {r.lower() for r in (el.get("rel") or "").split()}
        href = (el.get("href") or "").strip()
        if not href:
            continue
        if "canonical" in rels and info.canonical is None:
            info.canonical = normalize_url(href, base)
        elif "alternate" in rels and (el.get("type") or "").lower() in ("application/rss+xml",
                                                                       "application/atom+xml"):
            url = normalize_url(href, base)
            if url and "comments" not in urlsplit(url).path.lower() and url not in info.feeds:
                info.feeds.append(url)
        elif "https://api.w.org/" in rels:
            info.api_root = normalize_url(href, base)
    seen: set[str] = set()
    for el in doc.iter("a", "area"):
        href = el.get("href")
        url = normalize_url(href, base) if href else None
        if url and url not in seen:
            seen.add(url)
            info.links.append(url)
            if len(info.links) >= MAX_PAGE_LINKS:
                log.info("kept the first %d links of %s", MAX_PAGE_LINKS, base_url)
                break
    return info


def dedupe(urls: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return [u for u in urls if not (u in seen or seen.add(u))]
