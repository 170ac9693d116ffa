"""A real WordPress-like web site on 127.0.0.1 for crawler tests (and a second host that must stay untouched).

`site.pages[path] = (status, headers, body)` changes a page between crawls; `body` may be bytes, str, or a
callable `body(site, handler) -> (status, headers, body-or-iterator)` for dynamic answers. Keys are matched
with the query string first ("/feed/?paged=2"), then without it; keys ending in "*" match a prefix.
Every request is recorded in `site.requests` as (time.monotonic(), method, path, headers).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
HTML = "text/html; charset=utf-8"

Body = bytes | str | Callable[..., Any]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.0"  # one request per connection: simple and honest about closing

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        site = self.server.site
        headers = {k.lower(): v for k, v in self.headers.items()}
        with site.lock:
            site.requests.append((time.monotonic(), "GET", self.path, headers))
        try:
            self._answer(site, headers)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (size limit, timeout): exactly what some tests want

    def _answer(self, site: "FixtureSite", headers: dict[str, str]) -> None:
        route = site.route(self.path)
        if route is None:
            status, rheaders, body = 404, {"Content-Type": HTML}, "<html><body><h1>Not found</h1></body></html>"
        else:
            status, rheaders, body = route
        if callable(body):
            status, rheaders, body = body(site, self)
        rheaders = dict(rheaders)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if isinstance(body, bytes):
            if status == 200 and site.conditional:
                etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                rheaders.setdefault("ETag", etag)
                rheaders.setdefault("Last-Modified", LAST_MODIFIED)
                inm = headers.get("if-none-match")
                ims = headers.get("if-modified-since")
                if (inm is not None and inm == rheaders["ETag"]) or (inm is None and ims == rheaders["Last-Modified"]):
                    self.send_response(304)
                    self.send_header("ETag", rheaders["ETag"])
                    self.end_headers()
                    return
            rheaders.setdefault("Content-Length", str(len(body)))
            self.send_response(status)
            for name, value in rheaders.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(status)  # a streamed body: chunks until done or the client hangs up
        for name, value in rheaders.items():
            self.send_header(name, value)
        self.end_headers()
        for chunk in body:
            self.wfile.write(chunk)
            with site.lock:
                site.bytes_sent[self.path] += len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: "FixtureSite"

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet
        pass


class FixtureSite:
    """A running server plus the pages it serves; see the module docstring."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, dict[str, str], Body]] = {}
        self.requests: list[tuple[float, str, str, dict[str, str]]] = []
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.counters: dict[str, int] = defaultdict(int)
        self.crawl_delay: float | None = None
        self.conditional = True
        self.other: FixtureSite | None = None  # the second host of the `site` fixture
        self.rest_posts: set[str] = set()  # post paths the REST API lists as published
        self.rest_extra: list[dict[str, Any]] = []  # more REST posts (tests add unlinked ones)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.site = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # -- routes ------------------------------------------------------------------------------------------
    def route(self, path: str) -> tuple[int, dict[str, str], Body] | None:
        with self.lock:
            if path in self.pages:
                return self.pages[path]
            bare = urlsplit(path).path
            if bare in self.pages:
                return self.pages[bare]
            for key, value in self.pages.items():
                if key.endswith("*") and path.startswith(key[:-1]):
                    return value
        return None

    def set(self, path: str, body: Body, status: int = 200, headers: dict[str, str] | None = None,
            content_type: str = HTML) -> None:
        self.pages[path] = (status, {"Content-Type": content_type, **(headers or {})}, body)

    def remove(self, path: str) -> None:
        """The page is gone: the server answers 404 from now on."""
        self.pages.pop(path, None)

    def hits(self, path: str) -> list[tuple[float, str, str, dict[str, str]]]:
        """Requests for `path` (with or without its query string)."""
        with self.lock:
            return [r for r in self.requests if r[2] == path or urlsplit(r[2]).path == path]

    def paths(self) -> list[str]:
        with self.lock:
            return [r[2] for r in self.requests]

    def abs(self, path: str) -> str:
        return self.url + path


# -- the default content: a small dermatology blog on WordPress -------------------------------------------

POSTS = [
    # path, title, date, category ids, tag ids, shown category names (None: theme shows none)
    ("/2024/01/rosacea-vbeam/", "Treating rosacea redness with VBeam", "2024-01-10", [1], [10, 11], ["Lasers"]),
    ("/2024/02/acne-scars/", "Acne scars: what actually helps", "2024-02-12", [2], [12], ["Acne"]),
    ("/2024/03/laser-safety-protocol/", "Laser safety protocol for clinic staff", "2024-03-05", [3], [], None),
]
PAGES = [
    ("/sebaceous-glands/", "Sebaceous glands", "2023-11-01"),
    ("/vbeam/", "VBeam pulsed dye laser", "2023-12-01"),
]
CATEGORIES = {1: "Lasers", 2: "Acne", 3: "Staff Protocols"}
TAGS = {10: "rosacea", 11: "vbeam", 12: "acne scars"}

PARAGRAPHS = {
    "/2024/01/rosacea-vbeam/": [
        ("", "Rosacea causes persistent facial redness, visible blood vessels and flushing. The pulsed dye "
             "laser, best known as VBeam, targets oxyhaemoglobin in the small vessels of the skin, so the "
             "redness fades over a series of treatments without harming the surrounding tissue."),
        ("Who benefits", "Patients with erythematotelangiectatic rosacea respond best, while papulopustular "
                         "rosacea usually needs medical treatment first, such as topical ivermectin or "
                         "azelaic acid, before laser sessions are planned."),
        ("What to expect", "Most patients need three to five sessions a month apart. Mild swelling and "
                           "redness last a day or two; purpura is rare with modern settings and cooling."),
    ],
    "/2024/02/acne-scars/": [
        ("", "Acne scars come in several shapes: ice-pick, boxcar and rolling scars each respond to "
             "different treatments, so a careful assessment comes before any plan is made."),
        ("Resurfacing", "Fractional CO2 laser resurfacing remodels collagen in atrophic scars, and several "
                        "sessions give a gradual, lasting improvement in texture for most patients."),
        ("Subcision and fillers", "Rolling scars tethered to deeper tissue improve after subcision, and "
                                  "hyaluronic acid fillers can lift depressed areas for many months."),
    ],
    "/2024/03/laser-safety-protocol/": [
        ("", "Before every laser treatment, staff confirm the device settings, check protective eyewear for "
             "the correct wavelength and record the patient's skin type in the treatment log."),
        ("Eyewear", "Each wavelength needs its own optical density rating; never swap goggles between the "
                    "pulsed dye laser and the alexandrite laser rooms during a clinic session."),
    ],
    "/sebaceous-glands/": [
        ("", "Sebaceous glands are small glands in the skin that release sebum, an oily mixture of lipids "
             "that keeps the skin and hair supple. They are most numerous on the face and scalp."),
        ("Sebaceous hyperplasia", "Enlarged sebaceous glands appear as soft yellowish bumps with a central "
                                  "dimple, common on the forehead of older adults and harmless."),
        ("Role in acne", "Androgens enlarge the glands at puberty; more sebum and blocked follicles allow "
                         "Cutibacterium acnes to thrive, which starts the inflammation of acne."),
    ],
    "/vbeam/": [
        ("", "VBeam is a pulsed dye laser emitting yellow light at 595 nm. It treats vascular lesions such as "
             "port-wine stains, spider veins and the redness of rosacea with very little downtime."),
        ("Sessions", "A session lasts fifteen to thirty minutes. A cooling spray protects the surface of "
                     "the skin, and most patients describe the pulses as a rubber band snap."),
    ],
    "/staff/handbook/": [
        ("", "This handbook explains how the clinic schedules laser rooms, records consent and reports "
             "adverse events. Every new member of staff reads it during their first week."),
    ],
    "/noindex-page/": [("", "This thank-you page is shown after a booking and must never be indexed by any "
                            "search engine, because it only repeats the booking confirmation text.")],
    "/x-robots-page/": [("", "This printable price list is excluded by an X-Robots-Tag header, because the "
                             "prices change every season and old copies confuse patients who find them.")],
    "/2024/04/draft-post/": [("", "This draft about tranexamic acid for melasma is not finished and must not "
                                  "be published or indexed until the medical review has been completed.")],
    "/2024/04/members-only/": [("", "This password-protected post is for members only and must stay out of "
                                    "the knowledge base, whatever the HTML page happens to show to crawlers.")],
}


def _article_html(site: FixtureSite, path: str, title: str, *, date: str = "2024-01-01",
                  categories: list[str] | None = None, links: Iterable[str] = (), head: str = "",
                  canonical: str | None = None) -> str:
    sections = []
    for i, (heading, text) in enumerate(PARAGRAPHS.get(path, [("", f"{title} is described here in enough "
                                                               "words to be a real article of the blog, "
                                                               "with several sentences of useful text.")])):
        if heading:
            anchor = heading.lower().replace(" ", "-")
            sections.append(f'<h2 id="{anchor}">{heading}</h2>')
        sections.append(f"<p>{text}</p>")
    cats = "".join(f'<a href="/category/{c.lower().replace(" ", "-")}/" rel="category tag">{c}</a>'
                   for c in categories or [])
    footer = f'<footer class="entry-footer"><span class="cat-links">{cats}</span></footer>' if cats else ""
    more = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – Derm Clinic Blog</title>
<link rel="canonical" href="{canonical or site.abs(path)}">
<link rel="alternate" type="application/rss+xml" title="Derm Clinic Blog » Feed" href="{site.abs('/feed/')}">
<link rel="alternate" type="application/rss+xml" title="Comments Feed" href="{site.abs('/comments/feed/')}">
<meta property="article:published_time" content="{date}T09:00:00+00:00">
{head}</head>
<body class="post-template-default single">
<header class="site-header"><nav class="main-navigation"><ul>
<li><a href="/">Home</a></li><li><a href="/sebaceous-glands/">Sebaceous glands</a></li>
<li><a href="/vbeam/">VBeam</a></li><li><a href="/category/lasers/">Lasers</a></li></ul></nav></header>
<main id="main" class="site-main"><article class="post type-post status-publish">
<header class="entry-header"><h1 class="entry-title">{title}</h1>
<div class="entry-meta"><time class="entry-date published" datetime="{date}T09:00:00+00:00">{date}</time>
<span class="byline">by <span class="author vcard"><a class="url fn n" href="/author/dr-lee/">Dr Lee</a></span></span>
</div></header>
<div class="entry-content">{''.join(sections)}</div>
{footer}</article>
<aside class="related"><ul>{more}</ul></aside></main>
<footer class="site-footer"><p>© Derm Clinic</p></footer></body></html>"""


def _home(site: FixtureSite, edge: bool) -> str:
    links = [p for p, *_ in POSTS] + [p for p, *_ in PAGES] + [
        "/staff/handbook/", "/noindex-page/", "/x-robots-page/", "/rosacea-print/", "/2024/04/draft-post/",
        "/2024/04/members-only/", "/category/lasers/", "/private/secret-notes/",
        "/wp-content/uploads/rosacea-leaflet.pdf", f"{site.other.url}/should-never-be-requested/",
        "http://example.invalid/nope/", "mailto:info@example.org", "/feed/", "/wp-admin/",
        "/?s=rosacea", "/2024/01/rosacea-vbeam/?utm_source=newsletter#comments",
    ]
    if edge:
        links.append("/edge/")
    items = "".join(f'<li><a href="{href}">Link {i}</a></li>' for i, href in enumerate(links))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Derm Clinic Blog</title>
<link rel="alternate" type="application/rss+xml" href="{site.abs('/feed/')}">
<link rel="https://api.w.org/" href="{site.abs('/wp-json/')}"></head>
<body class="home blog"><main><h1>Derm Clinic Blog</h1><ul>{items}</ul></main></body></html>"""


def _robots(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], str]:
    lines = ["User-agent: *", "Disallow: /private/", "Disallow: /wp-admin/", "Allow: /wp-admin/admin-ajax.php"]
    if site.crawl_delay is not None:
        lines.append(f"Crawl-delay: {site.crawl_delay}")
    lines += ["", "User-agent: evilbot", "Disallow: /", "", f"Sitemap: {site.abs('/sitemap_index.xml')}", ""]
    return 200, {"Content-Type": "text/plain"}, "\n".join(lines)


def _urlset(site: FixtureSite, entries: Iterable[tuple[str, str]]) -> str:
    urls = "".join(f"<url><loc>{site.abs(p)}</loc><lastmod>{d}T09:00:00+00:00</lastmod></url>" for p, d in entries)
    return ('<?xml version="1.0" encoding="UTF-8"?><?xml-stylesheet type="text/xsl" href="/sitemap.xsl"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>')


def _rss(site: FixtureSite, entries: Iterable[tuple[str, str, str]]) -> str:
    items = "".join(
        f"<item><title>{t}</title><link>{site.abs(p)}</link>"
        f"<pubDate>{time.strftime('%a, %d %b %Y 09:00:00 +0000', time.strptime(d, '%Y-%m-%d'))}</pubDate></item>"
        for p, t, d in entries)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Derm Clinic Blog</title>'
            f"<link>{site.url}/</link><description>Skin health</description>{items}</channel></rss>")


def _rest_posts(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], str]:
    query = parse_qs(urlsplit(handler.path).query)
    number = int(query.get("page", ["1"])[0])
    published = [
        {"id": i + 1, "link": site.abs(p), "modified_gmt": f"{d}T09:00:00", "status": "publish",
         "categories": cats, "tags": tags, "content": {"protected": False}}
        for i, (p, _t, d, cats, tags, _shown) in enumerate(POSTS) if p in site.rest_posts
    ]
    hidden = [
        {"id": 90, "link": site.abs("/2024/04/draft-post/"), "modified_gmt": "2024-04-01T09:00:00",
         "status": "draft", "categories": [1], "tags": [], "content": {"protected": False}},
        {"id": 91, "link": site.abs("/2024/04/members-only/"), "modified_gmt": "2024-04-02T09:00:00",
         "status": "publish", "categories": [1], "tags": [], "content": {"protected": True}},
    ]
    batches = [published[:2], published[2:] + hidden + site.rest_extra]
    headers = {"Content-Type": "application/json; charset=UTF-8", "X-WP-Total": str(len(published) + 2),
               "X-WP-TotalPages": str(len(batches))}
    if not 1 <= number <= len(batches):
        return 400, {"Content-Type": "application/json"}, json.dumps(
            {"code": "rest_post_invalid_page_number", "message": "The page number requested is larger than "
             "the number of pages available.", "data": {"status": 400}})
    return 200, headers, json.dumps(batches[number - 1])


def _rest_pages(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], str]:
    items = [{"id": 50 + i, "link": site.abs(p), "modified_gmt": f"{d}T09:00:00", "status": "publish",
              "categories": [], "tags": [], "content": {"protected": False}} for i, (p, _t, d) in enumerate(PAGES)]
    return 200, {"Content-Type": "application/json", "X-WP-TotalPages": "1"}, json.dumps(items)


def _terms(terms: dict[int, str]) -> Callable[..., tuple[int, dict[str, str], str]]:
    def answer(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], str]:
        data = [{"id": i, "name": n} for i, n in terms.items()]
        return 200, {"Content-Type": "application/json", "X-WP-TotalPages": "1"}, json.dumps(data)
    return answer


def _once(first: tuple[int, dict[str, str], str], key: str, then: Callable[[], str]) -> Callable[..., Any]:
    """A page that answers `first` to the first request, then 200 with `then()`."""
    def answer(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], Any]:
        with site.lock:
            site.counters[key] += 1
            count = site.counters[key]
        return first if count == 1 else (200, {"Content-Type": HTML}, then())
    return answer


def _slow(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], str]:
    site.stop.wait(3.0)  # longer than the tests' TIMEOUT
    return 200, {"Content-Type": HTML}, "<html><body><p>finally</p></body></html>"


def _huge_chunks(total: int = 50_000_000) -> Iterator[bytes]:
    chunk = b"<p>" + b"dermatology " * 5000 + b"</p>\n"
    sent = 0
    yield b"<html><body>"
    while sent < total:
        yield chunk
        sent += len(chunk)


def _huge(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], Iterator[bytes]]:
    return 200, {"Content-Type": HTML}, _huge_chunks()  # no Content-Length: only streaming limits can stop it


def _huge_declared(site: FixtureSite, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], Any]:
    return 200, {"Content-Type": HTML, "Content-Length": "50000000"}, _huge_chunks()


def install_default_site(site: FixtureSite, *, edge: bool = False) -> None:
    """(Re)build the blog: robots, sitemaps, feed, REST API, posts, pages and (optionally) edge cases."""
    site.rest_posts = {p for p, *_ in POSTS}
    site.rest_extra = []
    site.pages.clear()
    site.set("/", _home(site, edge))
    site.pages["/robots.txt"] = (200, {}, _robots)
    site.set("/sitemap_index.xml", '<?xml version="1.0" encoding="UTF-8"?>'
             '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             f"<sitemap><loc>{site.abs('/post-sitemap.xml')}</loc></sitemap>"
             f"<sitemap><loc>{site.abs('/page-sitemap.xml')}</loc></sitemap></sitemapindex>",
             content_type="application/xml")
    site.set("/post-sitemap.xml", _urlset(site, [(p, d) for p, _t, d, *_ in POSTS] + [("/private/x/", "2024-01-01")]),
             content_type="application/xml")
    site.set("/page-sitemap.xml", _urlset(site, [(p, d) for p, _t, d in PAGES]), content_type="application/xml")
    site.set("/feed/", _rss(site, [(p, t, d) for p, t, d, *_ in reversed(POSTS[1:])]),
             content_type="application/rss+xml; charset=UTF-8")
    site.set("/feed/?paged=2", _rss(site, [(p, t, d) for p, t, d, *_ in POSTS[:1]]),
             content_type="application/rss+xml; charset=UTF-8")
    site.pages["/wp-json/wp/v2/posts"] = (200, {}, _rest_posts)
    site.pages["/wp-json/wp/v2/pages"] = (200, {}, _rest_pages)
    site.pages["/wp-json/wp/v2/categories"] = (200, {}, _terms(CATEGORIES))
    site.pages["/wp-json/wp/v2/tags"] = (200, {}, _terms(TAGS))
    for path, title, date, _cats, _tags, shown in POSTS:
        site.set(path, _article_html(site, path, title, date=date, categories=shown,
                                     links=["/2024/02/acne-scars/", "/gone-post/", "/private/secret-notes/"]))
    for path, title, date in PAGES:
        site.set(path, _article_html(site, path, title, date=date))
    site.set("/staff/handbook/", _article_html(site, "/staff/handbook/", "Staff handbook"))
    site.set("/noindex-page/", _article_html(site, "/noindex-page/", "Thank you",
                                             head='<meta name="robots" content="noindex, follow">'))
    site.set("/x-robots-page/", _article_html(site, "/x-robots-page/", "Price list"),
             headers={"X-Robots-Tag": "noindex"})
    site.set("/rosacea-print/", _article_html(site, "/2024/01/rosacea-vbeam/", "Treating rosacea redness with VBeam",
                                              canonical=site.abs("/2024/01/rosacea-vbeam/")))
    site.set("/2024/04/draft-post/", _article_html(site, "/2024/04/draft-post/", "Draft: melasma"))
    site.set("/2024/04/members-only/", _article_html(site, "/2024/04/members-only/", "Members only"))
    site.set("/category/lasers/", "<html><head><title>Lasers</title></head><body><h1>Category: Lasers</h1>"
             '<ul><li><a href="/2024/01/rosacea-vbeam/">Rosacea</a></li>'
             '<li><a href="/category/lasers/page/2/">Older posts</a></li></ul></body></html>')
    site.set("/category/lasers/page/2/", "<html><body><h1>Lasers, page 2</h1>"
             '<a href="/vbeam/">VBeam</a></body></html>')
    site.set("/private/secret-notes/", "<html><body><p>secret</p></body></html>")
    site.set("/wp-content/uploads/rosacea-leaflet.pdf", b"%PDF-1.4 not really", content_type="application/pdf")
    if edge:
        install_edge_cases(site)


EDGE_LINKS = [
    "/old-vbeam/", "/loop-a/", "/flaky/", "/busy/", "/slow/", "/huge/", "/huge-declared/", "/binary/",
    "/latin1-in-utf8/", "/garbage-utf8/", "/offsite-redirect/", "/download/", "/empty-page/",
]


def install_edge_cases(site: FixtureSite) -> None:
    """Pages that go wrong in every way a crawler meets in the wild, linked from /edge/."""
    items = "".join(f'<li><a href="{p}">{p}</a></li>' for p in EDGE_LINKS)
    site.set("/edge/", f"<html><body><h1>Edge cases</h1><ul>{items}</ul></body></html>")
    site.set("/old-vbeam/", "", status=301, headers={"Location": "/vbeam-moved/"})
    site.set("/vbeam-moved/", "", status=302, headers={"Location": site.abs("/vbeam/")})
    site.set("/loop-a/", "", status=302, headers={"Location": "/loop-b/"})
    site.set("/loop-b/", "", status=302, headers={"Location": "/loop-a/"})
    ok_page = lambda path, title: lambda: _article_html(site, path, title)  # noqa: E731
    site.pages["/flaky/"] = (200, {}, _once((500, {"Content-Type": HTML}, "<h1>Internal error</h1>"), "flaky",
                                           ok_page("/flaky/", "Flaky but fine")))
    site.pages["/busy/"] = (200, {}, _once((429, {"Content-Type": HTML, "Retry-After": "1"}, "<h1>Slow down</h1>"),
                                          "busy", ok_page("/busy/", "Busy but fine")))
    site.pages["/slow/"] = (200, {}, _slow)
    site.pages["/huge/"] = (200, {}, _huge)
    site.pages["/huge-declared/"] = (200, {}, _huge_declared)
    site.set("/binary/", bytes(range(256)) * 64)
    latin = _article_html(site, "/latin1-in-utf8/", "Caf\u00e9 au lait spots").encode("utf-8")
    site.set("/latin1-in-utf8/", latin.replace("Caf\u00e9".encode("utf-8"), b"Caf\xe9"))  # a few bad bytes
    site.set("/garbage-utf8/", b"<html><body><p>" + bytes(range(0x80, 0x100)) * 40 + b"</p></body></html>")
    site.set("/offsite-redirect/", "", status=302, headers={"Location": site.other.abs("/stolen/")})
    site.set("/download/", b"%PDF-1.4 fake", content_type="application/pdf")
    site.set("/empty-page/", "<html><head><title>Empty</title></head><body></body></html>")


@pytest.fixture
def other_host() -> Iterator[FixtureSite]:
    """A second host; crawls of `site` must never send it a request."""
    other = FixtureSite()
    other.set("/", "<html><body><p>another site</p></body></html>")
    yield other
    other.close()


@pytest.fixture
def site(other_host: FixtureSite) -> Iterator[FixtureSite]:
    """The WordPress-like fixture blog on 127.0.0.1 (edge cases: `install_edge_cases(site)` or `site.edge()`)."""
    fixture = FixtureSite()
    fixture.other = other_host
    fixture.edge = lambda: install_default_site(fixture, edge=True)  # type: ignore[attr-defined]
    install_default_site(fixture)
    yield fixture
    fixture.close()


def make_settings(data_dir: Path, **overrides: Any) -> dict:
    """Settings for crawling the fixture site: no delay, short timeouts, no retries unless a test asks."""
    from kb import config

    base = {"DATA_DIR": str(data_dir), "CRAWL_DELAY": 0.0, "TIMEOUT": 2.0, "RETRIES": 0, "RETRY_BACKOFF": 0.05}
    return config.load(base | overrides, environ={})
