"""crawl_source end to end against the real fixture blog: discovery, politeness, conditional recrawls that
write nothing, removal with its guard, every failure recorded while the crawl goes on; and explain()."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from kb import config
from kb.pipeline import crawl_report, crawl_source, explain
from kb.sources import Source
from kb.store import Store
from tests.fixture_site import FixtureSite, make_settings

ARTICLES = ["/2024/01/rosacea-vbeam/", "/2024/02/acne-scars/", "/2024/03/laser-safety-protocol/",
            "/sebaceous-glands/", "/vbeam/", "/staff/handbook/"]


def blog(site: FixtureSite, **kw: Any) -> Source:
    return Source(name="blog", url=site.url + "/", staff_paths=["/staff/"], staff_categories=["staff protocols"],
                  **kw)


def stored_paths(store: Store, site: FixtureSite) -> set[str]:
    return {url[len(site.url):] for url in store.article_ids("blog")}


def error_kind(store: Store, site: FixtureSite, path: str) -> str:
    row = store.get_page(site.abs(path))
    assert row is not None, path
    return row["error"].split(":", 1)[0]


@pytest.fixture
def audit(store: Store) -> Iterator[list[str]]:
    """Every write to article data (articles, sections, raw pages, changes), caught by temporary triggers."""
    store.db.execute("CREATE TEMP TABLE audit (what TEXT)")
    for table in ("articles", "sections", "raw_pages", "changes"):
        for op in ("INSERT", "UPDATE", "DELETE"):
            store.db.execute(f"CREATE TEMP TRIGGER audit_{table}_{op} AFTER {op} ON main.{table} "
                             f"BEGIN INSERT INTO audit VALUES ('{op} {table}'); END")
    writes: list[str] = []
    yield writes


def audited(store: Store) -> list[str]:
    rows = [r[0] for r in store.db.execute("SELECT what FROM audit")]
    store.db.execute("DELETE FROM audit")
    return rows


def test_first_crawl_discovers_and_stores_the_blog(site: FixtureSite, store: Store, data_dir: Path) -> None:
    progress: list[str] = []
    stats = crawl_source(blog(site), store, make_settings(data_dir), progress=progress.append)
    assert stored_paths(store, site) == set(ARTICLES)
    assert stats.new == 6 and stats.updated == 0 and stats.removed == 0
    # never requested: disallowed, other hosts, non-HTML, WordPress machinery, search links
    paths = site.paths()
    assert not any(p.startswith(("/private/", "/wp-admin", "/?s=", "/wp-content/")) for p in paths)
    assert site.other is not None and site.other.requests == []
    assert len(site.hits("/2024/01/rosacea-vbeam/")) == 1  # ?utm_source=…#comments is the same page
    # discovery used robots.txt, the sitemap index, the REST API and the paginated feed
    for path in ("/robots.txt", "/sitemap_index.xml", "/post-sitemap.xml", "/wp-json/wp/v2/posts",
                 "/wp-json/wp/v2/categories", "/feed/"):
        assert site.hits(path), path
    assert "/feed/?paged=2" in paths
    # why the rest was not stored, per page and per kind
    assert error_kind(store, site, "/noindex-page/") == "noindex"  # meta robots
    assert error_kind(store, site, "/x-robots-page/") == "noindex"  # X-Robots-Tag header
    assert error_kind(store, site, "/2024/04/draft-post/") == "not_published"  # REST status draft
    assert error_kind(store, site, "/2024/04/members-only/") == "not_published"  # content.protected
    assert error_kind(store, site, "/rosacea-print/") == "duplicate"  # canonical elsewhere
    assert error_kind(store, site, "/private/secret-notes/") == "robots"
    assert error_kind(store, site, "/gone-post/") == "http_404"
    assert not site.hits("/category/lasers/")  # sitemaps and REST listed every post: archives are not visited
    kinds = stats.errors_by_kind
    assert kinds["noindex"] == 2 and kinds["not_published"] == 2 and kinds["duplicate"] == 1
    assert kinds["robots"] == stats.robots >= 2 and kinds["http_404"] >= 1
    assert {s["kind"] for s in stats.skips} >= {"noindex", "robots", "http_404", "duplicate", "not_published"}
    # audience: staff path, and a category known only from the REST API
    protocol = store.get_article_by_url(site.abs("/2024/03/laser-safety-protocol/"))
    assert protocol is not None and protocol.audience == "staff" and protocol.categories == ["Staff Protocols"]
    assert store.get_article_by_url(site.abs("/staff/handbook/")).audience == "staff"
    rosacea = store.get_article_by_url(site.abs("/2024/01/rosacea-vbeam/"))
    assert rosacea.audience == "public" and rosacea.site == site.url.split("//")[1]
    assert "Who benefits" in [s.heading for s in rosacea.sections]
    # raw bodies kept for re-extraction; progress per page; crawl log written
    assert store.get_raw(site.abs("/vbeam/"))[0].startswith(b"<!DOCTYPE html>")
    assert len(progress) >= stats.pages and progress[0] == f"[1/5000] skipped (empty) {site.url}/"  # start first
    assert f"[2/5000] new {site.abs('/2024/03/laser-safety-protocol/')}" in progress  # then the newest listed
    log = store.recent_crawls(1)[0]
    assert log["source"] == "blog" and log["finished_at"] and log["stats"]["new"] == 6


def test_requests_are_spaced_by_crawl_delay(site: FixtureSite, store: Store, data_dir: Path) -> None:
    site.crawl_delay = 0.25  # robots.txt Crawl-delay raises our 0.15 s
    started = time.monotonic()
    stats = crawl_source(blog(site, max_pages=2), store, make_settings(data_dir, CRAWL_DELAY=0.15))
    times = [r[0] for r in site.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 10 and stats.pages == 2 and stats.truncated
    assert min(gaps) >= 0.25
    assert time.monotonic() - started < 10


def test_unchanged_recrawl_is_conditional_and_writes_nothing(site: FixtureSite, store: Store, data_dir: Path,
                                                             audit: list[str]) -> None:
    settings = make_settings(data_dir)
    crawl_source(blog(site), store, settings)
    assert audited(store)  # the first crawl wrote articles (the audit works)
    before = len(site.requests)
    changes = store.last_change()
    stats = crawl_source(blog(site), store, settings)
    assert audited(store) == []  # no article, section, raw page or change-log write at all
    assert store.last_change() == changes
    assert stats.new == stats.updated == stats.removed == 0 and stats.unchanged == 6
    assert stats.not_modified >= 6
    second = site.requests[before:]
    for path in ARTICLES:
        [(_, _, _, headers)] = [r for r in second if r[2] == path]
        assert headers["if-none-match"].startswith('"') and headers["if-modified-since"]
    assert error_kind(store, site, "/x-robots-page/") == "noindex"  # a 304 keeps the header's noindex


def test_server_without_validators_same_hash_writes_nothing(site: FixtureSite, store: Store, data_dir: Path,
                                                            audit: list[str]) -> None:
    site.conditional = False  # no ETag / Last-Modified: every answer is a full 200
    settings = make_settings(data_dir)
    crawl_source(blog(site), store, settings)
    audited(store)
    stats = crawl_source(blog(site), store, settings)
    assert audited(store) == [] and stats.unchanged == 6 and stats.not_modified == 0 and stats.fetched >= 6


def test_changed_page_updated_and_deleted_page_removed(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir)
    crawl_source(blog(site), store, settings)
    gone_id = store.article_ids("blog")[site.abs("/sebaceous-glands/")]
    status, headers, body = site.pages["/vbeam/"]
    site.pages["/vbeam/"] = (status, headers, body.replace("595 nm", "595 nanometres"))
    site.remove("/sebaceous-glands/")
    seq = store.last_change()
    stats = crawl_source(blog(site), store, settings)
    assert stats.updated == 1 and stats.removed == 1 and stats.new == 0
    assert "/sebaceous-glands/" not in stored_paths(store, site)
    assert "595 nanometres" in store.get_article_by_url(site.abs("/vbeam/")).text
    upserts, deletes, _ = store.changes_since(seq)
    assert deletes == {gone_id} and len(upserts) == 1
    assert store.get_page(site.abs("/sebaceous-glands/"))["status"] == 404


def test_removal_guard_refuses_mass_removal_unless_forced(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir)
    crawl_source(blog(site), store, settings)
    gone = ARTICLES[1:4]
    for path in gone:
        site.remove(path)
    stats = crawl_source(blog(site), store, settings)
    assert stats.removed == 0 and stats.removal_refused == 3
    assert stored_paths(store, site) == set(ARTICLES)  # nothing lost
    [message] = [m for m in stats.messages if "Refused to remove" in m]
    assert "3 of 6" in message and "REMOVE_MAX_SHARE" in message and "--force" in message
    assert "Refused to remove" in json.dumps(store.recent_crawls(1)[0]["stats"])
    forced = crawl_source(blog(site), store, settings, force=True)
    assert forced.removed == 3 and stored_paths(store, site) == set(ARTICLES) - set(gone)


def test_orphaned_page_removed_after_consecutive_misses(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir, REMOVE_AFTER_MISSES=2)
    crawl_source(blog(site), store, settings)
    status, headers, body = site.pages["/"]
    site.pages["/"] = (status, headers, body.replace('"/staff/handbook/"', '"/vbeam/"'))  # nothing links it now
    first = crawl_source(blog(site), store, settings)
    assert first.removed == 0 and store.get_page(site.abs("/staff/handbook/"))["misses"] == 1
    second = crawl_source(blog(site), store, settings)
    assert second.removed == 1 and "/staff/handbook/" not in stored_paths(store, site)
    assert site.hits("/staff/handbook/") and len(site.hits("/staff/handbook/")) == 1  # never refetched


def test_limited_crawl_counts_no_misses(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir, REMOVE_AFTER_MISSES=1)
    crawl_source(blog(site), store, settings)
    stats = crawl_source(blog(site, max_pages=3), store, settings)
    assert stats.truncated and stats.pages == 3 and stats.removed == 0
    assert any("max_pages" in m for m in stats.messages)
    assert stored_paths(store, site) == set(ARTICLES)
    assert all(row["misses"] == 0 for row in store.pages_for_source("blog"))


def test_each_discovery_channel_finds_unlinked_pages(site: FixtureSite, store: Store, data_dir: Path) -> None:
    from tests.fixture_site import _article_html

    for path, title in [("/only-in-sitemap/", "Milia"), ("/only-in-feed/", "Keratosis pilaris"),
                        ("/only-in-rest/", "Seborrhoeic keratosis")]:
        site.set(path, _article_html(site, path, title))
    status, headers, body = site.pages["/page-sitemap.xml"]
    site.pages["/page-sitemap.xml"] = (status, headers, body.replace(
        "</urlset>", f"<url><loc>{site.abs('/only-in-sitemap/')}</loc></url></urlset>"))
    status, headers, body = site.pages["/feed/?paged=2"]
    site.pages["/feed/?paged=2"] = (status, headers, body.replace(
        "</channel>", f"<item><title>KP</title><link>{site.abs('/only-in-feed/')}</link></item></channel>"))
    site.rest_extra.append({"id": 77, "link": site.abs("/only-in-rest/"), "modified_gmt": "2024-05-01T00:00:00",
                            "status": "publish", "categories": [2], "tags": [], "content": {"protected": False}})
    stats = crawl_source(blog(site), store, make_settings(data_dir))
    assert {"/only-in-sitemap/", "/only-in-feed/", "/only-in-rest/"} <= stored_paths(store, site)
    assert store.get_article_by_url(site.abs("/only-in-rest/")).categories == ["Acne"]
    assert stats.discovered >= 9


def test_without_sitemap_or_api_archives_are_followed_not_stored(site: FixtureSite, store: Store,
                                                                  data_dir: Path) -> None:
    for path in ("/sitemap_index.xml", "/wp-json/wp/v2/posts", "/wp-json/wp/v2/pages"):
        site.remove(path)
    site.set("/about/", '<html><body><p>About</p><a href="/category/lasers/">Lasers</a></body></html>')
    status, headers, body = site.pages["/"]
    site.pages["/"] = (status, headers, body.replace('"/vbeam/"', '"/about/"').replace('"/category/lasers/"', '"/x/"'))
    stats = crawl_source(blog(site), store, make_settings(data_dir))
    assert error_kind(store, site, "/category/lasers/") == "listing"
    assert error_kind(store, site, "/category/lasers/page/2/") == "listing"
    assert stats.listings == 2 and "listing" not in stats.errors_by_kind  # followed, not an error


def test_failures_are_recorded_and_the_crawl_goes_on(site: FixtureSite, store: Store, data_dir: Path) -> None:
    site.edge()  # type: ignore[attr-defined]
    # TIMEOUT covers a page with its retries, so the Retry-After: 1 of /busy/ must fit in it
    settings = make_settings(data_dir, TIMEOUT=2.0, RETRIES=1, RETRY_BACKOFF=0.1, MAX_PAGE_BYTES=1_000_000)
    started = time.monotonic()
    stats = crawl_source(blog(site), store, settings)
    assert time.monotonic() - started < 20
    expected = {"/loop-a/": "redirect_loop", "/slow/": "timeout", "/huge/": "too_large",
                "/huge-declared/": "too_large", "/binary/": "binary", "/garbage-utf8/": "bad_encoding",
                "/offsite-redirect/": "redirect_out_of_scope", "/download/": "not_html", "/empty-page/": "empty"}
    assert {path: error_kind(store, site, path) for path in expected} == expected
    for kind in expected.values():
        assert stats.errors_by_kind.get(kind), kind
    reasons = " | ".join(s["reason"] for s in stats.skips)
    for words in ("redirect loop", "too large", "MAX_PAGE_BYTES", "binary content served as text/html",
                  "not valid utf-8", "TIMEOUT", "redirects out of scope", "not an HTML page"):
        assert words in reasons
    paths = stored_paths(store, site)
    assert set(ARTICLES) | {"/flaky/", "/busy/", "/latin1-in-utf8/"} <= paths  # the crawl went on
    assert len(site.hits("/flaky/")) == 2  # 500, then retried
    busy = [r[0] for r in site.hits("/busy/")]
    assert len(busy) == 2 and busy[1] - busy[0] >= 1.0  # Retry-After: 1 honoured
    assert "Caf\ufffd au lait" in store.get_article_by_url(site.abs("/latin1-in-utf8/")).title
    assert store.get_page(site.abs("/old-vbeam/"))["canonical"] == site.abs("/vbeam/")  # redirect chain
    assert site.bytes_sent["/huge/"] < 10_000_000
    assert site.other is not None and site.other.requests == []


def test_stored_articles_survive_page_failures(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir, MAX_PAGE_BYTES=1_000_000)
    crawl_source(blog(site), store, settings)
    from tests.fixture_site import _huge

    site.pages["/vbeam/"] = (200, {}, _huge)
    site.set("/sebaceous-glands/", bytes(range(256)) * 50)
    site.set("/2024/02/acne-scars/", "<h1>Database error</h1>", status=500)
    stats = crawl_source(blog(site), store, settings)
    assert stats.removed == 0 and stored_paths(store, site) == set(ARTICLES)
    assert {error_kind(store, site, p) for p in ("/vbeam/", "/sebaceous-glands/", "/2024/02/acne-scars/")} == {
        "too_large", "binary", "http_5xx"}


def test_unavailable_robots_fetches_nothing_and_removes_nothing(site: FixtureSite, store: Store,
                                                                data_dir: Path) -> None:
    settings = make_settings(data_dir, REMOVE_AFTER_MISSES=1)
    crawl_source(blog(site), store, settings)
    site.set("/robots.txt", "down for maintenance", status=503)
    before = len(site.requests)
    stats = crawl_source(blog(site), store, settings)
    assert [r[2] for r in site.requests[before:]] == ["/robots.txt"]
    assert stats.robots >= 1 and stats.removed == 0 and stats.pages == 0
    assert any("robots.txt is unavailable" in m for m in stats.messages)
    assert stored_paths(store, site) == set(ARTICLES)


def test_malformed_feed_and_sitemap_bombs_are_skips(site: FixtureSite, store: Store, data_dir: Path) -> None:
    site.set("/feed/", "<rss><channel><item><title>broken", content_type="application/rss+xml")
    lol = '<!ENTITY a0 "lollollollollol">' + "".join(
        f'<!ENTITY a{i} "{"".join(f"&a{i - 1};" for _ in range(10))}">' for i in range(1, 10))
    site.set("/lol-sitemap.xml", f'<?xml version="1.0"?><!DOCTYPE urlset [{lol}]><urlset><url><loc>&a9;</loc>'
             "</url></urlset>", content_type="application/xml")

    def nested(fixture: FixtureSite, handler: Any) -> tuple[int, dict[str, str], str]:
        children = "".join(f"<sitemap><loc>{fixture.abs(handler.path.rstrip('.xml'))}-{i}.xml</loc></sitemap>"
                           for i in range(20))
        return 200, {"Content-Type": "application/xml"}, f"<sitemapindex>{children}</sitemapindex>"

    site.pages["/bomb*"] = (200, {}, nested)
    site.set("/sitemap_index.xml", f"<sitemapindex><sitemap><loc>{site.abs('/lol-sitemap.xml')}</loc></sitemap>"
             f"<sitemap><loc>{site.abs('/bomb.xml')}</loc></sitemap></sitemapindex>", content_type="application/xml")
    stats = crawl_source(blog(site), store, make_settings(data_dir))
    kinds = stats.errors_by_kind
    assert kinds.get("bad_feed") == 1 and kinds.get("bad_sitemap") == 1 and kinds.get("sitemap_limit") == 1
    reasons = {s["kind"]: s["reason"] for s in stats.skips}
    assert "not a readable RSS/Atom feed" in reasons["bad_feed"]
    assert "not well-formed XML" in reasons["bad_sitemap"]
    assert "more than 50 sitemaps" in reasons["sitemap_limit"]
    assert len([p for p in site.paths() if p.startswith("/bomb")]) <= 50
    assert stored_paths(store, site) == set(ARTICLES)  # REST and links still found everything


def test_canonical_that_fails_keeps_the_page_under_its_own_url(site: FixtureSite, store: Store,
                                                               data_dir: Path) -> None:
    from tests.fixture_site import _article_html

    site.set("/copy/", _article_html(site, "/copy/", "Perioral dermatitis", canonical=site.abs("/moved-away/")))
    status, headers, body = site.pages["/"]
    site.pages["/"] = (status, headers, body.replace("</ul>", '<li><a href="/copy/">c</a></li></ul>'))
    crawl_source(blog(site), store, make_settings(data_dir))
    assert "/copy/" in stored_paths(store, site) and "/moved-away/" not in stored_paths(store, site)
    assert error_kind(store, site, "/moved-away/") == "http_404"


def test_one_page_bug_does_not_stop_the_crawl(site: FixtureSite, store: Store, data_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import kb.extract

    real = kb.extract.extract

    def flaky_extract(html: Any, url: str, **kw: Any) -> Any:
        if url.endswith("/vbeam/"):
            raise RuntimeError("boom")
        return real(html, url, **kw)

    monkeypatch.setattr(kb.extract, "extract", flaky_extract)
    stats = crawl_source(blog(site), store, make_settings(data_dir))
    assert stats.errors_by_kind["internal"] == 1
    assert error_kind(store, site, "/vbeam/") == "internal"
    assert stored_paths(store, site) == set(ARTICLES) - {"/vbeam/"}


# -- explain and report -----------------------------------------------------------------------------------

def test_explain_a_post(site: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir)
    out = explain(site.abs("/2024/01/rosacea-vbeam/?utm_source=x"), settings)
    assert out["skipped"] is None and out["url"] == site.abs("/2024/01/rosacea-vbeam/")
    assert out["title"] == "Treating rosacea redness with VBeam"
    assert out["canonical"] == site.abs("/2024/01/rosacea-vbeam/")
    assert {"heading": "Who benefits", "anchor": "who-benefits"}.items() <= next(
        s for s in out["sections"] if s["heading"] == "Who benefits").items()
    assert "pulsed dye laser" in out["text"] and out["published"].startswith("2024-01-10")
    assert "Lasers" in out["categories"] and out["stored"] is None
    assert set(out) >= {"url", "canonical", "title", "text", "sections", "published", "modified", "author",
                        "categories", "tags", "skipped"}
    json.dumps(out)  # printable as --json
    crawl_source(blog(site), store, settings)
    assert explain(site.abs("/2024/01/rosacea-vbeam/"), settings, store)["stored"]["up_to_date"] is True
    assert explain(site.abs("/rosacea-print/"), settings)["canonical"] == site.abs("/2024/01/rosacea-vbeam/")


def test_explain_says_why_not(site: FixtureSite, data_dir: Path) -> None:
    settings = make_settings(data_dir)
    cases = {
        "/noindex-page/": ("noindex", "asks not to be indexed"),
        "/private/secret-notes/": ("robots", "robots.txt disallows"),
        "/category/lasers/": ("listing", "archive listing"),
        "/wp-content/uploads/rosacea-leaflet.pdf": ("out_of_scope", "not an HTML page (.pdf)"),
        "/no-such-page/": ("http_404", "HTTP 404"),
    }
    for path, (kind, words) in cases.items():
        out = explain(site.abs(path), settings)
        assert out["skip_kind"] == kind and words in out["skipped"], path
        assert out["title"] == "" and out["sections"] == []
    assert explain("mailto:someone@example.org", settings)["skipped"] == "not an http(s) address"
    (data_dir / "sources.toml").write_text(f'[[site]]\nname = "blog"\nurl = "{site.url}/"\nexclude = ["/vbeam/"]\n'
                                           'audience = "staff"\n')
    excluded = explain(site.abs("/vbeam/"), settings)
    assert excluded["skip_kind"] == "out_of_scope" and "exclude" in excluded["skipped"]
    assert excluded["source"] == "blog"
    assert explain(site.abs("/sebaceous-glands/"), settings)["audience"] == "staff"  # the source's rules apply


def test_crawl_report(site: FixtureSite, store: Store, data_dir: Path) -> None:
    crawl_source(blog(site), store, make_settings(data_dir))
    report = crawl_report(store)
    assert report["crawls"][0]["source"] == "blog"
    assert report["problems_by_kind"]["http_404"] >= 1 and report["problems_by_kind"]["robots"] >= 2
    assert any(p["url"] == site.abs("/noindex-page/") and p["error"].startswith("noindex:")
               for p in report["problems"])
    assert crawl_report(store, source="other") == {"crawls": [], "problems": [], "problems_by_kind": {}}


# -- site boilerplate and the disclaimer flag, end to end -------------------------------------------------------

CALL_TO_BOOK = "Book a consultation today: our friendly team replies within one working day, weekends included."
FOOTER_DISCLAIMER = "The content of this website is for informational purposes only and is not medical advice."
CLINIC_TOPICS = {
    "/conditions/rosacea/": ("Rosacea", "Rosacea causes facial redness and flushing; triggers include heat."),
    "/conditions/melasma/": ("Melasma", "Melasma is brown patchy pigmentation that sunlight makes darker."),
    "/conditions/eczema/": ("Eczema", "Atopic eczema makes skin dry and itchy; emollients repair the barrier."),
    "/conditions/psoriasis/": ("Psoriasis", "Psoriasis plaques are thick and scaly; phototherapy often helps."),
    "/conditions/vitiligo/": ("Vitiligo", "Vitiligo removes pigment in patches; the team replies to questions "
                                          "about camouflage creams."),
}


def _clinic_page(title: str, text: str, *, cta: bool = True, disclaimer: bool = True) -> str:
    body = " ".join([text] * 3)
    book = f"<p>{CALL_TO_BOOK}</p>" if cta else ""
    footer = f"<p>{FOOTER_DISCLAIMER}</p>" if disclaimer else "<p>© Riverside Clinic</p>"
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head><body>
<nav class="menu"><a href="/">Home</a></nav>
<main><article><h1>{title}</h1><p>{body}</p><p>{text} More detail follows in this second paragraph.</p>
{book}</article></main><footer class="site-footer">{footer}</footer></body></html>"""


@pytest.fixture
def clinic() -> Iterator[FixtureSite]:
    """A small clinic site: five condition pages share a call to book and a disclaimer footer; one has neither."""
    server = FixtureSite()
    links = [*CLINIC_TOPICS, "/conditions/acne/"]
    server.set("/", "<html><head><title>Clinic</title></head><body><nav>"
               + "".join(f'<a href="{p}">{p}</a> ' for p in links) + "</nav></body></html>")
    for path, (title, text) in CLINIC_TOPICS.items():
        server.set(path, _clinic_page(title, text))
    server.set("/conditions/acne/", _clinic_page(
        "Acne", "Acne forms when pores clog with sebum; retinoids keep them open.", cta=False, disclaimer=False))
    yield server
    server.close()


def test_site_boilerplate_is_stripped_from_text_search_and_snippets(clinic: FixtureSite, store: Store,
                                                                      data_dir: Path, audit: list[str]) -> None:
    from kb.index import rebuild, update
    from kb.search import Searcher

    settings = make_settings(data_dir)
    source = Source(name="clinic", url=clinic.url + "/")
    messages: list[str] = []
    stats = crawl_source(source, store, settings, progress=messages.append)
    ids = store.article_ids("clinic")
    assert set(CLINIC_TOPICS) | {"/conditions/acne/"} <= {u[len(clinic.url):] for u in ids}
    host = source.host
    assert stats.boilerplate[host]["added"] == 1 and stats.boilerplate[host]["reindex"] == len(CLINIC_TOPICS)
    assert any(m.startswith(f"boilerplate: 1 repeated paragraph on {host} (1 new, 0 dropped), 5 articles")
               for m in messages)
    assert any(m.startswith("boilerplate: ") for m in stats.messages)  # printed by `kb crawl`
    assert store.recent_crawls(1)[0]["stats"]["boilerplate"][host]["paragraphs"] == 1  # in the crawl log

    rosacea = store.get_article_by_url(clinic.abs("/conditions/rosacea/"))
    assert "Book a consultation" not in rosacea.text and "facial redness" in rosacea.text
    assert all("Book a consultation" not in s.text for s in rosacea.sections)
    assert CALL_TO_BOOK in store.get_raw_article(rosacea.id).text  # the store keeps what was extracted
    assert rosacea.disclaimer is True  # from the footer, outside the article text
    assert store.get_article_by_url(clinic.abs("/conditions/acne/")).disclaimer is False

    index_root = data_paths_index(data_dir)
    rebuild(store, index_root)
    searcher = Searcher(index_root)
    try:
        assert searcher.search("weekends").total == 0  # a word only the call to book has
        assert searcher.search("consultation").total == 0
        replies = searcher.search("replies")  # in the call to book, and in Vitiligo's own text ("replies")
        assert [h.url for h in replies.hits] == [clinic.abs("/conditions/vitiligo/")]
        assert "Book a consultation" not in replies.hits[0].snippet_html
        assert "weekends" not in replies.hits[0].snippet_html
        assert searcher.search("rosacea").total >= 1
    finally:
        searcher.close()

    audited(store)
    seq = store.last_change()
    again = crawl_source(source, store, settings)
    assert audited(store) == [] and store.last_change() == seq  # a recrawl of the unchanged site writes nothing
    assert again.boilerplate[host] == {"paragraphs": 1, "staff_paragraphs": 1, "added": 0, "dropped": 0, "reindex": 0}
    assert update(store, index_root) == (0, 0)


def test_boilerplate_that_stops_repeating_comes_back(clinic: FixtureSite, store: Store, data_dir: Path) -> None:
    from kb.index import rebuild, update
    from kb.maintenance import check

    settings = make_settings(data_dir)
    source = Source(name="clinic", url=clinic.url + "/")
    crawl_source(source, store, settings)
    index_root = data_paths_index(data_dir)
    rebuild(store, index_root)
    for path in list(CLINIC_TOPICS)[:3]:  # the clinic drops the call to book from three of five pages
        title, text = CLINIC_TOPICS[path]
        clinic.set(path, _clinic_page(title, text, cta=False))
    stats = crawl_source(source, store, settings)
    assert stats.updated == 3 and stats.boilerplate[source.host]["dropped"] == 1
    psoriasis = store.get_article_by_url(clinic.abs("/conditions/psoriasis/"))
    assert CALL_TO_BOOK in psoriasis.text  # two pages of six: no longer boilerplate
    indexed, deleted = update(store, index_root)
    assert indexed == 5 and deleted == 0  # three edited pages and the two that read differently now
    assert check(store, index_root)["ok"]


def test_explain_shows_boilerplate_and_disclaimer(clinic: FixtureSite, store: Store, data_dir: Path) -> None:
    settings = make_settings(data_dir)
    url = clinic.abs("/conditions/melasma/")
    before = explain(url, settings, store)
    assert before["boilerplate"] == [] and before["disclaimer"] is True
    assert CALL_TO_BOOK in before["text"]
    crawl_source(Source(name="clinic", url=clinic.url + "/"), store, settings)
    out = explain(url, settings, store)
    assert out["boilerplate"] == [CALL_TO_BOOK] and out["disclaimer"] is True
    assert out["stored"]["up_to_date"] is True  # compared with the stored (unstripped) article
    assert explain(clinic.abs("/conditions/acne/"), settings, store)["disclaimer"] is False
    assert explain(url, settings)["boilerplate"] == []  # without a store nothing is known about the site


def test_article_page_and_api_show_the_disclaimer(clinic: FixtureSite, store: Store, data_dir: Path) -> None:
    from kb.web import create_app

    crawl_source(Source(name="clinic", url=clinic.url + "/"), store, make_settings(data_dir))
    with_note = store.get_article_by_url(clinic.abs("/conditions/eczema/"))
    without = store.get_article_by_url(clinic.abs("/conditions/acne/"))
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    try:
        with app.test_client() as client:
            page = client.get(f"/article/{with_note.id}").get_data(as_text=True)
            assert "The source page carries a medical disclaimer." in page
            assert "Book a consultation" not in page
            assert "carries a medical disclaimer" not in client.get(f"/article/{without.id}").get_data(as_text=True)
            data = client.get(f"/api/articles/{with_note.id}").get_json()
            assert data["disclaimer"] is True and CALL_TO_BOOK not in data["text"]
            assert client.get(f"/api/articles/{without.id}").get_json()["disclaimer"] is False
    finally:
        app.extensions["kb"].close()


def data_paths_index(data_dir: Path) -> Path:
    return config.data_paths(data_dir)["index"]


def test_attribute_bomb_is_skipped_and_the_crawl_goes_on(site: FixtureSite, store: Store, data_dir: Path) -> None:
    # 60k attributes on one <p> (490 KB): lxml alone would parse this page for about half a minute
    bomb = "<html><body><p " + " ".join(f"a{i:x}=1" for i in range(60_000)) + ">Hello</p></body></html>"
    site.set("/vbeam/", bomb)
    settings = make_settings(data_dir)
    started = time.monotonic()
    stats = crawl_source(blog(site), store, settings)
    assert time.monotonic() - started < 15  # ~1 s here
    assert error_kind(store, site, "/vbeam/") == "hostile_markup"
    assert stats.errors_by_kind["hostile_markup"] == 1
    assert any(s["kind"] == "hostile_markup" and "more than 5,000 attributes" in s["reason"] for s in stats.skips)
    assert stored_paths(store, site) == set(ARTICLES) - {"/vbeam/"}  # the crawl went on
    out = explain(site.abs("/vbeam/"), settings)
    assert out["skip_kind"] == "hostile_markup" and "attributes" in out["skipped"] and out["sections"] == []
