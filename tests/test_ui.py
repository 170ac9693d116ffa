"""UI polish through the Flask test client over a real store and Whoosh index: header links, home topics,
site labels that match the Source site filter, honest no-results help, the Filter control's place, and the
staff-only audience filter (ignored outright for anonymous visitors).

The keyboard shortcut and the Filter control's behaviour in a real browser are in tests/test_browser.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup

from kb import users
from kb.config import data_paths
from kb.models import Article, Section
from kb.store import open_store
from kb.web import create_app
from kb.web.pages import HOME_TAGS, HOME_TOPICS

PASSWORD = "correct horse battery"
SITE = "derm-original.test"  # the stored site differs from the URL's host, as with a CDN or a moved site
PUBLIC_TOPICS = ("Acne", "Rosacea", "Eczema", "Psoriasis", "Skin cancer", "Hair loss", "Nails", "Sun care",
                 "Warts", "Vitiligo")


def _article(n: int, title: str, category: str, tags: list[str], audience: str = "public") -> Article:
    text = f"{title}. Retinoids and skin care advice number {n}."
    return Article(url=f"http://127.0.0.1:9/a/{n}", title=title, text=text,
                   sections=[Section("Treatment", "treatment", text)], site=SITE, categories=[category],
                   tags=tags, audience=audience, published=f"2020-01-{n % 27 + 1:02d}")


def _articles() -> list[Article]:
    """Ten public topics of falling size (Acne 10 … Vitiligo 1), and staff records a patient must never count."""
    out: list[Article] = []
    n = 0
    for rank, topic in enumerate(PUBLIC_TOPICS):
        for _ in range(len(PUBLIC_TOPICS) - rank):
            n += 1
            out.append(_article(n, f"{topic} guide {n}", topic, [f"tag{n % 14}", "retinoids"]))
    out.append(_article(900, "Retinoids dosing protocol", "Clinic protocols", ["dosing", "retinoids"], "staff"))
    out.append(_article(901, "Retinoids audit for acne", "Acne", ["audit"], "staff"))
    return out


@pytest.fixture(scope="module")
def ui_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the module: store, index and a staff user (building the index once keeps tests fast)."""
    from kb.index import rebuild

    data_dir = tmp_path_factory.mktemp("ui-data")
    paths = data_paths(data_dir)
    with open_store(paths["store"]) as store:
        for article in _articles():
            store.save_article(article, source="test")
        assert rebuild(store, paths["index"]) == len(_articles())
        users.add_user(store, "alice", PASSWORD)
    return data_dir


@pytest.fixture
def app(ui_data: Path) -> Iterator[Any]:
    app = create_app({"DATA_DIR": str(ui_data), "TESTING": True, "QUERY_LOG": False})
    yield app
    app.extensions["kb"].close()


def page(client: Any, url: str, status: int = 200) -> BeautifulSoup:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return BeautifulSoup(response.get_data(as_text=True), "lxml")


def sign_in(client: Any) -> None:
    form = page(client, "/login").select_one("form.login-form")
    data = {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}
    response = client.post("/login", data={**data, "username": "alice", "password": PASSWORD})
    assert response.status_code == 303


def titles(soup: BeautifulSoup) -> list[str]:
    return [a.get_text() for a in soup.select("#results a.result-title")]


# -- header ---------------------------------------------------------------------------------------------------

def test_header_links_to_faq_and_staff_sign_in(app):
    with app.test_client() as client:
        for url in ("/", "/search?q=retinoids", "/faq", "/login", "/no-such-page"):
            soup = page(client, url, 404 if url == "/no-such-page" else 200)
            nav = soup.select_one('header.site-header nav[aria-label="Site"]')
            assert nav is not None, url
            links = {a.get_text(" ", strip=True): a for a in nav.select("a")}
            assert links["FAQ"]["href"] == "/faq" and links["Staff sign-in"]["href"] == "/login", url
            current = [a["href"] for a in nav.select('a[aria-current="page"]')]
            assert current == ({"/faq": ["/faq"], "/login": ["/login"]}.get(url, [])), url
        sign_in(client)
        soup = page(client, "/")
        nav = soup.select_one('header.site-header nav[aria-label="Site"]')
        assert [a["href"] for a in nav.select("a")] == ["/faq"]  # signed in: no sign-in link
        button = soup.select_one("header.site-header form.logout-form button[type=submit]")
        assert button.get_text(strip=True) == "Sign out" and "button" in button["class"]


def test_sign_in_form_uses_labelled_fields_and_the_shared_button(app):
    with app.test_client() as client:
        form = page(client, "/login").select_one("form.login-form")
        for name in ("username", "password"):
            field = form.select_one(f"div.field input#{name}")
            assert field is not None and form.select_one(f"div.field label[for={name}]")
        assert not form.select("br")
        assert form.select_one("button[type=submit]")["class"] == ["button"]


# -- home page ----------------------------------------------------------------------------------------------

def _topic_rows(soup: BeautifulSoup, css: str) -> list[tuple[str, str, str]]:
    return [(li.a.get_text(), li.select_one(".count").get_text(" ", strip=True), li.a["href"])
            for li in soup.select(css)]


def test_home_lists_top_topics_with_counts_and_the_most_used_tags(app):
    with app.test_client() as client:
        soup = page(client, "/")
    browse = soup.select_one("section.browse")
    rows = _topic_rows(browse, ":scope > ul.topic-rows > li")
    sizes = {topic: len(PUBLIC_TOPICS) - rank for rank, topic in enumerate(PUBLIC_TOPICS)}
    expected = [(t, f"{sizes[t]} article{'s' if sizes[t] != 1 else ''}", f"/search?category={t.replace(' ', '+')}")
                for t in PUBLIC_TOPICS]
    assert rows == expected[:HOME_TOPICS]  # Acne counts 10: the staff audit in Acne is not counted
    more = browse.select_one("details.more-topics")
    assert more is not None and more.get("open") is None
    assert _topic_rows(more, "ul.topic-rows > li") == expected[HOME_TOPICS:]
    tags = [a.get_text(" ", strip=True) for a in browse.select('ul.chips[aria-label="Most used tags"] a')]
    assert 0 < len(tags) <= HOME_TAGS
    assert tags[0] == f"retinoids {sum(sizes.values())} articles"  # public articles only (55, not 57)
    text = browse.get_text(" ", strip=True)
    for staff_only in ("Clinic protocols", "dosing", "audit"):
        assert staff_only not in text


def test_home_topics_for_staff_include_staff_records(app):
    with app.test_client() as client:
        sign_in(client)
        soup = page(client, "/")
    rows = _topic_rows(soup, "section.browse ul.topic-rows > li")
    assert rows[0][:2] == ("Acne", "11 articles")
    assert ("Clinic protocols", "1 article", "/search?category=Clinic+protocols") in rows


# -- results page ----------------------------------------------------------------------------------------------

def test_result_site_label_is_the_source_site_filter_label(app):
    with app.test_client() as client:
        soup = page(client, "/search?q=retinoids")
    hosts = {span.get_text(strip=True) for span in soup.select("#results .result-meta .source-host")}
    facet = soup.select_one(".facet-site")
    assert facet.h3.get_text() == "Source site"
    labels = {a.contents[0].strip() for a in facet.select("a.facet-link")}
    assert hosts == labels == {SITE}  # not 127.0.0.1, the URL's host
    link = facet.select_one("a.facet-link")
    assert parse_qs(urlsplit(link["href"]).query)["site"] == [SITE]


def test_filter_control_comes_before_the_results_closed(app):
    """A <details> "Filter" control between the summary and the first result; kb.js opens it on wide screens."""
    with app.test_client() as client:
        soup = page(client, "/search?q=retinoids&category=Acne")
    details = soup.select_one("details#filters")
    assert details is not None and details.get("open") is None
    assert details.get("data-open-media") == "(min-width: 62rem)"
    assert details.summary.get_text(" ", strip=True) == "Filter (1 active)"
    assert details.select_one('nav.facets[aria-label="Refine results"] a.facet-link')
    order = [el.get("id") for el in soup.select("#results-title, #filters, #results")]
    assert order == ["results-title", "filters", "results"]


def test_no_results_page_offers_only_what_exists(app, tmp_path):
    with app.test_client() as client:
        soup = page(client, "/search?q=zzqxvbnm")
    help_text = soup.select_one(".no-results").get_text(" ", strip=True)
    assert not soup.select(".did-you-mean")
    assert "suggest" not in help_text.lower() and "did you mean" not in help_text.lower()
    assert "without filters" not in help_text  # nothing was filtered
    assert soup.select_one('.no-results a[href="/#browse-title"]')  # the home page does list topics
    # An empty knowledge base has no topics to browse, so the page does not send readers there.
    from kb.index import rebuild

    empty = tmp_path / "empty"
    with open_store(data_paths(empty)["store"]) as store:
        rebuild(store, data_paths(empty)["index"])
    bare = create_app({"DATA_DIR": str(empty), "TESTING": True, "QUERY_LOG": False})
    try:
        with bare.test_client() as client:
            soup = page(client, "/search?q=zzqxvbnm")
    finally:
        bare.extensions["kb"].close()
    assert "Browse topics" not in soup.select_one(".no-results").get_text(" ", strip=True)


# -- audience filter -------------------------------------------------------------------------------------------

STAFF_TITLES = {"Retinoids dosing protocol", "Retinoids audit for acne"}


def _all_titles(client: Any, url: str) -> set[str]:
    """Every result title over all pages of `url` (following rel=next)."""
    seen: set[str] = set()
    while url:
        soup = page(client, url)
        seen |= set(titles(soup))
        nxt = soup.select_one("a[rel=next]")
        url = nxt["href"] if nxt else ""
    return seen


def test_staff_narrow_results_to_staff_or_public_records(app):
    with app.test_client() as client:
        sign_in(client)
        everything = _all_titles(client, "/search?q=retinoids")
        assert STAFF_TITLES < everything
        assert _all_titles(client, "/search?q=retinoids&audience=staff") == STAFF_TITLES
        assert _all_titles(client, "/search?q=retinoids&audience=public") == everything - STAFF_TITLES
        soup = page(client, "/search?q=retinoids&audience=public")
        group = soup.select_one(".facet-audience")
        assert group.h3.get_text() == "Audience"
        links = {a.contents[0].strip(): a for a in group.select("a.facet-link")}
        assert set(links) == {"Public", "Staff only"}
        assert links["Public"]["aria-current"] == "true" and links["Public"]["href"] == "/search?q=retinoids"
        assert parse_qs(urlsplit(links["Staff only"]["href"]).query) == {"q": ["retinoids"], "audience": ["staff"]}
        chip = soup.select_one(".active-filters a.chip-active")
        assert chip.get_text(" ", strip=True).startswith("Audience: Public")
        assert parse_qs(urlsplit(soup.select_one("a[rel=next]")["href"]).query)["audience"] == ["public"]
        bad = client.get("/search?q=retinoids&audience=everyone")
        assert bad.status_code == 400 and "audience must be one of public, staff" in bad.get_data(as_text=True)


@pytest.mark.parametrize("value", ["staff", "public", "everyone", ""])
def test_anonymous_audience_parameter_is_ignored_entirely(app, value):
    with app.test_client() as client:
        plain = client.get("/search?q=retinoids")
        asked = client.get(f"/search?q=retinoids&audience={value}")
    assert asked.status_code == plain.status_code == 200
    assert asked.get_data() == plain.get_data()
    soup = BeautifulSoup(asked.get_data(as_text=True), "lxml")
    assert not soup.select(".facet-audience") and "audience=" not in asked.get_data(as_text=True)
    assert not STAFF_TITLES & set(titles(soup))


def test_home_counts_are_recounted_after_the_store_changes(tmp_path):
    """The home page's counts are cached per process; any article write must show at once."""
    from kb.index import rebuild

    paths = data_paths(tmp_path / "data")
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True, "QUERY_LOG": False})
    try:
        with open_store(paths["store"]) as store, app.test_client() as client:
            store.save_article(_article(1, "Acne basics", "Acne", ["retinoids"]))
            rebuild(store, paths["index"])
            assert _topic_rows(page(client, "/"), "ul.topic-rows > li") == [
                ("Acne", "1 article", "/search?category=Acne")]
            store.save_article(_article(2, "Rosacea basics", "Rosacea", ["redness"]))
            store.save_article(_article(3, "Staff rosacea notes", "Rosacea", ["redness"], "staff"))
            soup = page(client, "/")
            assert _topic_rows(soup, "ul.topic-rows > li") == [
                ("Acne", "1 article", "/search?category=Acne"), ("Rosacea", "1 article", "/search?category=Rosacea")]
            assert "Search 2 articles from 1 site" in soup.get_text(" ", strip=True)
    finally:
        app.extensions["kb"].close()
