"""The article page shows the source's structure: lists, sub-headings, emphasis, quotes and tables as safe
markup (kb.extract.markup's allow-list, applied at extraction and again when shown), a contents list nested by level,
and escaped text for everything else, including rows stored before markup existed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from bs4 import BeautifulSoup

from kb import config
from kb.extract import extract
from kb.models import Article, Section
from kb.pipeline import crawl_source
from kb.sources import Source
from kb.store import Store
from kb.web import create_app
from tests.fixture_site import FixtureSite

PAGES = Path(__file__).parent / "data" / "pages"
POST_URL = "https://riverside-skin.example/blog/vbeam-rosacea/"
INJECTED = "Hormones <img src=x onerror=alert(1)> and <script>alert(2)</script> matter."


@pytest.fixture
def app(data_dir: Path) -> Iterator[Any]:
    """The real app over the test data dir (article pages read the store; no index needed)."""
    application = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    yield application
    application.extensions["kb"].close()


def get_page(app: Any, url: str) -> tuple[int, str]:
    with app.test_client() as client:
        response = client.get(url)
        return response.status_code, response.get_data(as_text=True)


def body_of(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "lxml").select_one(".article-body")


def gutenberg() -> Article:
    return extract((PAGES / "wp_gutenberg.html").read_bytes(), POST_URL)


def test_wordpress_post_shows_lists_sub_headings_quote_and_table(app: Any, store: Store) -> None:
    article_id, _ = store.save_article(gutenberg())
    status, html = get_page(app, f"/article/{article_id}")
    assert status == 200
    body = body_of(html)
    works = body.select_one("section[aria-labelledby=how-it-works]")
    assert [li.get_text() for li in works.select("ul > li")] == [
        "Redness fades over two to six weeks.", "Visible vessels (telangiectasia) often go after one session.",
        "Flushing becomes less frequent; see rosacea triggers."]
    assert works.select_one("ul > li > strong").get_text() == "two to six weeks"
    # the source's <h5> sits one level under its section's <h2>, and is no contents entry
    assert [(h.name, h.get_text()) for h in works.find_all(re.compile(r"^h\d$"))] == [
        ("h2", "How the VBeam works"), ("h3", "Is it painful?")]
    assert [li.get_text() for li in body.select("section[aria-labelledby=before-your-session] ol > li")] == [
        "Avoid sun exposure and self-tan for four weeks.", "Stop retinoid creams three days before."]
    results = body.select_one("section[aria-labelledby=aftercare]")
    assert results.select_one("blockquote").get_text().startswith("After three sessions")
    assert [th.get_text() for th in results.select("table th")] == ["Session", "Typical downtime"]
    assert body.select_one("p > strong").get_text() == "VBeam"  # the lead keeps its emphasis
    links = {a.get_text(): (a["href"], a["rel"]) for a in body.select("a")}
    assert links == {"rosacea triggers": ("https://riverside-skin.example/conditions/rosacea/#triggers",
                                          ["nofollow", "noopener"]),
                     "AAD rosacea guide": ("https://www.aad.org/public/diseases/rosacea", ["nofollow", "noopener"])}
    assert not body.find(["script", "style", "iframe", "img", "form"])
    assert not [a for tag in body.find_all(True) for a in tag.attrs if a.startswith("on") or a == "style"]
    assert "javascript:" not in html and "Injected by a script" not in html


def test_contents_list_is_nested_by_heading_level(app: Any, store: Store) -> None:
    article_id, _ = store.save_article(gutenberg())
    page = BeautifulSoup(get_page(app, f"/article/{article_id}")[1], "lxml")
    toc = page.select_one("nav.toc > ol")
    top = [li.find("a", recursive=False).get_text() for li in toc.find_all("li", recursive=False)]
    assert top == ["How the VBeam works", "Results and aftercare"]  # the sub-heading is not a main entry
    nested = toc.select("li > ol > li > a")
    assert [(a.get_text(), a["href"]) for a in nested] == [("Before your session", "#before-your-session")]
    assert nested[0].find_parent("li").find_parent("li").a.get_text() == "How the VBeam works"
    assert "Is it painful?" not in toc.get_text()
    levels = [int(h.name[1]) for h in page.find_all(re.compile(r"^h[1-6]$"))]
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels


def test_text_without_markup_is_escaped_paragraphs(app: Any, store: Store) -> None:
    """Rows stored before markup existed (html "") show their text, escaped, as paragraphs."""
    article = Article(url="https://clinic.example/acne/", title="Acne", site="clinic.example",
                      text=f"Intro.\n\nCauses\n\n{INJECTED}\n\nSecond.",
                      sections=[Section("", "", "Intro."), Section("Causes", "causes", f"{INJECTED}\n\nSecond.")])
    article_id, _ = store.save_article(article)
    status, html = get_page(app, f"/article/{article_id}")
    assert status == 200
    assert "<img src=x" not in html and "<script>alert(2)" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    body = body_of(html)
    assert [p.get_text() for p in body.select("#causes ~ p")] == [INJECTED, "Second."]
    assert not body.find(["img", "script"])


def test_stored_markup_is_sanitised_again_when_shown(app: Any, store: Store) -> None:
    """Markup that reached the store some other way (an older sanitiser, a hand edit) is re-checked."""
    hostile = ('<ul><li>Emollients <em>daily</em></li></ul><img src=x onerror=alert(1)><script>alert(2)</script>'
               '<p onclick="alert(3)">Wet <a href="javascript:alert(4)">wraps</a> at <a href="/night">night</a>'
               '</p><h1>Not a title</h1><iframe src="https://evil.example/"></iframe>')
    article = Article(url="https://clinic.example/eczema/", title="Eczema", site="clinic.example",
                      text="Care\n\nEmollients daily\n\nWet wraps at night\n\nNot a title",
                      sections=[Section("Care", "care", "Emollients daily\n\nWet wraps at night\n\nNot a title",
                                        html=hostile)])
    article_id, _ = store.save_article(article)
    html = get_page(app, f"/article/{article_id}")[1]
    section = body_of(html).select_one("section[aria-labelledby=care]")
    assert str(section.ul) == "<ul><li>Emollients <em>daily</em></li></ul>"
    assert [(a.get_text(), a.get("href")) for a in section.select("a")] == [("night", "https://clinic.example/night")]
    assert section.find("h3").get_text() == "Not a title" and len(BeautifulSoup(html, "lxml").find_all("h1")) == 1
    assert not section.find(["img", "script", "iframe"]) and "onclick" not in html and "javascript:" not in html


def test_api_article_exposes_section_markup_and_documents_it(app: Any, store: Store) -> None:
    article_id, _ = store.save_article(gutenberg())
    with app.test_client() as client:
        data = client.get(f"/api/articles/{article_id}").get_json()
        spec = client.get("/api/openapi.json").get_json()
    assert [s["html"].startswith("<p>") for s in data["sections"]] == [True, True, False, False]
    assert data["sections"][2]["html"].startswith("<ol><li>")
    assert spec["components"]["schemas"]["Section"]["properties"]["html"]["type"] == "string"
    store.db.execute("UPDATE sections SET html = ? WHERE article_id = ? AND position = 0",
                     ('<p onclick="x()">Lead<script>alert(1)</script></p><img src=x onerror=alert(1)>', article_id))
    with app.test_client() as client:
        data = client.get(f"/api/articles/{article_id}").get_json()
    assert data["sections"][0]["html"] == "<p>Lead</p>"  # the API gives the allow-listed markup too


def test_crawl_stores_markup_and_a_recrawl_fills_rows_stored_without_it(tmp_path: Path, data_dir: Path,
                                                                        store: Store, app: Any) -> None:
    """End to end over HTTP: the crawl extracts markup; an old row without it is filled on the next crawl."""
    site = FixtureSite()
    try:
        site.set("/", '<html><body><a href="/blog/vbeam-rosacea/">VBeam</a></body></html>')
        site.set("/blog/vbeam-rosacea/", (PAGES / "wp_gutenberg.html").read_text("utf-8"))
        settings = config.load({"DATA_DIR": str(data_dir), "CRAWL_DELAY": 0.0, "TIMEOUT": 5.0, "RETRIES": 0},
                               environ={})
        source = Source(name="clinic", url=site.url + "/")
        assert crawl_source(source, store, settings).new == 1
        [article_id] = store.article_ids("clinic").values()
        assert "<ul><li>" in store.get_article(article_id).sections[1].html
        store.db.execute("UPDATE sections SET html = ''")  # as a store from before section markup
        seq = store.last_change()
        assert crawl_source(source, store, settings).unchanged == 1
        assert "<ul><li>" in store.get_article(article_id).sections[1].html
        assert store.last_change() == seq  # markup is not indexed: nothing to reindex
    finally:
        site.close()
    assert body_of(get_page(app, f"/article/{article_id}")[1]).select("ul > li")


def test_a_sub_heading_right_after_the_lead_is_not_a_skipped_level(app: Any, store: Store) -> None:
    article = Article(url="https://clinic.example/moles/", title="Moles", site="clinic.example",
                      text="Most moles are harmless.\n\nWhen to worry\n\nA mole that changes.\n\nABCDE\n\nAsymmetry.",
                      sections=[Section("", "", "Most moles are harmless.", level=0),
                                Section("When to worry", "worry", "A mole that changes.", level=3),
                                Section("ABCDE", "abcde", "Asymmetry.", level=4)])
    article_id, _ = store.save_article(article)
    page = BeautifulSoup(get_page(app, f"/article/{article_id}")[1], "lxml")
    assert [(h.name, h.get_text()) for h in page.select(".article-body h2, .article-body h3")] == [
        ("h2", "When to worry"), ("h3", "ABCDE")]
    assert [a.get_text() for a in page.select("nav.toc > ol > li > ol > li > a")] == ["ABCDE"]
