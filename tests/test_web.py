"""HTML pages of kb.web: rendering, escaping, source links, facets, pagination, errors, headers.

Most tests inject a small recording searcher (app config SEARCHER) so each page
state can be produced exactly; `test_real_index_*` build a real index with
kb.index.rebuild() from a filled Store and search it through the app.

Backends: every test that reaches a store or an index runs as [sqlite] and [postgresql] (tests/webapp.py:
`web_site` shares one site per module for tests that read back only what they wrote, `app_store` gives a fresh
one to tests that count everything, `real_app` is one real index per module). The rest run once: pure helpers,
templates, the secret key file and pages drawn from an injected searcher touch no backend. Two health tests
damage Whoosh's files and stay embedded-only (said in each).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup

import kb.web.app
from kb.errors import IndexUnavailable
from kb.models import Section
from kb.web.format import http_url, page_window
from kb.web.params import BadParam, parse_search_args
from tests.fakes import FakeSearcher, make_hit, make_results
from tests.webapp import SCRIPT_TITLE, article, get, soup

# -- pure helpers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JavaScript:alert(1)", "  javascript:alert(1)", "java\tscript:alert(1)",
    "data:text/html,<b>x</b>", "vbscript:x", "//evil.example/x", "/relative", "ftp://example.org/f",
    "https:///nohost", "https://exa mple.org/", "https://example.org:99999/", "", None,
    "https://example.org/\njavascript:x",
])
def test_http_url_rejects_everything_but_absolute_http(url):
    assert http_url(url) is None


@pytest.mark.parametrize("url", ["https://example.org/a?b=1#c", "http://example.org", "HTTPS://Example.org/x"])
def test_http_url_accepts_http_and_https(url):
    assert http_url(url) == url


def test_page_window_marks_gaps():
    assert page_window(1, 1) == [1]
    assert page_window(5, 10) == [1, None, 3, 4, 5, 6, 7, None, 10]
    assert page_window(2, 4) == [1, 2, 3, 4]


def test_parse_search_args_normalises_and_validates():
    from werkzeug.datastructures import MultiDict

    params = parse_search_args(MultiDict([("q", "  acne   scars "), ("tag", "a"), ("tag", "a"), ("tag", " b "),
                                          ("year", "2024"), ("sort", "DATE"), ("page", "3")]))
    assert (params.q, params.page, params.sort) == ("acne scars", 3, "date")
    assert params.filters == {"tag": ["a", "b"], "year": ["2024"]}
    for bad in ([("page", "0")], [("page", "x")], [("sort", "random")], [("year", "24")], [("q", "x" * 501)]):
        with pytest.raises(BadParam):
            parse_search_args(MultiDict(bad))


# -- template discovery ---------------------------------------------------------------------------------------------

def test_templates_are_found_through_importlib_resources(make_app, monkeypatch, tmp_path):
    """An installed kb.templates package (wheel or editable) is where templates come from."""
    root = tmp_path / "kb_templates"
    root.mkdir()
    (root / "base.html").write_text("{% block content %}{% endblock %}", "utf-8")
    (root / "index.html").write_text('{% extends "base.html" %}{% block content %}from resources{% endblock %}',
                                     "utf-8")
    asked = []

    def files(package: str):
        asked.append(package)
        return root

    monkeypatch.setattr(kb.web.app.importlib.resources, "files", files)
    response = get(make_app(FakeSearcher()), "/")
    assert asked == ["kb.templates"]
    assert response.get_data(as_text=True) == "from resources"


def test_template_root_falls_back_to_checkout_and_rejects_escapes(monkeypatch):
    def missing(package: str):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(kb.web.app.importlib.resources, "files", missing)
    root = kb.web.app.template_root()
    assert Path(str(root)) == Path(kb.web.app.__file__).resolve().parents[2] / "templates"
    loader = kb.web.app.ResourceLoader(root)
    assert {"base.html", "_macros.html", "index.html", "search.html", "article.html", "error.html",
            "404.html"} <= set(loader.list_templates())
    from jinja2 import Environment, TemplateNotFound

    with pytest.raises(TemplateNotFound):
        loader.get_source(Environment(), "../pyproject.toml")


def test_only_names_ending_in_html_are_marked_safe():
    """Trusted HTML only through `*_html` names, and only in one macro."""
    root = Path(kb.web.app.__file__).resolve().parents[2] / "templates"
    uses = []
    for path in root.glob("*.html"):
        for match in re.finditer(r"\{\{\s*([\w.\[\]'\"]+)\s*\|\s*safe\b", path.read_text("utf-8")):
            uses.append((path.name, match.group(1)))
        assert "autoescape false" not in path.read_text("utf-8")
    assert uses == [("_macros.html", "hit.snippet_html")]


# -- app factory ----------------------------------------------------------------------------------------------------

def test_settings_go_through_config_and_extras_into_app_config(make_app, data_dir):
    app = make_app(FakeSearcher(), PER_PAGE="7", AUDIENCES=("public", "staff"))
    assert app.config["PER_PAGE"] == 7  # coerced by kb.config.load like any other override
    assert app.config["DATA_DIR"] == str(data_dir)
    assert app.config["AUDIENCES"] == ("public", "staff")
    assert "SEARCHER" not in app.config


def test_secret_key_is_generated_once_with_private_mode(make_app, data_dir):
    first = make_app(FakeSearcher()).config["SECRET_KEY"]
    path = data_dir / "secret_key"
    assert len(first) >= 32 and path.read_text().strip() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert make_app(FakeSearcher()).config["SECRET_KEY"] == first
    assert make_app(FakeSearcher(), SECRET_KEY="given").config["SECRET_KEY"] == "given"


def test_workers_starting_together_end_with_one_secret_key(tmp_path):
    """Workers creating the key at the same moment all use the one on disk; else CSRF fails from one to another."""
    for trial in range(20):
        data_dir = tmp_path / f"data-{trial}"
        barrier = threading.Barrier(8)
        keys: list[str] = []

        def start() -> None:
            barrier.wait()
            keys.append(kb.web.app._secret_key(data_dir))

        workers = [threading.Thread(target=start) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        path = data_dir / "secret_key"
        assert len(keys) == 8 and set(keys) == {path.read_text("ascii").strip()}, trial
        assert [p.name for p in data_dir.iterdir()] == ["secret_key"]  # no temporary file left behind
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_an_empty_secret_key_file_is_replaced(tmp_path):
    """An empty file (an older kb crashed between creating and writing it) gets a key, still private."""
    path = tmp_path / "secret_key"
    path.write_text("\n", "ascii")
    key = kb.web.app._secret_key(tmp_path)
    assert len(key) == 64 and path.read_text("ascii") == key + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and kb.web.app._secret_key(tmp_path) == key


def test_store_is_opened_per_request_and_closed(web_site, monkeypatch):
    Store = type(web_site.store)  # SQLiteStore, or PostgresStore (its connections go back to the pool on close)
    opened, closed = [], []
    original_init, original_close = Store.__init__, Store.close

    def init(self, *args, **kwargs):
        opened.append(self)
        original_init(self, *args, **kwargs)

    def close(self):
        closed.append(self)
        original_close(self)

    monkeypatch.setattr(Store, "__init__", init)
    monkeypatch.setattr(Store, "close", close)
    app = web_site.app(FakeSearcher())
    get(app, "/")
    get(app, "/")
    assert len(opened) == 2 and closed == opened


# -- home -----------------------------------------------------------------------------------------------------------

def test_home_has_search_form_and_topics_from_store(make_app, app_store):
    app_store.save_article(article(1, categories=["Acne", "Rosacea"], tags=["retinoids"]))
    app_store.save_article(article(2, categories=["Acne"], tags=["<b>tag</b>"]))
    app_store.save_article(article(3, categories=["Staff only"], audience="staff"))
    page = soup(get(make_app(FakeSearcher()), "/"))
    form = page.select_one("form[role=search]")
    assert form["action"] == "/search" and form["method"] == "get"
    assert page.select_one("label[for=q]") and page.select_one("input#q")["name"] == "q"
    links = {a.get_text(" ", strip=True): a["href"] for a in page.select(".browse a")}
    assert links["Acne"] == "/search?category=Acne"
    assert links["Rosacea"] == "/search?category=Rosacea"
    assert links["<b>tag</b> 1 article"] == "/search?tag=%3Cb%3Etag%3C%2Fb%3E"
    assert not any("Staff" in text for text in links)
    rows = [li.get_text(" ", strip=True) for li in page.select(".browse ul.topic-rows li")]
    assert rows == ["Acne 2 articles", "Rosacea 1 article"]
    assert "2 articles from 1 site" in page.get_text(" ", strip=True)


def test_home_without_articles_says_what_to_do(make_app, app_store):
    text = soup(get(make_app(FakeSearcher()), "/")).get_text(" ", strip=True)
    assert "No articles yet" in text and "kb crawl" in text


# -- search page ----------------------------------------------------------------------------------------------------

def test_search_page_shows_results_with_source_links(make_app):
    hit = make_hit(1, title=SCRIPT_TITLE)
    searcher = FakeSearcher(make_results(total=12, hits=[hit, make_hit(2, anchor="", section="")],
                                         notice="Searched for the words instead."))
    response = get(make_app(searcher), "/search?q=acne")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<script>alert" not in body and "&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt; &amp; rosacea" in body
    page = soup(response)
    assert page.h1.get_text(" ", strip=True) == "12 results for “acne”"
    items = page.select("#results > li.result")
    assert len(items) == 2
    first = items[0]
    assert first.select_one("a.result-title")["href"] == "/article/1"
    assert first.select_one("a.result-title").get_text() == SCRIPT_TITLE
    source = first.select_one("a.source-link")
    assert source["href"] == "https://derm.example.org/conditions/acne-1#treatment"
    assert set(source["rel"]) >= {"noopener", "noreferrer"}
    assert first.select_one(".source-host").get_text() == "derm.example.org"
    assert first.select_one("time")["datetime"] == "2024-03-02"
    assert first.select_one(".snippet mark").get_text() == "retinoids"
    assert first.select_one(".result-section a")["href"] == "/article/1#treatment"
    assert items[1].select_one("a.source-link")["href"] == "https://derm.example.org/conditions/acne-2"
    assert page.select_one(".notice").get_text() == "Searched for the words instead."
    assert searcher.calls == [("acne", {"page": 1, "per_page": 10, "filters": None, "sort": "relevance",
                                        "audiences": ("public",)})]


def test_javascript_source_url_is_never_a_link(web_site):
    bad = "javascript:alert(document.cookie)"
    searcher = FakeSearcher(make_results(hits=[make_hit(1, url=bad, anchor="x", site="evil.example")]))
    app = web_site.app(searcher)
    body = get(app, "/search?q=acne").get_data(as_text=True)
    page = BeautifulSoup(body, "lxml")
    assert not page.select("a.source-link")
    assert page.select_one(".source-text").get_text() == bad + "#x"
    assert page.select_one(".source-host").get_text() == "evil.example"
    assert not [a for a in page.find_all(href=True) if "javascript" in a["href"].lower()]
    article_id, _ = web_site.store.save_article(article(9, url=bad, site="evil.example"))
    page = soup(get(app, f"/article/{article_id}"))
    assert not page.select("a.source-link") and page.select_one(".source-text").get_text() == bad
    assert not [a for a in page.find_all(href=True) if "javascript" in a["href"].lower()]


def test_pagination_keeps_query_filters_and_sort(make_app):
    searcher = FakeSearcher(make_results(total=95, page=5, per_page=10))
    url = "/search?q=acne+scars&tag=laser&tag=co2&category=Scars&year=2024&sort=date&page=5"
    page = soup(get(make_app(searcher), url))
    nav = page.select_one('nav[aria-label="Pagination"]')
    assert nav is not None
    expected = {"q": ["acne scars"], "tag": ["laser", "co2"], "category": ["Scars"], "year": ["2024"],
                "sort": ["date"]}
    numbers = []
    for link in nav.select("a"):
        args = parse_qs(urlsplit(link["href"]).query)
        numbers.append(int(args.pop("page", ["1"])[0]))
        assert args == expected
    assert numbers == [4, 1, 3, 4, 5, 6, 7, 10, 6]  # prev, window, next
    assert nav.select_one('[aria-current="page"]').get_text(" ", strip=True) == "Page 5"
    assert nav.select_one("a[rel=prev]") and nav.select_one("a[rel=next]")
    assert searcher.calls[0][1]["filters"] == {"category": ["Scars"], "tag": ["laser", "co2"], "year": ["2024"]}
    assert searcher.calls[0][1]["sort"] == "date" and searcher.calls[0][1]["page"] == 5


def test_facet_links_add_and_remove_filters(make_app):
    results = make_results(total=30, facets={"category": [("Acne", 20), ("Scars", 4)], "tags": [("laser", 3)],
                                             "site": [("derm.example.org", 30)], "unknown": [("x", 1)]})
    page = soup(get(make_app(FakeSearcher(results)), "/search?q=acne&category=Acne&sort=date&page=2"))
    facets = page.select_one('nav[aria-label="Refine results"]')
    links = {(a.find_parent(class_="facet").h3.get_text(), a.contents[0].strip()): a for a in facets.select("a")}
    selected = links[("Topic", "Acne")]
    assert selected["aria-current"] == "true"
    assert parse_qs(urlsplit(selected["href"]).query) == {"q": ["acne"], "sort": ["date"]}  # removes, page 1
    add = parse_qs(urlsplit(links[("Topic", "Scars")]["href"]).query)
    assert add == {"q": ["acne"], "category": ["Acne", "Scars"], "sort": ["date"]}
    assert parse_qs(urlsplit(links[("Tag", "laser")]["href"]).query)["tag"] == ["laser"]
    assert ("Source site", "derm.example.org") in links
    assert not any(key[1] == "x" for key in links)
    active = page.select_one('.active-filters a')
    assert parse_qs(urlsplit(active["href"]).query) == {"q": ["acne"], "sort": ["date"]}


def test_selected_filter_stays_visible_when_facets_lack_it(make_app):
    page = soup(get(make_app(FakeSearcher(make_results(total=0, hits=[]))), "/search?q=acne&site=gone.example"))
    link = page.select_one('nav[aria-label="Refine results"] a[aria-current="true"]')
    assert link.contents[0].strip() == "gone.example" and link["href"] == "/search?q=acne"


def test_did_you_mean_and_no_results_help(make_app):
    results = make_results(query="melanoma", total=0, hits=[], suggestions=["melasma", "melanoma treatment"])
    page = soup(get(make_app(FakeSearcher(results)), "/search?q=melanomma&tag=laser"))
    links = page.select(".did-you-mean a")
    assert [a.get_text() for a in links] == ["melasma", "melanoma treatment"]
    assert parse_qs(urlsplit(links[0]["href"]).query) == {"q": ["melasma"], "tag": ["laser"]}
    text = page.select_one(".no-results").get_text(" ", strip=True)
    assert "Try the suggested spelling: melasma or melanoma treatment" in text
    assert "more general word" in text
    assert "Browse topics" not in text  # the store is empty: the home page lists no topics to browse
    assert page.select_one('.no-results a[href="/search?q=melanomma"]')  # search again without filters
    assert not page.select("#results")


def test_page_past_the_end_offers_first_page(make_app):
    page = soup(get(make_app(FakeSearcher(make_results(total=3, hits=[], page=9))), "/search?q=acne&page=9"))
    assert page.select_one(".no-results a")["href"] == "/search?q=acne"


def test_empty_query_redirects_home_but_filters_browse(make_app):
    searcher = FakeSearcher(make_results(query="", total=1))
    app = make_app(searcher)
    response = get(app, "/search?q=++")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = soup(get(app, "/search?category=Acne"))
    assert page.h1.get_text(" ", strip=True) == "1 result"
    assert searcher.calls == [("", {"page": 1, "per_page": 10, "filters": {"category": ["Acne"]},
                                    "sort": "relevance", "audiences": ("public",)})]


def test_per_page_setting_is_used(make_app):
    searcher = FakeSearcher()
    get(make_app(searcher, PER_PAGE=25), "/search?q=acne&per_page=3")
    assert searcher.calls[0][1]["per_page"] == 25


@pytest.mark.parametrize("query", ["q=acne&page=abc", "q=acne&page=0", "q=acne&sort=shuffle", "q=acne&year=20x",
                                   "q=" + "a" * 600])
def test_bad_parameters_give_a_400_page(make_app, query):
    response = get(make_app(FakeSearcher()), f"/search?{query}")
    assert response.status_code == 400
    page = soup(response)
    assert page.h1.get_text() == "Bad Request" and page.select_one(".error-message").get_text()
    assert "Traceback" not in page.get_text()


# -- article page ---------------------------------------------------------------------------------------------------

def test_article_page_renders_sections_toc_and_source(web_site):
    stored = article(1, title=SCRIPT_TITLE, text="Intro <b>bold</b> line one\nline two\n\nMore intro.\n\nCauses\n...",
                     sections=[Section("Causes", "causes", "Hormones <img src=x onerror=alert(1)>.\n\nSecond para."),
                               Section("Sub", "sub", "Nested.", level=3),
                               Section("Causes again", "causes", "Duplicate anchor."),
                               Section("Main clash", "main", "Reserved id.")])
    article_id, _ = web_site.store.save_article(stored)
    response = get(web_site.app(FakeSearcher()), f"/article/{article_id}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<script>alert" not in body and "<img src=x" not in body and "<b>bold</b>" not in body
    page = BeautifulSoup(body, "lxml")
    assert page.h1.get_text() == SCRIPT_TITLE
    assert page.title.get_text().startswith(SCRIPT_TITLE)
    lead = [p.get_text("|") for p in page.select(".article-body > p")]
    assert lead == ["Intro <b>bold</b> line one|line two", "More intro."]
    headings = [(h.name, h["id"], h.get_text()) for h in page.select(".article-body h2, .article-body h3")]
    assert headings == [("h2", "causes", "Causes"), ("h3", "sub", "Sub"), ("h2", "section-3", "Causes again"),
                        ("h2", "section-4", "Main clash")]
    assert [p.get_text() for p in page.select("#causes ~ p")] == ["Hormones <img src=x onerror=alert(1)>.",
                                                                   "Second para."]
    assert [a["href"] for a in page.select("nav.toc a")] == ["#causes", "#sub", "#section-3", "#section-4"]
    sources = page.select("a.source-link")
    assert sources and all(a["href"] == stored.url for a in sources)
    assert "Read the original" in sources[0].get_text()
    dates = {dt.get_text(): dd.time["datetime"] for dt, dd in zip(page.select("dt"), page.select("dd"))}
    assert dates == {"Published": "2023-05-01", "Updated": "2024-01-15"}
    assert page.select_one('.disclaimer[role="note"]') and "not medical advice" in body
    assert page.select_one('a.chip[href="/search?category=Acne"]')


def test_article_without_sections_is_plain_paragraphs(web_site):
    article_id, _ = web_site.store.save_article(article(2, text="One.\n\nTwo.", sections=[], published=None,
                                                        modified=None))
    page = soup(get(web_site.app(FakeSearcher()), f"/article/{article_id}"))
    assert [p.get_text() for p in page.select(".article-body p")] == ["One.", "Two."]
    assert not page.select("nav.toc") and not page.select("dl.dates")


def test_unknown_and_staff_articles_are_404(web_site):
    staff_id, _ = web_site.store.save_article(article(3, audience="staff"))
    app = web_site.app(FakeSearcher())
    for url in ("/article/999", f"/article/{staff_id}", "/article/abc"):
        response = get(app, url)
        assert response.status_code == 404
        assert soup(response).h1.get_text() == "Page not found"
    staff_app = web_site.app(FakeSearcher(), AUDIENCES=("public", "staff"))
    assert get(staff_app, f"/article/{staff_id}").status_code == 200


@pytest.mark.parametrize("article_id", [2**63, 2**63 + 1, 10**30])
def test_article_ids_past_sqlite_integers_are_404_not_500(web_site, caplog, article_id):
    app = web_site.app(FakeSearcher())
    response = get(app, f"/article/{article_id}")
    assert response.status_code == 404 and soup(response).h1.get_text() == "Page not found"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged per request
    assert get(app, f"/article/{2**63 - 1}").status_code == 404  # the largest id is still looked up


def test_article_page_shows_no_crawled_canonical_or_lang(web_site):
    """The HTML page never prints the crawled `canonical` or `lang` (the API cleans them, see test_api)."""
    article_id, _ = web_site.store.save_article(article(1, canonical="javascript:alert(1)",
                                                        lang='en" onload="alert(1)'))
    body = get(web_site.app(FakeSearcher()), f"/article/{article_id}").get_data(as_text=True)
    assert "javascript:" not in body and "onload" not in body


# -- errors and headers ---------------------------------------------------------------------------------------------

def test_index_unavailable_is_a_503_page_with_remedy(make_app):
    searcher = FakeSearcher(error=IndexUnavailable("No index at /secret/path", "Run kb reindex."))
    response = get(make_app(searcher), "/search?q=acne")
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    text = soup(response).get_text(" ", strip=True)
    assert "kb reindex" in text and "being built" in text and "/secret/path" not in text


def test_unexpected_error_is_a_500_page_without_traceback(make_app, caplog):
    response = get(make_app(FakeSearcher(error=RuntimeError("secret internals"))), "/search?q=acne")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong" in body and "Traceback" not in body and "secret internals" not in body
    assert "secret internals" in caplog.text  # logged for the maintainer


def test_405_page(make_app):
    with make_app(FakeSearcher()).test_client() as client:
        response = client.post("/search")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert "Method Not Allowed" in response.get_data(as_text=True)


def test_broken_template_still_gives_an_error_page(make_app, monkeypatch):
    app = make_app(FakeSearcher())

    def broken(*args, **kwargs):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(kb.web.app, "render_template", broken)
    response = get(app, "/nothing-here")
    assert response.status_code == 404 and "Not Found" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/", "/search?q=acne", "/nope", "/static/kb.css", "/api/search?q=acne"])
def test_security_headers_on_every_response(make_app, url):
    response = get(make_app(FakeSearcher(make_results())), url)
    csp = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
                      "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_static_files_are_cached_and_versioned(make_app):
    app = make_app(FakeSearcher())
    page = soup(get(app, "/"))
    css = page.select_one('link[rel=stylesheet]')["href"]
    script = page.select_one("script[src]")
    assert re.fullmatch(r"/static/kb\.css\?v=[0-9a-f]{10}", css)
    assert script["src"].startswith("/static/kb.js?v=") and script.has_attr("defer")
    for url in (css, script["src"], "/static/favicon.svg"):
        response = get(app, url)
        assert response.status_code == 200
        assert "max-age=604800" in response.headers["Cache-Control"]
    assert get(app, "/favicon.ico").headers["Location"].startswith("/static/favicon.svg?v=")


# -- markup quality (CSP-compatible, accessible structure; axe runs later in browser tests) ---------------------

@pytest.fixture
def all_pages(web_site):
    article_id, _ = web_site.store.save_article(article(1))
    results = make_results(total=40, hits=[make_hit(1), make_hit(2)], suggestions=["acne"],
                           facets={"category": [("Acne", 2)], "tag": [("retinoids", 1)]})
    app = web_site.app(FakeSearcher(results))
    urls = ["/", "/search?q=acne&page=2", f"/article/{article_id}", "/missing", "/search?q=a&page=x", "/login", "/faq"]
    return {url: get(app, url) for url in urls}


def test_pages_have_no_inline_script_or_style(all_pages):
    for url, response in all_pages.items():
        page = soup(response)
        assert not page.find("style"), url
        assert all(tag.has_attr("src") for tag in page.find_all("script")), url
        for tag in page.find_all(True):
            assert "style" not in tag.attrs, (url, tag.name)
            assert not [a for a in tag.attrs if a.startswith("on")], (url, tag.name)


def test_pages_are_accessible_in_structure(all_pages):
    for url, response in all_pages.items():
        page = soup(response)
        assert page.html["lang"] == "en", url
        assert page.select_one('meta[name=viewport]'), url
        assert len(page.find_all("main")) == 1 and page.main["id"] == "main", url
        assert page.find("header", class_="site-header") and page.find("footer"), url
        assert page.select_one('a.skip-link[href="#main"]'), url
        ids = [tag["id"] for tag in page.find_all(id=True)]
        assert len(ids) == len(set(ids)), (url, ids)
        assert len(page.find_all("h1")) == 1, url
        levels = [int(h.name[1]) for h in page.find_all(re.compile(r"^h[1-6]$"))]
        assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), (url, levels)
        search_input = page.select_one("input#q")
        assert search_input is not None and page.select_one("label[for=q]"), url
        assert page.select_one("ul#q-suggestions[role=listbox][hidden]"), url
        assert page.select_one("#q-status[role=status]"), url
        assert search_input["data-suggest-url"] == "/api/suggest", url
        labelled = [n for n in page.find_all("nav") if n.get("aria-label") or n.get("aria-labelledby")]
        assert len(labelled) == len(page.find_all("nav")), url


def test_static_assets_implement_the_contract(make_app):
    app = make_app(FakeSearcher())
    script = get(app, "/static/kb.js").get_data(as_text=True)
    for needle in ('"combobox"', "aria-expanded", "aria-activedescendant", "aria-controls", '"option"',
                   "ArrowDown", "ArrowUp", "Escape", "Enter", "data-suggest-url", "q-status",
                   "aria-keyshortcuts", "data-open-media"):
        assert needle in script
    assert "http://" not in script and "https://" not in script  # no CDN
    css = get(app, "/static/kb.css").get_data(as_text=True)
    for needle in ("prefers-color-scheme: dark", "@media print", "overflow-wrap: anywhere", ":focus-visible",
                   'attr(href)'):
        assert needle in css
    assert "@import" not in css and "url(" not in css and "://" not in css  # nothing loaded from elsewhere


# -- real index -----------------------------------------------------------------------------------------------------

def test_real_index_search_page(real_app):
    response = get(real_app, "/search?q=retinoids")
    assert response.status_code == 200
    page = soup(response)
    items = page.select("#results li.result")
    assert len(items) == 10
    total = int(re.match(r"(\d+) results", page.h1.get_text(" ", strip=True)).group(1))
    assert total == 25  # the staff article stays hidden from the public
    titles = [a.get_text() for a in page.select("a.result-title")]
    assert "Staff retinoids protocol" not in titles
    assert all(re.fullmatch(r"/article/\d+", a["href"]) for a in page.select("a.result-title"))
    assert all(http_url(a["href"]) for a in page.select("a.source-link"))
    assert "<script>alert" not in response.get_data(as_text=True)
    nav = page.select_one('nav[aria-label="Pagination"]')
    assert nav and nav.select_one("a[rel=next]")["href"] == "/search?q=retinoids&page=2"


def test_real_index_filters_and_escaping(real_app):
    page = soup(get(real_app, "/search?q=rosacea"))
    item = page.select_one("#results li.result")
    assert item.select_one("a.result-title").get_text() == "Rosacea basics"
    assert not item.select("a.source-link") and "javascript:alert(1)" in item.select_one(".source-text").get_text()
    page = soup(get(real_app, "/search?q=retinoids&category=Rosacea"))
    assert [a.get_text() for a in page.select("a.result-title")] == ["Rosacea basics"]
    page = soup(get(real_app, "/search?q=acne+retinoids"))
    assert SCRIPT_TITLE in [a.get_text() for a in page.select("a.result-title")]


def test_real_index_missing_gives_503(web_site):
    response = get(web_site.app(), "/search?q=acne")
    assert response.status_code == 503 and "kb reindex" in response.get_data(as_text=True)


def test_healthz_is_503_without_index_and_200_with_one(make_app, app_store, each_data_backend, data_dir):
    response = get(make_app(), "/healthz")
    assert response.status_code == 503 and response.is_json
    assert response.get_json()["ok"] is False and response.get_json()["index"] == "missing"
    from kb.config import data_paths
    from kb.index import rebuild

    app_store.save_article(article(1))
    rebuild(app_store, data_paths(data_dir)["index"])
    response = get(make_app(), "/healthz")
    assert response.status_code == 200 and response.get_json()["ok"] is True
    live = r"postgresql:\d+" if each_data_backend.url else r"gen-\d{8}T\d+"  # the generation being served
    assert re.fullmatch(live, response.get_json()["index"])
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_is_503_when_the_index_cannot_be_read(make_app, store, data_dir):
    """Embedded only: damages the Whoosh generation's segment files (PostgreSQL's index has no files)."""
    from kb.config import data_paths
    from kb.index import current_generation, rebuild

    store.save_article(article(1))
    rebuild(store, data_paths(data_dir)["index"])
    generation = current_generation(data_paths(data_dir)["index"])
    for segment in generation.rglob("*"):  # every sub-index of the generation
        if segment.suffix not in (".toc", ".json") and segment.is_file():
            segment.unlink()  # a damaged index (segments lost) must not be reported healthy
    response = get(make_app(), "/healthz")
    assert response.status_code == 503 and response.get_json()["index"] == "unreadable"


def test_healthz_is_json_503_when_the_table_of_contents_is_emptied(make_app, store, data_dir):
    """Whoosh cannot even open such an index: /healthz used to answer a 500 HTML page. Embedded only: a Whoosh file."""
    from kb.config import data_paths
    from kb.index import current_generation, rebuild

    store.save_article(article(1))
    rebuild(store, data_paths(data_dir)["index"])
    for toc in current_generation(data_paths(data_dir)["index"]).rglob("_MAIN_*.toc"):
        toc.write_bytes(b"")
    response = get(make_app(), "/healthz")
    assert response.status_code == 503 and response.is_json
    assert response.get_json()["ok"] is False and response.get_json()["index"] == "unreadable"


def test_new_searches_are_query_logged(make_app, app_store):
    results = make_results(total=7)
    app = make_app(FakeSearcher(results))
    get(app, "/search?q=acne")
    get(app, "/api/search?q=rosacea+laser")
    get(app, "/search?q=acne&page=2")  # paging through the same search is not a new query
    get(app, "/search?category=Acne")  # browsing has no query text
    rows = sorted((r["query"], r["results"], r["audience"]) for r in app_store.queries_since(""))
    assert rows == [("acne", 7, "public"), ("rosacea laser", 7, "public")]
    get(make_app(FakeSearcher(results), QUERY_LOG=False), "/search?q=eczema")
    assert app_store.count_queries() == 2


def test_query_log_failure_does_not_break_search(web_site, monkeypatch):
    import kb.querylog

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(kb.querylog, "log_query", broken)
    response = get(web_site.app(FakeSearcher(make_results())), "/search?q=acne")
    assert response.status_code == 200 and soup(response).select("#results li.result")


def test_merged_result_lists_other_sources_as_safe_links(make_app):
    """Near-duplicates: "Also published on" links each other copy; hostile titles and URLs stay inert."""
    sources = [{"url": "https://derm.example.org/conditions/acne-1", "site": "derm.example.org", "title": "Acne"},
               {"url": "https://partner.example/blog/acne/", "site": "partner.example",
                "title": '<script>alert("x")</script>'},
               {"url": "javascript:alert(1)", "site": "evil.example", "title": "Acne"}]
    app = make_app(FakeSearcher(make_results(hits=[make_hit(sources=sources)])))
    html = get(app, "/search?q=acne").get_data(as_text=True)
    soup = BeautifulSoup(html, "html.parser")
    also = soup.select_one(".also-published")
    assert also is not None and also.get_text(" ", strip=True).startswith("Also published on")
    assert [a["href"] for a in also.find_all("a")] == ["https://partner.example/blog/acne/"]
    assert "evil.example" in also.get_text() and "javascript:" not in str(also.find_all("a"))
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    # the primary keeps its deep link to the matching section
    assert soup.select_one(".result-meta a.source-link")["href"] == "https://derm.example.org/conditions/acne-1#treatment"
    plain = get(make_app(FakeSearcher(make_results())), "/search?q=acne").get_data(as_text=True)
    assert "also-published" not in plain


def test_corrected_search_says_so_and_offers_the_typed_words_exactly(make_app):
    results = make_results(query="psorisis", total=2, hits=[make_hit(1), make_hit(2)])
    results.corrected_query = "psoriasis"
    searcher = FakeSearcher(results)
    app = make_app(searcher)
    page = soup(get(app, "/search?q=psorisis&tag=laser"))
    banner = page.select_one(".corrected")
    assert " ".join(banner.get_text(" ", strip=True).split()) == "Showing results for psoriasis . Search instead for psorisis"
    assert banner.select_one("strong").get_text() == "psoriasis"
    exact = banner.select_one("a")
    assert parse_qs(urlsplit(exact["href"]).query) == {"q": ["psorisis"], "tag": ["laser"], "exact": ["1"]}
    assert "for “psoriasis”" in page.select_one("h1").get_text()
    assert "exact" not in searcher.calls[-1][1]  # corrections allowed by default
    get(app, "/search?q=psorisis&exact=1")
    assert searcher.calls[-1][1]["exact"] is True
    assert get(app, "/search?q=psorisis&exact=maybe").status_code == 400


def test_faq_answer_box_is_not_repeated_in_the_result_list(web_site):
    faq_id, _ = web_site.store.save_article(article(url="https://c.example/faq#a",
                                                    title="How often should I have a skin check?",
                                                    text="Once a year for most adults.", kind="faq"))
    hits = [make_hit(faq_id), make_hit(faq_id + 100), make_hit(faq_id + 101)]
    hits[0].kind = "faq"
    page = soup(get(web_site.app(FakeSearcher(make_results(total=3, hits=hits))), "/search?q=skin+check"))
    assert page.select_one(".faq-answer h2").get_text(strip=True).startswith("How often should I have")
    listed = [a["href"] for a in page.select("#results .result-title")]
    assert f"/article/{faq_id}" not in listed and len(listed) == 2
    assert page.select_one("#results")["start"] == "2"
