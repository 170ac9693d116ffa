"""sources.toml: the documented format loads, and every mistake names its line, field and remedy."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kb import sources as sources_module
from kb.errors import ConfigError
from kb.sources import Source, default_include, load_sources, path_under, source_from_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text, "utf-8")
    return path


def test_documented_example_loads(tmp_path: Path) -> None:
    """The example in the module docstring (copied to the README) is valid as written."""
    doc = sources_module.__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    example = "\n".join(line[4:] for line in block.splitlines())
    [site] = load_sources(write(tmp_path, example))
    assert site == Source(
        name="derm-blog", url="https://blog.example.org/", include=["/"], exclude=["/shop/", "/wp-admin/"],
        audience="public", staff_paths=["/protocols/"], staff_categories=["Staff Protocols"], max_pages=2000,
        delay=2.0,
    )


def test_minimal_site_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[[site]]\nurl = "https://Blog.Example.org"\n\n[[site]]\nname = "b"\n'
                           'url = "https://other.example.org/blog/"\naudience = "staff"\n')
    first, second = load_sources(path)
    assert first.name == "blog.example.org"
    assert first.url == "https://Blog.Example.org/"
    assert first.include == ["/"] and first.exclude == [] and first.audience == "public"
    assert first.max_pages is None and first.delay is None
    assert second.include == ["/blog/"] and second.audience == "staff"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[site]]\nurl = "https://a.org/"\n\n[[site]]\nname = "x"\nurl = "ftp://b.org/"\n', 6, ["url", "http"]),
        ('[[site]]\nurl = "https://a.org/"\naudiance = "staff"\n', 3, ["audiance", "Did you mean 'audience'"]),
        ('[[site]]\nurl = "https://a.org/"\naudience = "doctors"\n', 3, ["audience", "'public'", "'staff'"]),
        ('[[site]]\nurl = "https://a.org/"\ninclude = ["blog/"]\n', 3, ["include", 'start with "/"']),
        ('[[site]]\nurl = "https://a.org/"\nexclude = "/shop/"\nmax_pages = 0\n', 4, ["max_pages", "at least 1"]),
        ('[[site]]\nurl = "https://a.org/"\ndelay = -1\n', 3, ["delay", "at least 0"]),
        ('[[site]]\nurl = "https://a.org/"\ndelay = true\n', 3, ["delay"]),
        ('[[site]]\nname = "a"\nurl = "https://a.org/"\n[[site]]\nname = "a"\nurl = "https://b.org/"\n', 5,
         ["already used", "different name"]),
        ('[[site]]\nname = "a"\n', 1, ["no url", "url ="]),
        ('[[site]]\nurl = "https://a.org/"\nstaff_categories = [1, 2]\n', 3, ["staff_categories", "list"]),
    ],
)
def test_mistakes_name_line_field_and_remedy(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_sources(write(tmp_path, text))
    message = str(info.value)
    assert f"line {line}" in message
    for word in words:
        assert word in message
    assert info.value.remedy


def test_exclude_as_a_single_string_is_accepted(tmp_path: Path) -> None:
    [site] = load_sources(write(tmp_path, '[[site]]\nurl = "https://a.org/"\nexclude = "/shop/"\n'))
    assert site.exclude == ["/shop/"]


def test_missing_file_bad_toml_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No sources file") as info:
        load_sources(tmp_path / "nope.toml")
    assert "[[site]]" in info.value.remedy
    with pytest.raises(ConfigError, match="not valid TOML.*line 2"):
        load_sources(write(tmp_path, '[[site]]\nurl = https://a.org/\n'))
    with pytest.raises(ConfigError, match="lists no sites"):
        load_sources(write(tmp_path, "# nothing yet\n"))
    with pytest.raises(ConfigError, match="unknown top-level key 'sites'"):
        load_sources(write(tmp_path, '[[sites]]\nurl = "https://a.org/"\n'))


def test_source_from_url() -> None:
    s = source_from_url("https://Derm.Example.org:443/blog/post.html")
    assert s.name == "derm.example.org" and s.include == ["/blog/"]
    assert source_from_url("http://127.0.0.1:8080").url == "http://127.0.0.1:8080/"
    assert source_from_url("http://127.0.0.1:8080").name == "127.0.0.1:8080"
    for bad in ("example.org", "ftp://example.org/", "http://", "http://host:99999/"):
        with pytest.raises(ConfigError, match="start URL"):
            source_from_url(bad)


def test_paths_and_audience() -> None:
    assert path_under("/blog", "/blog/") and path_under("/blog/x", "/blog/") and not path_under("/blogroll", "/blog/")
    assert path_under("/anything", "/")
    assert default_include("https://a.org/blog") == "/blog"
    assert default_include("https://a.org/blog/index.html") == "/blog/"
    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"], staff_categories=["Staff Protocols"])
    assert s.audience_for("https://a.org/protocols/lasers/") == "staff"
    assert s.audience_for("https://a.org/acne/", ["staff protocols"]) == "staff"
    assert s.audience_for("https://a.org/acne/", ["Acne"]) == "public"
    assert Source(name="b", url="https://b.org/", audience="staff").audience_for("https://b.org/x/") == "staff"


def test_configured_prefixes_are_normalised_like_urls(tmp_path: Path) -> None:
    [site] = load_sources(write(tmp_path, '[[site]]\nurl = "https://a.org/"\nstaff_paths = ["/%70rotocols//"]\n'
                                          'exclude = ["//shop/./x/", "/a/../Members/"]\ninclude = ["/%62log/"]\n'))
    assert site.staff_paths == ["/protocols/"] and site.exclude == ["/shop/x/", "/Members/"]
    assert site.include == ["/blog/"]
    assert Source(name="b", url="https://b.org/", staff_paths=["/%2e/protocols"]).staff_paths == ["/protocols"]
    assert site.audience_for("https://a.org/blog/PROTOCOLS/") == "public"  # under /blog/, not /protocols/
    assert site.audience_for("https://a.org//protocols/x") == "staff"
    assert site.excluded("/members/x") == "/Members/" and site.excluded("/shop/y") is None


def test_audience_covers_every_address_of_the_fetch() -> None:
    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"])
    assert s.audience_for("https://a.org/public/") == "public"
    assert s.audience_for("https://a.org/public/", via=["https://a.org/landing/", "https://a.org/%70rotocols/x"]) \
        == "staff"  # a redirect hop or a declared canonical under a staff path
    assert s.audience_for("https://a.org/public/", via=["", "https://a.org/other/"]) == "public"
    assert s.audience_for("https://a.org/PROTOCOLS/x", ["Acne"]) == "staff"


# Spellings a lenient server (NFKC, overlong UTF-8, %uXXXX, Cf removal, repeated decoding) routes to /protocols/.
LENIENT_STAFF_SPELLINGS = [
    "/%EF%BC%8Fprotocols/page-aj",  # fullwidth solidus
    "/%EF%BD%90rotocols/page-ak",  # fullwidth p
    "/protocols%C0%AFpage-al",  # overlong "/"
    "/x/%C0%AE%C0%AE/protocols/page-am",  # overlong ".."
    "/protocols%E2%80%8B/page-an",  # zero-width space
    "/%25u0070rotocols/page-ar", "/%u0070rotocols/page-ar2",  # IIS %u, as stored and as linked
    "/%F0%9D%90%A9rotocols/page-as",  # mathematical bold p
    "/pro%C2%ADtocols/page-aw",  # soft hyphen
    "/protocols%EF%BC%8Fpage-ax",  # fullwidth solidus inside a segment
    "/%E2%93%9Frotocols/page-ay",  # circled p
    "/protoco%E2%84%93s/page-az",  # script l
    # the classes they stand for
    "/protocols%E0%80%AFx", "/protocols%F0%80%80%AFx", "/protocols%C1%9Cx",  # 3- and 4-byte overlong "/", "\"
    "/x%C0%AF%C0%AE%C0%AE%C0%AFprotocols/y", "/%C0%AE/protocols%C0%AE/y",
    "/pro%E2%80%8Dtocols/x", "/%EF%BB%BFprotocols/x", "/pro%E2%80%AEtocols/x", "/protocols%E2%81%A0/x",  # ZWJ, BOM,
    "/p%CC%81rotocols/x", "/pro%E2%83%9Dtocols/x",  # combining marks                             bidi, word joiner
    "/%EF%BC%85%37%30rotocols/x", "/%252570rotocols/x", "/%2525u0070rotocols/x",  # decoding to a fixed point
    "/%EF%BC%B0%EF%BC%B2OTOCOLS/x", "/protocol%C5%BF/x", "/PROTOCOL%E2%93%88/x",  # NFKC + casefold
    "/%D1%80rotocols/x", "/pr%CE%BFtocols/x",  # a homoglyph in a mixed-script segment
    "/blog/pro%E2%80%8Btocols/x", "/a/b/%EF%BD%90rotocols/x",  # an obfuscated staff segment anywhere
    "/%FFprotocols/x", "/caf%E9/x", "/%ED%A0%80/x", "/%uD800/x",  # not decodable unambiguously: in doubt, staff
]


@pytest.mark.parametrize("spelling", LENIENT_STAFF_SPELLINGS)
def test_lenient_server_spellings_of_staff_paths_are_staff(spelling: str) -> None:
    from kb.crawl import normalize_url

    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"], exclude=["/protocols/"])
    url = normalize_url("https://a.org" + spelling)
    assert url is not None
    assert s.staff_url(url) and s.audience_for(url) == "staff", url
    assert s.audience_for("https://a.org/public/", via=[url]) == "staff"  # as a redirect hop or canonical
    if "blog" not in spelling and "/a/b/" not in spelling and "%E9" not in spelling and "D800" not in spelling \
            and "%ED" not in spelling and "%FF" not in spelling and "%D1" not in spelling and "%CE" not in spelling:
        assert s.excluded(urlsplit(url).path) == "/protocols/", url  # exclusion reads the same spellings


def test_exclusion_and_wordpress_admin_read_lenient_spellings() -> None:
    from kb.crawl import normalize_url, scope_problem

    s = Source(name="a", url="https://a.org/", exclude=["/members/"])
    for spelling in ("/%EF%BD%8Dembers/x", "/x%C0%AF..%C0%AFmembers/y", "/mem%C2%ADbers/z", "/%25u006Dembers/z"):
        assert "exclude" in (scope_problem(normalize_url("https://a.org" + spelling) or "", s) or ""), spelling
    for spelling in ("/%EF%BD%97p-admin/x", "/wp%E2%80%8B-admin/x", "/x%C0%AF..%C0%AFwp-admin/"):
        assert "WordPress admin" in (scope_problem(normalize_url("https://a.org" + spelling) or "", s) or "")


def test_near_misses_and_normal_urls_stay_public() -> None:
    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"], exclude=["/members/"])
    for path in ("/protocols-old/x", "/protocolsx/", "/blog/protocols-old/", "/caf%C3%A9/", "/%C3%A9t%C3%A9/",
                 "/blog/100%25-natural/", "/blog/%E2%80%9Cquoted%E2%80%9D/", "/pro/tocols/", "/members-area/",
                 "/blog/protocols/"):  # a plain path is read as written: a staff prefix must start it
        assert s.audience_for("https://a.org" + path) == "public", path
        assert s.excluded(path) is None, path


def test_every_demo_site_url_keeps_its_audience() -> None:
    """The demo site's real sitemaps (every post, page, category, tag and author) stay public and in scope."""
    from kb.crawl import in_scope, parse_sitemap
    from kb.demo import PLACEHOLDER, DemoSite

    site, base = DemoSite(), "http://demo.test"
    source = Source(name="demo", url=base + "/", staff_paths=["/protocols/", "/staff/"], exclude=["/wp-admin/"])
    queue, urls = ["/wp-sitemap.xml"], []
    while queue:
        body = site.respond("GET", queue.pop()).body.replace(PLACEHOLDER.encode(), base.encode())
        parsed = parse_sitemap(body, base + "/")
        queue.extend(urlsplit(u).path for u in parsed.sitemaps)
        urls.extend(link.url for link in parsed.links)
    assert len(urls) > 40
    for url in urls:
        assert source.audience_for(url) == "public", url
        assert in_scope(url, source), url
    staff = Source(name="demo", url=base + "/", audience="staff")
    assert all(staff.audience_for(url) == "staff" for url in urls)
