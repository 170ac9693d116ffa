"""Pure discovery rules: URL normalisation, scope, sitemaps, feeds, the WordPress REST API and HTML links."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from kb import crawl
from kb.crawl import Link, normalize_url, scope_problem
from kb.errors import SkipPage
from kb.sources import Source

BASE = "https://blog.example.org/"
SRC = Source(name="blog", url=BASE, exclude=["/shop/"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTPS://Blog.Example.ORG:443/a/b/?b=2&a=1#frag", "https://blog.example.org/a/b/?a=1&b=2"),
        ("http://blog.example.org:80", "http://blog.example.org/"),
        ("http://blog.example.org:8080/x", "http://blog.example.org:8080/x"),
        ("/post/?utm_source=x&utm_medium=y&id=3&fbclid=abc", "https://blog.example.org/post/?id=3"),
        ("../up/./here/", "https://blog.example.org/dir/up/here/"),
        ("https://blog.example.org/a/../b/", "https://blog.example.org/b/"),
        ("other/", "https://blog.example.org/dir/page/other/"),
        ("//cdn.example.org/lib.js", "https://cdn.example.org/lib.js"),
        ("https://user:pw@Blog.example.org/", "https://blog.example.org/"),
        ("  https://blog.example.org/sp ace/  ", "https://blog.example.org/sp%20ace/"),
    ],
)
def test_normalize_url(raw: str, expected: str) -> None:
    assert normalize_url(raw, "https://blog.example.org/dir/page/") == expected


@pytest.mark.parametrize("raw", ["mailto:a@b.org", "javascript:void(0)", "#top", "ftp://x.org/", "tel:123",
                                 "http://host:99999/", "", "data:text/html,hi"])
def test_normalize_url_rejects_non_web_addresses(raw: str) -> None:
    assert normalize_url(raw, BASE) is None


def test_normalisation_is_idempotent() -> None:
    url = normalize_url("HTTPS://Blog.Example.ORG/a/?z=1&a=%20x&utm_campaign=q#x")
    assert url is not None and normalize_url(url) == url


# Spellings of /protocols/x/ that servers answer as that page (RFC 3986 section 6.2.2 makes most equivalent).
SPELLINGS = [
    ("/%70rotocols/x/", "/protocols/x/"),
    ("https://blog.example.org//protocols/x/", "/protocols/x/"),  # repeated slashes (template concatenation)
    ("https://blog.example.org///protocols//x//", "/protocols/x/"),
    ("/%2e/protocols/x/", "/protocols/x/"),  # encoded dot segments
    ("/%2E%2E/protocols/x/", "/protocols/x/"),
    ("https://blog.example.org/a/.%2e/protocols/x/", "/protocols/x/"),
    ("/./protocols/x/", "/protocols/x/"),
    ("/foo/../protocols/x/", "/protocols/x/"),
    ("https://blog.example.org/%2e%2E/.//%70rotocols/%78/", "/protocols/x/"),  # mixed
    ("/pro%74ocols/%7euser/", "/protocols/~user/"),  # unreserved characters decoded, "~" included
    ("/caf%c3%a9/", "/caf%C3%A9/"),  # escapes upper-cased, not decoded
    ("/caf\u00e9/", "/caf%C3%A9/"),
    ("/a%2Fb/", "/a%2Fb/"),  # an encoded slash is another resource: kept
    ("/PROTOCOLS/x/", "/PROTOCOLS/x/"),  # paths are case-sensitive: the audience rules fold case instead
]


@pytest.mark.parametrize(("raw", "path"), SPELLINGS)
def test_normalize_url_gives_one_identity_per_spelling(raw: str, path: str) -> None:
    url = normalize_url(raw, BASE)
    assert url == "https://blog.example.org" + path
    assert normalize_url(url) == url  # idempotent


def test_every_spelling_of_a_staff_path_is_staff() -> None:
    src = Source(name="blog", url=BASE, staff_paths=["/protocols/"])
    for raw in (raw for raw, path in SPELLINGS if path == "/protocols/x/"):
        assert src.audience_for(normalize_url(raw, BASE)) == "staff", raw
        assert src.audience_for(raw if raw.startswith("http") else BASE[:-1] + raw) == "staff", raw
    for raw in ("/PROTOCOLS/x/", "/Protocols/x", "/%50rotocols/x", "/protocols%2Fx", "/a%2F..%2Fprotocols/x",
                "/%2570rotocols/x/", "/protocols;jsessionid=1/x/", "/protocols./x/", "/protocols%5Cx"):
        assert src.audience_for(normalize_url(raw, BASE)) == "staff", raw
    for raw in ("/protocolsx/", "/pro/tocols/", "/public/protocols/", "/a/%2e%2e%2fprotocols-not/"):
        assert src.audience_for(normalize_url(raw, BASE)) == "public", raw


@pytest.mark.parametrize("path", ["//wp-admin/x", "/%77p-admin/x", "/WP-ADMIN/x", "/%2e/wp-admin/x",
                                  "/x/../wp-admin/", "/wp%2Dadmin/x", "//wp-login.php", "/%2e/wp-json/wp/v2/"])
def test_wordpress_admin_rule_holds_against_spellings(path: str) -> None:
    problem = scope_problem(normalize_url("https://blog.example.org" + path) or "", SRC)
    assert problem is not None and "WordPress" in problem, path


@pytest.mark.parametrize("path", ["//shop/cream/", "/%73hop/cream/", "/SHOP/cream/", "/Shop/", "/./shop/x",
                                  "/a/../shop/x", "/shop;x=1/y", "/a%2F..%2Fshop/x", "/%2573hop/x", "/shop%2Fx"])
def test_exclude_holds_against_spellings(path: str) -> None:
    url = "https://blog.example.org" + path
    assert "exclude" in (scope_problem(url, SRC) or ""), path
    assert "exclude" in (scope_problem(normalize_url(url) or "", SRC) or ""), path


def test_include_holds_against_decoded_escapes() -> None:
    src = Source(name="b", url="https://a.org/blog/")
    assert crawl.in_scope("https://a.org//blog//x/", src)
    for path in ("/blog/..%2F..%2Fprivate/", "/blog/%2e%2e/private/", "/blog%2F..%2Fprivate/"):
        assert "included paths" in (scope_problem("https://a.org" + path, src) or ""), path


def test_robots_urls_name_every_server_reading() -> None:
    url = normalize_url("https://a.org/private%2Fx;s=1")
    assert url == "https://a.org/private%2Fx;s=1"
    readings = crawl.robots_urls(url)
    assert readings[0] == url and "https://a.org/private/x" in readings
    assert crawl.robots_urls("https://a.org/plain/") == ["https://a.org/plain/"]


@pytest.mark.parametrize("path", ["/%EF%BC%8Fprivate/x", "/%EF%BD%90rivate/x", "/private%C0%AFx", "/pri%C2%ADvate/x",
                                  "/%25u0070rivate/x"])
def test_robots_is_asked_about_unicode_and_overlong_readings_too(path: str) -> None:
    """A Disallow: /private/ must stop the spellings a Unicode-folding server routes to /private/."""
    from protego import Protego

    robots = Protego.parse("User-agent: *\nDisallow: /private/\n")
    readings = crawl.robots_urls(normalize_url("https://a.org" + path))
    assert not all(robots.can_fetch(u, "kb") for u in readings), readings


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://blog.example.org/2024/01/post/", None),
        ("http://blog.example.org/plain-http-is-the-same-site/", None),
        ("https://other.example.org/", "another host"),
        ("https://blog.example.org:8443/", "another host"),
        ("https://blog.example.org/shop/cream/", "exclude"),
        ("https://blog.example.org/files/leaflet.PDF", ".pdf"),
        ("https://blog.example.org/img/a.jpg", ".jpg"),
        ("https://blog.example.org/wp-admin/options.php", "WordPress"),
        ("https://blog.example.org/wp-json/wp/v2/posts", "WordPress"),
        ("https://blog.example.org/feed/", "WordPress"),
        ("https://blog.example.org/2024/01/post/feed/", "WordPress"),
        ("https://blog.example.org/?s=acne", "?s="),
        ("https://blog.example.org/post/?replytocom=12", "replytocom"),
        ("mailto:x@y.org", "not an http"),
    ],
)
def test_scope(url: str, problem: str | None) -> None:
    found = scope_problem(url, SRC)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
    assert crawl.in_scope(url, SRC) is (problem is None)


def test_scope_include_prefixes() -> None:
    src = Source(name="b", url="https://a.org/blog/")
    assert crawl.in_scope("https://a.org/blog/", src) and crawl.in_scope("https://a.org/blog", src)
    assert crawl.in_scope("https://a.org/blog/x/", src)
    assert "included paths" in (scope_problem("https://a.org/blogroll/", src) or "")
    assert "included paths" in (scope_problem("https://a.org/", src) or "")


@pytest.mark.parametrize(
    ("path", "listing"),
    [("/category/lasers/", True), ("/category/lasers/page/3/", True), ("/tag/acne/", True),
     ("/author/dr-lee/", True), ("/page/2/", True), ("/2024/", True), ("/2024/05/", True), ("/2024/05/10/", True),
     ("/2024/05/post-slug/", False), ("/", False), ("/sebaceous-glands/", False), ("/blog/category/x/", True),
     ("/page-about-us/", False)],
)
def test_is_listing(path: str, listing: bool) -> None:
    assert crawl.is_listing("https://a.org" + path) is listing


# -- sitemaps ------------------------------------------------------------------------------------------------

URLSET = b"""<?xml version="1.0" encoding="UTF-8"?>
<?xml-stylesheet type="text/xsl" href="//blog.example.org/wp-sitemap.xsl"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>https://blog.example.org/a/</loc><lastmod>2024-01-10T09:00:00+02:00</lastmod></url>
<url><loc> https://blog.example.org/b/?utm_source=x </loc></url>
<url><loc>/relative/</loc><lastmod>2024-02-01</lastmod></url>
<!-- a comment --><url><lastmod>2024-01-01</lastmod></url>
</urlset>"""


def test_parse_urlset() -> None:
    result = crawl.parse_sitemap(URLSET, BASE + "wp-sitemap-posts-post-1.xml")
    assert result.links == [Link("https://blog.example.org/a/", "2024-01-10T07:00:00+00:00"),
                            Link("https://blog.example.org/b/", None),
                            Link("https://blog.example.org/relative/", "2024-02-01T00:00:00+00:00")]
    assert result.sitemaps == [] and not result.truncated


def test_parse_sitemap_index_gzip_and_text() -> None:
    index = (b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             b"<sitemap><loc>https://blog.example.org/wp-sitemap-posts-post-1.xml</loc></sitemap>"
             b"<sitemap><loc>https://blog.example.org/wp-sitemap-pages-page-1.xml</loc></sitemap></sitemapindex>")
    result = crawl.parse_sitemap(gzip.compress(index), BASE + "wp-sitemap.xml")
    assert result.sitemaps == ["https://blog.example.org/wp-sitemap-posts-post-1.xml",
                               "https://blog.example.org/wp-sitemap-pages-page-1.xml"]
    assert result.links == []
    text = crawl.parse_sitemap(b"https://blog.example.org/a/\nnot a url\nhttps://blog.example.org/b/\n", BASE)
    assert [link.url for link in text.links] == ["https://blog.example.org/a/", "https://blog.example.org/b/"]


def test_parse_sitemap_bounds_urls() -> None:
    body = ("<urlset>" + "".join(f"<url><loc>https://blog.example.org/p{i}/</loc></url>" for i in range(50))
            + "</urlset>").encode()
    result = crawl.parse_sitemap(body, BASE, max_urls=10)
    assert len(result.links) == 10 and result.truncated


def test_sitemap_bombs_and_junk_are_clear_skips() -> None:
    lol = b'<!ENTITY a0 "lollollollollollollollollollol">' + b"".join(
        b'<!ENTITY a%d "%s">' % (i, b"".join(b"&a%d;" % (i - 1) for _ in range(10))) for i in range(1, 10))
    bomb = b'<?xml version="1.0"?><!DOCTYPE urlset [' + lol + b"]><urlset><url><loc>&a9;</loc></url></urlset>"
    started = time.monotonic()
    with pytest.raises(SkipPage) as info:
        crawl.parse_sitemap(bomb, BASE)
    assert info.value.kind == "bad_sitemap" and time.monotonic() - started < 2
    external = (b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b"<urlset><url><loc>&x;</loc></url></urlset>")
    assert crawl.parse_sitemap(external, BASE).links == []  # never resolved, never read
    gz_bomb = gzip.compress(b"<urlset>" + b" " * 3_000_000 + b"</urlset>")
    with pytest.raises(SkipPage, match="unpacks to more than") as info:
        crawl.parse_sitemap(gz_bomb, BASE, max_bytes=1_000_000)
    assert info.value.kind == "too_large"
    for junk, words in [(b"<urlset><url><loc>https://x", "not well-formed"), (b"<html><body>hi</body></html>",
                        "root element <html>"), (b"\x1f\x8bnot gzip", "damaged"), (b"just words", "neither")]:
        with pytest.raises(SkipPage, match=words):
            crawl.parse_sitemap(junk, BASE)


# -- feeds ---------------------------------------------------------------------------------------------------

RSS = b"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Blog</title>
<item><title>A</title><link>https://blog.example.org/a/?utm_source=rss</link>
<pubDate>Mon, 01 Jan 2024 10:00:00 +0000</pubDate></item>
<item><title>B</title><link>/b/</link></item></channel></rss>"""


def test_parse_rss_and_atom() -> None:
    links = crawl.parse_feed(RSS, BASE + "feed/")
    assert links == [Link("https://blog.example.org/a/", "2024-01-01T10:00:00+00:00"),
                     Link("https://blog.example.org/b/", None)]
    atom = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>x</title>'
            b'<link rel="alternate" href="/c/"/><updated>2024-02-02T00:00:00Z</updated></entry></feed>')
    assert crawl.parse_feed(atom, BASE + "feed/atom/") == [Link("https://blog.example.org/c/",
                                                                 "2024-02-02T00:00:00+00:00")]
    empty = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Blog</title></channel></rss>'
    assert crawl.parse_feed(empty, BASE) == []


def test_malformed_feeds() -> None:
    truncated = b'<rss version="2.0"><channel><item><link>https://blog.example.org/a/</link></item><item><link>ht'
    assert [link.url for link in crawl.parse_feed(truncated, BASE)][:1] == ["https://blog.example.org/a/"]
    for junk in (b"<html><body><p>Not a feed</p></body></html>", b"\x00\x01\x02garbage", b""):
        with pytest.raises(SkipPage, match="not a readable RSS/Atom feed") as info:
            crawl.parse_feed(junk, BASE)
        assert info.value.kind == "bad_feed"


def test_feed_entity_bomb_is_not_expanded() -> None:
    lol = b'<!ENTITY a0 "lollollollol">' + b"".join(
        b'<!ENTITY a%d "%s">' % (i, b"".join(b"&a%d;" % (i - 1) for _ in range(10))) for i in range(1, 9))
    bomb = (b'<?xml version="1.0"?><!DOCTYPE rss [' + lol + b']><rss version="2.0"><channel><item><title>&a8;'
            b"</title><link>https://blog.example.org/a/</link></item></channel></rss>")
    started = time.monotonic()
    links = crawl.parse_feed(bomb, BASE)  # the inline DTD is dropped; the entry survives
    assert [link.url for link in links] == ["https://blog.example.org/a/"]
    assert time.monotonic() - started < 2


def test_feed_pagination_and_candidates() -> None:
    assert crawl.feed_page_url("https://a.org/feed/", 1) == "https://a.org/feed/"
    assert crawl.feed_page_url("https://a.org/feed/", 3) == "https://a.org/feed/?paged=3"
    assert crawl.feed_page_url("https://a.org/feed/?paged=2&x=1", 4) == "https://a.org/feed/?paged=4&x=1"
    assert crawl.feed_candidates(Source(name="a", url="https://a.org/blog/")) == [
        "https://a.org/feed/", "https://a.org/blog/feed/"]
    assert crawl.wp_api_roots(Source(name="a", url="https://a.org/")) == ["https://a.org/wp-json/"]


# -- WordPress REST ------------------------------------------------------------------------------------------

def test_parse_wp_items_keeps_status_and_protection() -> None:
    data = [
        {"id": 1, "link": "https://blog.example.org/a/", "modified_gmt": "2024-01-10T09:00:00", "status": "publish",
         "categories": [3], "tags": [7, "x"], "content": {"protected": False}},
        {"id": 2, "link": "https://blog.example.org/draft/", "status": "draft"},
        {"id": 3, "link": "https://blog.example.org/secret/", "status": "publish", "content": {"protected": True}},
        {"id": 4, "link": "mailto:nope"}, "junk",
    ]
    items = crawl.parse_wp_items(json.dumps(data).encode(), BASE)
    assert [(i.url, i.publishable) for i in items] == [("https://blog.example.org/a/", True),
                                                        ("https://blog.example.org/draft/", False),
                                                        ("https://blog.example.org/secret/", False)]
    assert items[0].modified == "2024-01-10T09:00:00+00:00"
    assert items[0].categories == [3] and items[0].tags == [7]


def test_parse_wp_errors_and_terms() -> None:
    with pytest.raises(SkipPage, match="not valid JSON") as info:
        crawl.parse_wp_items(b"<html>", BASE)
    assert info.value.kind == "bad_rest"
    with pytest.raises(SkipPage, match="rest_post_invalid_page_number"):
        crawl.parse_wp_items(b'{"code": "rest_post_invalid_page_number"}', BASE)
    terms = crawl.parse_wp_terms(b'[{"id": 3, "name": "Lasers &amp; Light"}, {"id": "x", "name": "bad"}]')
    assert terms == {3: "Lasers & Light"}
    assert crawl.wp_total_pages({"x-wp-totalpages": "4"}) == 4 and crawl.wp_total_pages({}) is None
    url = crawl.wp_api_url("https://a.org/wp-json/", "posts", 2)
    assert url.startswith("https://a.org/wp-json/wp/v2/posts?") and "page=2" in url and "per_page=100" in url


# -- HTML ----------------------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><head><base href="https://blog.example.org/sub/">
<meta name="ROBOTS" content="NoIndex">
<link rel="canonical" href="/canonical/?utm_medium=x">
<link rel="alternate" type="application/rss+xml" href="/feed/">
<link rel="alternate" type="application/rss+xml" href="/comments/feed/">
<link rel="https://api.w.org/" href="https://blog.example.org/wp-json/">
</head><body><a href="rel/">r</a><a href="/abs/#frag">a</a><a href="/abs/">dup</a>
<a href="mailto:x@y.org">m</a><a rel="nofollow" href="https://other.org/x">o</a><a>no href</a></body></html>"""


def test_parse_html() -> None:
    info = crawl.parse_html(PAGE, "https://blog.example.org/page/")
    assert info.links == ["https://blog.example.org/sub/rel/", "https://blog.example.org/abs/",
                          "https://other.org/x"]  # rel=nofollow links are still discovered
    assert info.noindex and not info.nofollow
    assert info.canonical == "https://blog.example.org/canonical/"
    assert info.feeds == ["https://blog.example.org/feed/"]
    assert info.api_root == "https://blog.example.org/wp-json/"


def test_parse_html_meta_robots_variants_and_junk() -> None:
    none = crawl.parse_html('<meta name="robots" content="none"><a href="/x/">x</a>', BASE)
    assert none.noindex and none.nofollow
    ours = crawl.parse_html('<meta name="kb" content="nofollow"><meta name="googlebot" content="noindex">', BASE)
    assert ours.nofollow and not ours.noindex
    assert crawl.parse_html("", BASE).links == []
    assert crawl.parse_html(b"\x00\x01", BASE).links == []
    xml_decl = crawl.parse_html('<?xml version="1.0" encoding="utf-8"?><html><a href="/y/">y</a></html>', BASE)
    assert xml_decl.links == ["https://blog.example.org/y/"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("noindex", {"noindex"}), ("NOINDEX, NoFollow", {"noindex", "nofollow"}), ("none", {"noindex", "nofollow"}),
     ("googlebot: noindex", set()), ("kb: noindex, nofollow", {"noindex", "nofollow"}),
     ("googlebot: noindex, kb: nofollow", {"nofollow"}), ("unavailable_after: 25 Jun 2010 15:00:00 PST", set()),
     ("max-snippet: 20, noarchive", {"max-snippet", "noarchive"}), ("", set())],
)
def test_robots_directives(value: str, expected: set[str]) -> None:
    found = crawl.robots_directives(value, "kb") & {"noindex", "nofollow", "max-snippet", "noarchive"}
    assert found == expected


def test_iso_date() -> None:
    assert crawl.iso_date("2024-01-10") == "2024-01-10T00:00:00+00:00"
    assert crawl.iso_date("2024-01-10T10:00:00Z") == "2024-01-10T10:00:00+00:00"
    assert crawl.iso_date(time.struct_time((2024, 1, 2, 3, 4, 5, 0, 2, 0))) == "2024-01-02T03:04:05+00:00"
    assert crawl.iso_date("yesterday") is None and crawl.iso_date(None) is None


def test_link_header_canonicals_are_all_read() -> None:
    from kb.crawl import link_header_canonicals

    value = ('<https://a.org/feed/>; rel="alternate", <https://a.org/%70rotocols/x,y>; rel="prefetch canonical", '
             "</protocols/z>;rel=canonical, <https://a.org/p2>; title=\"rel=canonical\"")
    assert link_header_canonicals(value, "https://a.org/page/") == [
        "https://a.org/protocols/x,y", "https://a.org/protocols/z"]
    assert link_header_canonicals("", "https://a.org/") == []


# -- hostile markup: refused before lxml parses it ----------------------------------------------------------

def test_parse_html_refuses_an_attribute_bomb_fast() -> None:
    bomb = "<html><body><p " + " ".join(f"a{i:x}=1" for i in range(20_000)) + ">x</p></body></html>"
    for body in (bomb, bomb.encode()):  # lxml alone takes ~1 s on this page, a minute on 80k attributes
        started = time.perf_counter()
        with pytest.raises(SkipPage, match="more than 5,000 attributes") as caught:
            crawl.parse_html(body, BASE)
        assert caught.value.kind == "hostile_markup" and time.perf_counter() - started < 0.5


def test_parse_html_refuses_an_element_flood() -> None:
    flood = "<html><body><main>" + "".join(f"<a href=/{i:x}>" for i in range(60_000)) + "</main></body></html>"
    with pytest.raises(SkipPage, match="more than 50,000 elements") as caught:
        crawl.parse_html(flood, BASE)
    assert caught.value.kind == "hostile_markup"


def test_parse_html_keeps_at_most_max_page_links() -> None:
    many = "<html><body>" + "".join(f"<a href=/p{i}/>{i}</a>" for i in range(12_000)) + "</body></html>"
    links = crawl.parse_html(many, BASE).links
    assert len(links) == crawl.MAX_PAGE_LINKS == 10_000
    assert links[0] == normalize_url("/p0/", BASE) and links[-1] == normalize_url("/p9999/", BASE)


def test_parse_html_accepts_real_pages() -> None:
    root = Path(__file__).parent
    pages = [*(root / "data" / "pages").glob("*.html"), *(root.parent / "kb" / "demo_site").rglob("*.html")]
    assert len(pages) > 50
    linked = [path for path in pages if crawl.parse_html(path.read_bytes(), "http://127.0.0.1:1/x/").links]
    assert len(linked) >= len(pages) - 2  # all parsed, none refused (script_title.html and 404.html link nowhere)
