"""The vertical slice end to end: `kb crawl` a real local site, `kb search`, the web UI and the JSON API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kb.cli import cli

SCRIPT_TITLE = '<script>alert("kb")</script> Sebaceous filaments explained'


@pytest.fixture
def crawled(site, data_dir: Path, runner) -> Path:
    """The fixture blog plus a page whose title carries a script tag, crawled through the CLI."""
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
    from kb import create_app

    client = create_app({"DATA_DIR": str(crawled), "TESTING": True}).test_client()
    response = client.get("/api/search?q=VBeam")
    assert response.status_code == 200 and response.is_json
    data = response.get_json()
    assert data["results"][0]["url"] == site.abs("/vbeam/")
    # the same JSON contract as `kb search --json`
    assert set(data) >= {"query", "total", "results"}


def test_html_results_show_source_links_and_escape_crawled_titles(crawled: Path, site) -> None:
    from kb import create_app

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
