"""A hostile site: every spelling of a staff, excluded or disallowed path, canonicals and redirects that try to
carry staff text to a public address. Crawled for real on 127.0.0.1, indexed with `kb reindex`, searched
anonymously: no staff word may be found, and the store keeps every staff text in staff records only.

The fixture server reads paths as a lenient real server does (percent-decoded, `;params` dropped, slashes
merged, dot segments resolved, case ignored), so every spelling below serves the page it names.
"""

from __future__ import annotations

import json
import posixpath
import random
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.config import data_paths
from kb.models import Article
from kb.pipeline import crawl_source, explain
from kb.sources import Source
from kb.store import Store, open_store
from tests.fixture_site import HTML, FixtureSite

VOCABULARY = ("skin dermis epidermis collagen elastin sebum pore follicle keratin melanin pigment redness "
              "flushing itch scale plaque papule pustule nodule cyst scar laser light pulse energy fluence "
              "cooling gel cream lotion ointment serum barrier moisture hydration retinoid peptide acid peel "
              "session week month dose course review consent record note patient clinic room device setting "
              "wavelength filter spot beam lens goggle shield test patch reaction swelling bruise crust heal").split()

# Staff pages (lenient path -> the unique word of its text) and the spelling the public home page links them by.
STAFF_LINKS = {
    "/protocols/a/": "/protocols/a/",
    "/protocols/b/": "/%70rotocols/b/",
    "/protocols/c/": "{site}//protocols/c/",  # template concatenation: site URL + "/" + path
    "/protocols/d/": "/%2e/protocols/d/",
    "/protocols/e/": "/./protocols/e/",
    "/protocols/f/": "/foo/../protocols/f/",
    "/protocols/g/": "/%2E%2E/protocols/g/",
    "/protocols/h/": "/PROTOCOLS/h/",  # the server ignores case
    "/protocols/i/": "/%2e%2E/.//%50ROTOCOLS/%69/",  # mixed
    "/protocols/j/": "/a%2F..%2Fprotocols/j/",  # the server decodes %2F before resolving
    "/protocols/k/": "/protocols;jsessionid=1/k/",  # Tomcat-style path parameters
    "/protocols/l/": "/Protocols%2Fl/",
}
FORBIDDEN_LINKS = [  # robots.txt Disallow, sources.toml exclude, WordPress admin: never requested
    "{site}//private/a", "/%70rivate/b", "/%2e/private/c", "/./private/d", "/x/../private/e", "/private%2Ff",
    "{site}//members/a", "/%6Dembers/b", "/MEMBERS/c", "/./members/d", "/Members;x=1/e", "/members%2Ff",
    "{site}//wp-admin/x", "/%77p-admin/x", "/WP-ADMIN/x", "/%2e/wp-admin/y",
    "/to-private/", "/to-private-2/", "/to-members/", "/to-admin/",
]
FORBIDDEN_PREFIXES = ("/private/", "/members/", "/wp-admin")
REDIRECTS = {
    "/to-private/": "{site}//private/g",
    "/to-private-2/": "/%2e/private/h",
    "/to-members/": "/%6Dembers/z",
    "/to-admin/": "//wp-admin/y",  # a scheme-relative Location: another host ("wp-admin"), out of scope
    "/pub-redirect/": "/protocols/hop/",  # a public URL redirecting through a staff URL
    "/protocols/hop/": "/pub-landing/",
    "/pub-redirect-2/": "/%70rotocols/r2/",  # ... or to a staff page spelled otherwise
}


def lenient(path: str) -> str:
    """How a forgiving server reads a request path: decoded, no ;params, slashes merged, dots resolved, any case."""
    path = re.sub(r";[^/]*", "", unquote(urlsplit(path).path))
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            out = out[:-1]
        elif segment not in ("", "."):
            out.append(segment)
    return ("/" + "/".join(out) + ("/" if path.endswith("/") and out else "")).lower()


def staff_word(path: str) -> str:
    """The unique made-up word of one page's text (letters only, so every analyzer keeps it whole)."""
    letters = "".join(c for c in path if c.isalpha())
    return "zq" + "".join(chr(ord("a") + (ord(c) * 7 + i) % 26) for i, c in enumerate(letters)) + "xv"


def page(title: str, word: str, *, canonical: str | None = None, links: list[str] = ()) -> str:
    """An article whose text is its own (distinct sentences, so no near-duplicate grouping) plus `word`."""
    rng = random.Random(title)
    sentences = [" ".join(rng.sample(VOCABULARY, 12)).capitalize() + "." for _ in range(6)]
    head = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    items = "".join(f'<li><a href="{href}">link {i}</a></li>' for i, href in enumerate(links))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>{head}</head>"
            f"<body><main><article><h1>{title}</h1><p>{word} {' '.join(sentences[:3])}</p>"
            f"<p>{' '.join(sentences[3:])} The {word} note ends here.</p></article>"
            f"<ul>{items}</ul></main></body></html>")


class HostileSite:
    """The pages of the hostile site, keyed by their lenient path; see the module docstring."""

    def __init__(self, server: FixtureSite) -> None:
        self.server = server
        self.pages: dict[str, tuple[int, dict[str, str], str]] = {}
        self.staff_words: dict[str, str] = {}  # path the text lives at -> its unique word
        server.pages["/*"] = (200, {}, self.answer)

    def answer(self, site: FixtureSite, handler: Any) -> tuple[int, dict[str, str], str]:
        return self.pages.get(lenient(handler.path), (404, {"Content-Type": HTML}, "<h1>Not found</h1>"))

    def html(self, path: str, body: str) -> None:
        self.pages[lenient(path)] = (200, {"Content-Type": HTML}, body)

    def staff(self, path: str, *, canonical: str | None = None) -> str:
        word = self.staff_words[path] = staff_word(path)
        self.html(path, page(f"Protocol {path}", word, canonical=canonical))
        return word

    def abs(self, link: str) -> str:
        return link.format(site=self.server.url) if link.startswith("{") else self.server.abs(link)


@pytest.fixture
def hostile() -> Iterator[HostileSite]:
    server = FixtureSite()
    site = HostileSite(server)
    site.pages["/robots.txt"] = (200, {"Content-Type": "text/plain"},
                                 "User-agent: *\nDisallow: /private/\nDisallow: /wp-admin/\n")
    for path in STAFF_LINKS:
        site.staff(path)
    # A public page whose canonical is a staff page whose own canonical is gone (404).
    site.staff("/protocols/canon/", canonical=server.abs("/gone-canon/"))
    site.html("/pub-canon/", page("Public copy", "plainpublicword", canonical=server.abs("/protocols/canon/")))
    # A public "print version" carrying staff text whose canonical is a spelled staff page that is gone.
    site.staff("/pub-print/", canonical=server.abs("/%70rotocols/print-gone/"))
    # A staff page whose canonical is public, reached when max_pages is used up (crawled as its own source).
    site.staff("/protocols/limit/", canonical=server.abs("/pub-limit/"))
    site.html("/pub-limit/", page("Public limit", "limitpublicword"))
    site.html("/limit/", page("Limit start", "limitstartword", links=["/protocols/limit/"]))
    # Redirects: through a staff URL to a public one; to a spelled staff URL; into forbidden paths.
    for source, target in REDIRECTS.items():
        site.pages[lenient(source)] = (302, {"Location": target.format(site=server.url), "Content-Type": HTML}, "")
    site.staff("/pub-landing/")
    site.staff("/protocols/r2/")
    for path in ("/private/", "/members/", "/wp-admin/"):
        for name in "abcdefghyz":
            site.staff(f"{path}{name}")
    links = [*STAFF_LINKS.values(), *FORBIDDEN_LINKS, "/pub-canon/", "/pub-print/", "/pub-redirect/",
             "/pub-redirect-2/"]
    site.html("/", page("Derm clinic", "homepublicword", links=[site.abs(link) if link.startswith("{") else link
                                                                 for link in links]))
    yield site
    server.close()


SOURCES_TOML = """
[[site]]
name = "hostile"
url = "{url}/"
exclude = ["/members/"]
staff_paths = ["/protocols/"]

[[site]]
name = "hostile-limit"
url = "{url}/limit/"
include = ["/"]
staff_paths = ["/protocols/"]
max_pages = 2
"""


def _crawl(hostile: HostileSite, data_dir: Path, *, reindex: bool = False) -> None:
    """`kb crawl` both sources of sources.toml, then (with `reindex`) `kb reindex`."""
    (data_dir / "sources.toml").write_text(SOURCES_TOML.format(url=hostile.server.url), "utf-8")
    runner = CliRunner()
    env = {"KB_CRAWL_DELAY": "0", "KB_TIMEOUT": "5"}
    result = runner.invoke(cli, ["--data-dir", str(data_dir), "crawl", "--no-index"], env=env)
    assert result.exit_code == 0, result.output
    if reindex:
        result = runner.invoke(cli, ["--data-dir", str(data_dir), "reindex"], env=env)
        assert result.exit_code == 0, result.output


def test_no_spelling_canonical_or_redirect_makes_staff_text_public(hostile: HostileSite, data_dir: Path) -> None:
    from kb.search import Searcher
    from kb.web import create_app

    _crawl(hostile, data_dir, reindex=True)
    reached = {p: w for p, w in hostile.staff_words.items() if not p.startswith(FORBIDDEN_PREFIXES)}
    assert len(reached) == len(STAFF_LINKS) + 5

    with open_store(data_paths(data_dir)["store"]) as store:
        articles = list(store.iter_articles())
    for path, word in reached.items():  # each staff text was stored, and only in staff records
        holders = [a for a in articles if word in a.text]
        assert holders, f"{path} was never stored: the test would prove nothing"
        assert {a.audience for a in holders} == {"staff"}, (path, [(a.url, a.audience) for a in holders])
    urls = {a.url: a.audience for a in articles}
    base = hostile.server.url
    assert urls[base + "/protocols/b/"] == urls[base + "/protocols/c/"] == urls[base + "/PROTOCOLS/h/"] == "staff"
    assert urls[base + "/protocols/limit/"] == "staff" and base + "/pub-limit/" not in urls  # never stored unfetched
    assert base + "/gone-canon/" not in urls and base + "/pub-canon/" not in urls  # stored as its staff original
    assert urls[base + "/pub-landing/"] == urls[base + "/pub-print/"] == "staff"
    assert urls[base + "/"] == "public"

    every_word = " OR ".join(reached.values())
    searcher = Searcher(data_paths(data_dir)["index"])
    try:
        for path, word in reached.items():
            assert searcher.search(word).total == 0, f"anonymous search finds the staff text of {path}"
        assert searcher.search(every_word, audiences=("public", "staff")).total == len(reached)  # all indexed
        assert searcher.search("homepublicword").total == 1  # anonymous search works at all
    finally:
        searcher.close()
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    try:
        data = app.test_client().get("/api/search", query_string={"q": every_word}).get_json()
        assert data["total"] == 0 and data["results"] == []
        assert app.test_client().get("/api/search?q=homepublicword").get_json()["total"] == 1
    finally:
        app.extensions["kb"].close()


def test_disallowed_and_excluded_spellings_are_never_requested(hostile: HostileSite, data_dir: Path) -> None:
    _crawl(hostile, data_dir)
    requested = [path for _, _, path, _ in hostile.server.requests]
    leaked = [path for path in requested if lenient(path).startswith(FORBIDDEN_PREFIXES)]
    assert leaked == []
    for source in ("/to-private/", "/to-private-2/", "/to-members/", "/pub-redirect/"):
        assert source in requested  # the redirect itself was followed up to the forbidden hop
    assert "/%70rotocols/r2/" in requested or "/protocols/r2/" in requested


def test_explain_judges_the_whole_fetch(hostile: HostileSite, settings: dict) -> None:
    base = hostile.server.url
    (Path(settings["DATA_DIR"]) / "sources.toml").write_text(
        f'[[site]]\nname = "hostile"\nurl = "{base}/"\nstaff_paths = ["/protocols/"]\nexclude = ["/members/"]\n')
    spelled = explain(base + "/%2e/%70rotocols/b/", settings)
    assert spelled["url"] == base + "/protocols/b/" and spelled["audience"] == "staff"
    assert explain(base + "/pub-redirect/", settings)["audience"] == "staff"  # through /protocols/hop/
    assert explain(base + "/pub-print/", settings)["audience"] == "staff"  # its canonical is staff
    assert explain(base + "/PROTOCOLS/h/", settings)["audience"] == "staff"
    blocked = explain(base + "/to-private/", settings)
    assert blocked["skip_kind"] == "robots" and "/private/g" in blocked["skipped"]
    assert explain(base + "/%6Dembers/b", settings)["skip_kind"] == "out_of_scope"
    assert not [p for _, _, p, _ in hostile.server.requests if lenient(p).startswith(FORBIDDEN_PREFIXES)]
    assert explain(base + "/pub-limit/", settings)["audience"] == "public"  # control: public stays public


def test_records_stored_under_old_spellings_become_staff_and_converge(hostile: HostileSite, store: Store,
                                                                     settings: dict) -> None:
    """A store written by older rules: a staff page kept public under a spelled URL, and a staff text laundered
    to its public canonical. The next crawl makes them staff before fetching anything, then retires them."""
    base = hostile.server.url
    spelled = base + "/%70rotocols/b/"
    laundered = base + "/gone-canon/"
    for url, fetched, word in ((spelled, spelled, staff_word("/protocols/b/")),
                               (laundered, base + "/protocols/canon/", staff_word("/protocols/canon/"))):
        article_id, _ = store.save_article(Article(url=url, title="old", text=f"{word} kept by older rules",
                                                   site=hostile.server.url[7:]), source="hostile")
        store.record_page(fetched, source="hostile", canonical=url, article_id=article_id)
    source = Source(name="hostile", url=base + "/", staff_paths=["/protocols/"], exclude=["/members/"],
                    max_pages=1)
    stats = crawl_source(source, store, settings)  # only the home page fits: the old records are not refetched
    assert stats.truncated
    assert store.get_article_by_url(spelled).audience == "staff"
    assert store.get_article_by_url(laundered).audience == "staff"
    assert any("made staff" in m for m in stats.messages)

    crawl_source(Source(name="hostile", url=base + "/", staff_paths=["/protocols/"], exclude=["/members/"]),
                 store, settings)
    assert store.get_article_by_url(spelled) is None  # renamed: the page now lives under its one identity
    assert store.get_article_by_url(base + "/protocols/b/").audience == "staff"
    assert store.get_page(spelled)["article_id"] is None
    assert store.get_article_by_url(base + "/protocols/canon/").audience == "staff"
    assert store.get_article_by_url(laundered) is None  # replaced by the page it was fetched from


# -- a lenient server: NFKC, overlong UTF-8, %uXXXX, format characters dropped, repeated decoding ------------

LENIENT_LINKS = {  # code -> spelling of "/protocols/" a public page links to; the server serves staff text there
    "aj": "/\uff0fprotocols/", "ak": "/\uff50rotocols/", "al": "/protocols%C0%AF", "am": "/x/%c0%ae%c0%ae/protocols/",
    "an": "/protocols%E2%80%8B/", "ar": "/%u0070rotocols/", "as": "/\U0001d429rotocols/", "aw": "/pro%C2%ADtocols/",
    "ax": "/protocols%EF%BC%8F", "ay": "/\u24dfrotocols/", "az": "/protoco\u2113s/", "ba": "/%25u0070rotocols/",
    "bb": "/%E0%80%AFprotocols/", "bc": "/pro%E2%80%8Dtocols/",
}
LENIENT_SITEMAP = {"ca": "/%EF%BD%90rotocols/", "cd": "/protocols%C0%AF"}
LENIENT_FEED = {"cb": "/\uff50rotocols/"}
LENIENT_REST = {"cc": "/\uff50rotocols/", "ce": "/pro\u00adtocols/"}


def lenient_reading(raw: str) -> str:
    """How the lenient server routes a request path (the attacker's reading, test-local)."""
    path = raw.split("?", 1)[0]
    for _ in range(4):
        step = re.sub(r"%u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), path)
        data = unquote_to_bytes(step).replace(b"\xc0\xaf", b"/").replace(b"\xe0\x80\xaf", b"/")
        step = data.replace(b"\xc0\xae", b".").decode("utf-8", "replace")
        if step == path:
            break
        path = step
    path = unicodedata.normalize("NFKC", path)
    path = "".join(c for c in path if unicodedata.category(c) != "Cf").replace("\\", "/").casefold()
    return posixpath.normpath(re.sub(r"/+", "/", path))


@pytest.fixture
def lenient_site() -> Iterator[tuple[FixtureSite, dict[str, str]]]:
    """The lenient hostile site and the unique word of each staff text it serves (by code)."""
    server = FixtureSite()
    base = server.url
    words = {code: f"zqlenient{code}xv" for code in
             [*LENIENT_LINKS, *LENIENT_SITEMAP, *LENIENT_FEED, *LENIENT_REST, "be"]}
    home_links = [f"{p}page-{c}" for c, p in LENIENT_LINKS.items()] + ["/lh/be", "/pub/pa", "/protocols-old/po"]
    xml = {"Content-Type": "application/xml"}
    fixed = {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, f"User-agent: *\nAllow: /\nSitemap: {base}/sitemap.xml\n"),
        "/sitemap.xml": (200, xml, '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                         + "".join(f"<url><loc>{base}{p}page-{c}</loc></url>" for c, p in LENIENT_SITEMAP.items())
                         + "</urlset>"),
        "/feed": (200, {"Content-Type": "application/rss+xml"},
                  f'<?xml version="1.0"?><rss version="2.0"><channel><title>f</title><link>{base}/</link>'
                  + "".join(f"<item><title>t{c}</title><link>{base}{p}page-{c}</link></item>"
                            for c, p in LENIENT_FEED.items()) + "</channel></rss>"),
        "/wp-json/wp/v2/posts": (200, {"Content-Type": "application/json", "X-WP-TotalPages": "1"}, json.dumps(
            [{"id": i, "link": f"{base}{p}page-{c}", "status": "publish", "modified_gmt": "2024-01-01T00:00:00",
              "content": {"protected": False}} for i, (c, p) in enumerate(LENIENT_REST.items(), 1)])),
        "/": (200, {"Content-Type": HTML}, page("Lenient clinic", "lenienthomeword", links=home_links)),
        "/pub/pa": (200, {"Content-Type": HTML}, page("Public acne", "lenientpublicword")),
        "/protocols-old/po": (200, {"Content-Type": HTML}, page("Old protocols", "lenientoldword")),
        "/lh/be": (200, {"Content-Type": HTML, "Link": f'<{base}/protocols/page-be>; rel="canonical"'},
                   page("Protocol be", words["be"])),
    }

    def answer(site: FixtureSite, handler: Any) -> tuple[int, dict[str, str], str]:
        reading = lenient_reading(handler.path)
        if reading in fixed:
            return fixed[reading]
        if reading.startswith("/protocols/page-") and reading[16:] in words:
            return 200, {"Content-Type": HTML}, page(f"Protocol {reading[16:]}", words[reading[16:]])
        return 404, {"Content-Type": HTML}, "<h1>Not found</h1>"

    server.pages["/*"] = (200, {}, answer)
    yield server, words
    server.close()


def test_lenient_server_spellings_and_link_header_canonicals_stay_staff(
        lenient_site: tuple[FixtureSite, dict[str, str]], data_dir: Path) -> None:
    from kb.search import Searcher
    from kb.web import create_app

    server, words = lenient_site
    (data_dir / "sources.toml").write_text(
        f'[[site]]\nname = "lenient"\nurl = "{server.url}/"\nstaff_paths = ["/protocols/"]\n', "utf-8")
    runner = CliRunner()
    env = {"KB_CRAWL_DELAY": "0", "KB_TIMEOUT": "5"}
    for command in (["crawl", "--no-index"], ["reindex"]):
        result = runner.invoke(cli, ["--data-dir", str(data_dir), *command], env=env)
        assert result.exit_code == 0, result.output

    with open_store(data_paths(data_dir)["store"]) as store:
        articles = list(store.iter_articles())
    for code, word in words.items():  # every staff text was stored (not vacuous), and only as staff
        holders = [a for a in articles if word in a.text]
        assert holders, f"page-{code} was never stored: the test would prove nothing"
        assert {a.audience for a in holders} == {"staff"}, [(a.url, a.audience) for a in holders]
    audiences = {a.url: a.audience for a in articles}
    assert audiences[server.url + "/pub/pa"] == audiences[server.url + "/protocols-old/po"] == "public"

    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    searcher = Searcher(data_paths(data_dir)["index"])
    try:
        client = app.test_client()
        for word in words.values():
            data = client.get("/api/search", query_string={"q": word}).get_json()
            assert data["total"] == 0 and data["results"] == [], word
        assert searcher.search(" OR ".join(words.values()), audiences=("public", "staff")).total == len(words)
        for word in ("lenientpublicword", "lenientoldword"):
            assert client.get("/api/search", query_string={"q": word}).get_json()["total"] == 1
    finally:
        searcher.close()
        app.extensions["kb"].close()


def test_explain_counts_the_link_header_canonical(lenient_site: tuple[FixtureSite, dict[str, str]],
                                                  settings: dict) -> None:
    server, _ = lenient_site
    (Path(settings["DATA_DIR"]) / "sources.toml").write_text(
        f'[[site]]\nname = "lenient"\nurl = "{server.url}/"\nstaff_paths = ["/protocols/"]\n', "utf-8")
    record = explain(server.url + "/lh/be", settings)
    assert record["audience"] == "staff"
    assert record["link_canonicals"] == [server.url + "/protocols/page-be"]
    assert any("Link header" in note for note in record["notes"])
    assert explain(server.url + "/pub/pa", settings)["audience"] == "public"
    assert explain(server.url + "/%EF%BD%90rotocols/page-ak", settings)["audience"] == "staff"
