"""The vertical slice end to end: `kb crawl` a real local site, `kb search`, the web UI and the JSON API."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kb.cli import cli

SCRIPT_TITLE = '<script>alert("kb")</script> Sebaceous filaments explained'


@pytest.fixture
def crawled(site, each_data_backend, runner) -> Path:
    """The fixture blog plus a page whose title carries a script tag, crawled through the CLI, on each backend
    (PostgreSQL: DATABASE_URL in the data directory's kb.toml, no kb.sqlite3 and no Whoosh index there)."""
    data_dir = each_data_backend.dir
    site.set("/filaments/", (
        "<!doctype html><html lang='en'><head><title>&lt;script&gt;alert(\"kb\")&lt;/script&gt; Sebaceous "
        "filaments explained</title></head><body><main><article><h1>&lt;script&gt;alert(\"kb\")&lt;/script&gt; "
        "Sebaceous filaments explained</h1><p>Sebaceous filaments are tiny tubes lining the pores that carry "
        "sebum to the surface; they are normal, refill within weeks and are not blackheads.</p>"
        "<p>Gentle salicylic acid keeps them less visible, while squeezing only widens the pore.</p>"
        "</article></main></body></html>"))
    status, headers, home = site.pages["/"]
    home = home.decode() if isinstance(home, bytes) else home
    site.set("/", home.replace("</body>", '<a href="/filaments/">Filaments</a></body>'))
    result = runner.invoke(cli, ["--data-dir", str(data_dir), "crawl", site.url], env={"KB_CRAWL_DELAY": "0"})
    assert result.exit_code == 0, result.output
    assert "fetched" in result.output and "stored" in result.output and "errors" in result.output
    if each_data_backend.url is not None:
        assert not each_data_backend.paths["store"].exists() and not each_data_backend.paths["index"].exists()
    return data_dir


def _search_json(runner, data_dir: Path, query: str) -> dict:
    result = runner.invoke(cli, ["--data-dir", str(data_dir), "search", query, "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_search_finds_the_sebaceous_page_first(crawled: Path, runner, site) -> None:
    data = _search_json(runner, crawled, "sebaceous")
    assert set(data) >= {"query", "total", "results"}
    assert data["query"] == "sebaceous" and data["total"] >= 2
    assert data["results"][0]["url"] == site.abs("/sebaceous-glands/")
    assert {"url", "title", "snippet", "score"} <= set(data["results"][0])


def test_cli_search_prints_title_source_and_snippet(crawled: Path, runner, site) -> None:
    result = runner.invoke(cli, ["--data-dir", str(crawled), "search", "VBeam"])
    assert result.exit_code == 0, result.output
    assert "VBeam pulsed dye laser" in result.stdout
    assert site.abs("/vbeam/") in result.stdout


def test_api_search_finds_the_vbeam_page_first(crawled: Path, site) -> None:
    from kb.web import create_app

    client = create_app({"DATA_DIR": str(crawled), "TESTING": True}).test_client()
    response = client.get("/api/search?q=VBeam")
    assert response.status_code == 200 and response.is_json
    data = response.get_json()
    assert data["results"][0]["url"] == site.abs("/vbeam/")
    # the same JSON contract as `kb search --json`
    assert set(data) >= {"query", "total", "results"}


def test_html_results_show_source_links_and_escape_crawled_titles(crawled: Path, site) -> None:
    from kb.web import create_app

    client = create_app({"DATA_DIR": str(crawled), "TESTING": True}).test_client()
    page = client.get("/search?q=sebaceous").get_data(as_text=True)
    assert f'href="{site.abs("/sebaceous-glands/")}' in page
    assert "127.0.0.1" in page  # the visible host name of the source
    assert SCRIPT_TITLE not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page


def test_reindex_rebuilds_from_the_store_without_fetching(crawled: Path, runner, site) -> None:
    before = len(site.requests)
    result = runner.invoke(cli, ["--data-dir", str(crawled), "reindex"])
    assert result.exit_code == 0, result.output
    assert len(site.requests) == before, "reindex must not touch the network"
    assert _search_json(runner, crawled, "sebaceous")["results"][0]["url"] == site.abs("/sebaceous-glands/")


# -- the same article syndicated on two sites: one result listing both sources -----------------------------

def _syndicated_page(site_name: str, nav: list[str]) -> str:
    """One clinic's page around the shared article: its own title suffix, navigation, sidebar and footer.

    The article text is the same (a reposted intro line is tested in test_store: on a 400-word text it
    costs ~4-6 of the NEAR_BITS, see kb.neardup).
    """
    from tests.texts import LASERS, TRIGGERS

    links = "".join(f'<li><a href="/{slug}/">{slug.replace("-", " ").title()}</a></li>' for slug in nav)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Rosacea: triggers and laser treatment | {site_name}</title>
<meta property="og:site_name" content="{site_name}">
<meta property="article:published_time" content="2024-03-05T08:00:00+00:00"></head>
<body><header class="site-header"><p class="logo">{site_name}</p><nav><ul>{links}</ul></nav></header>
<main><article><h1>Rosacea: triggers and laser treatment</h1>
<h2 id="triggers">Triggers</h2><p>{TRIGGERS}</p>
<h2 id="laser-treatment">Laser treatment</h2><p>{LASERS}</p></article>
<aside><h2>Book now</h2><p>Call {site_name} to book a skin check with one of our dermatologists.</p></aside></main>
<footer><p>© 2024 {site_name}. All rights reserved. Privacy policy. Imprint.</p></footer></body></html>"""


@pytest.fixture
def two_sites(data_dir: Path, runner):
    """Clinic A (127.0.0.1) posts the article; partner B (localhost, another port) reposts it in its own chrome."""
    from tests.fixture_site import FixtureSite

    sites = FixtureSite(), FixtureSite()
    try:
        a, b = sites
        a.set("/", '<html><body><h1>Clinic A</h1><a href="/2024/03/rosacea-triggers/">Rosacea</a></body></html>')
        a.set("/2024/03/rosacea-triggers/", _syndicated_page("Riverside Dermatology", ["acne", "eczema", "contact"]))
        b.set("/", '<html><body><h1>Partner B</h1><a href="/blog/rosacea-guide/">Guide</a></body></html>')
        b.set("/blog/rosacea-guide/", _syndicated_page("Hillside Skin Centre", ["services", "team", "prices", "blog"]))
        b_url = f"http://localhost:{b.server.server_address[1]}"
        for url in (a.url, b_url):
            result = runner.invoke(cli, ["--data-dir", str(data_dir), "crawl", url], env={"KB_CRAWL_DELAY": "0"})
            assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["--data-dir", str(data_dir), "reindex"])
        assert result.exit_code == 0, result.output
        yield data_dir, a.abs("/2024/03/rosacea-triggers/"), b_url + "/blog/rosacea-guide/"
    finally:
        for site in sites:
            site.close()


def test_syndicated_article_is_one_result_listing_both_sources(two_sites, runner) -> None:
    data_dir, url_a, url_b = two_sites
    data = _search_json(runner, data_dir, "ivermectin azelaic")
    assert data["total"] == 1, data
    hit = data["results"][0]
    assert hit["url"] == url_a  # the first stored copy heads the group
    assert [s["url"] for s in hit["sources"]] == [url_a, url_b]
    assert [s["site"] for s in hit["sources"]] == [urlsplit(url_a).netloc, urlsplit(url_b).netloc]

    from kb.web import create_app

    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    try:
        client = app.test_client()
        api = client.get("/api/search?q=pulsed+dye+laser").get_json()
        assert api["total"] == 1 and [s["url"] for s in api["results"][0]["sources"]] == [url_a, url_b]
        page = client.get("/search?q=rosacea+triggers").get_data(as_text=True)
        assert page.count('class="result"') == 1
        assert f'href="{url_a}' in page and f'href="{url_b}"' in page and "Also published on" in page
        article = client.get(f"/article/{hit['id']}").get_data(as_text=True)
        assert f'href="{url_b}"' in article and "Also published on" in article
        assert [s["url"] for s in client.get(f"/api/articles/{hit['id']}").get_json()["sources"]] == [url_a, url_b]
    finally:
        app.extensions["kb"].close()


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_merged_result_and_article_pages_have_no_axe_violations(two_sites, runner, browser, axe_js, scheme) -> None:
    """The "Also published on" links pass axe-core like every other page (tests/test_a11y.py has no merged result)."""
    from tests.browser import close_app, format_violations, make_kb_app, run_axe, serve_app, set_color_scheme, wait_for

    data_dir, url_a, url_b = two_sites
    article_id = _search_json(runner, data_dir, "rosacea")["results"][0]["id"]
    app = make_kb_app(data_dir)
    live = serve_app(app)
    set_color_scheme(browser, scheme)
    try:
        for path in ("/search?q=rosacea+laser", f"/article/{article_id}"):
            browser.get(live.url + path)
            wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete", path)
            links = [a.get_attribute("href") for a in browser.find_elements("css selector", ".also-published a")]
            assert links == [url_b], path
            violations = run_axe(browser, axe_js)
            assert not violations, f"[{path}, {scheme}]\n{format_violations(violations)}"
    finally:
        set_color_scheme(browser, None)
        live.close()
        close_app(app)
