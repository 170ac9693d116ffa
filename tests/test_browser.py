"""kb in a real headless Chromium: search, paginate, filter, sort, read, follow sources, keyboard suggestions.

The app runs under waitress over a real store and index (tests/browser.py); the articles'
source links point at a local "original" site, so following one is a real navigation.
Screenshots at 375 px and 1280 px go to test-artifacts/screenshots/ for people to look at.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

import tests.browser
from tests.browser import (
    SCREENSHOTS,
    format_violations,
    png_size,
    reset_viewport,
    run_axe,
    screenshot,
    set_viewport,
    wait_for,
)

pytestmark = pytest.mark.browser


def press(driver: Any, *sequence: str) -> None:
    """Send keys to whatever has focus, as a keyboard user would."""
    ActionChains(driver).send_keys(*sequence).perform()


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def texts(driver: Any, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def result_titles(driver: Any) -> list[str]:
    return texts(driver, "#results li.result a.result-title")


def h1(driver: Any) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def load(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", f"{url} to load")


def click_and_wait(driver: Any, element: Any, url_part: str) -> None:
    """Click a link and wait for the navigation it starts (the old page's element goes stale)."""
    element.click()
    wait_for(driver, ec.staleness_of(element), f"navigation after clicking towards {url_part}")
    wait_for(driver, lambda d: url_part in d.current_url and
             d.execute_script("return document.readyState") == "complete", f"a URL containing {url_part!r}")


def api_json(world: Any, path: str) -> Any:
    with urllib.request.urlopen(world.url + path, timeout=10) as response:
        assert response.headers.get_content_type() == "application/json"
        return json.load(response)


def focus_by_tabbing(driver: Any, element_id: str, limit: int = 12) -> None:
    """Reach an element with Tab only, starting from the top of the page."""
    driver.find_element(By.TAG_NAME, "body")  # page is there
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    for _ in range(limit):
        press(driver, Keys.TAB)
        if driver.switch_to.active_element.get_dom_attribute("id") == element_id:
            return
    pytest.fail(f"#{element_id} is not reachable with {limit} presses of Tab")


# -- prerequisites ------------------------------------------------------------------------------------------

def test_missing_chromium_fails_with_the_install_command(monkeypatch):
    monkeypatch.setattr(tests.browser, "CHROMEDRIVER", tests.browser.REPO / "no-such-chromedriver")
    with pytest.raises(pytest.fail.Exception) as failed:
        tests.browser.make_driver(tests.browser.REPO / "unused-profile")
    assert "no-such-chromedriver" in str(failed.value)
    assert "apt-get install chromium chromium-driver" in str(failed.value)


def test_missing_axe_core_fails_with_the_install_command(monkeypatch):
    monkeypatch.setattr(tests.browser, "AXE_JS", tests.browser.REPO / "node_modules" / "no-such-axe.js")
    with pytest.raises(pytest.fail.Exception) as failed:
        tests.browser.axe_source()
    assert "npm ci" in str(failed.value)


# -- searching ------------------------------------------------------------------------------------------------

def test_search_from_the_home_page(browser, kb_world):
    load(browser, kb_world.url + "/")
    box = browser.find_element(By.ID, "q")
    assert box.get_dom_attribute("type") == "search"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=q]").text == "Search dermatology articles"
    box.send_keys("skin")
    button = browser.find_element(By.CSS_SELECTOR, "form[role=search] button[type=submit]")
    click_and_wait(browser, button, "/search?")
    assert query_of(browser.current_url) == {"q": ["skin"]}
    assert h1(browser) == f"{len(kb_world.articles)} results for “skin”"
    titles = result_titles(browser)
    assert len(titles) == 10 and set(titles) <= {a.title for a in kb_world.articles}
    assert browser.find_element(By.CSS_SELECTOR, "#results").get_dom_attribute("start") == "1"
    for link in browser.find_elements(By.CSS_SELECTOR, "#results a.source-link"):
        assert link.get_dom_attribute("href").startswith(kb_world.source.url + "/conditions/")
    assert browser.find_element(By.ID, "q").get_dom_attribute("value") == "skin"  # the box keeps the query


def test_results_list_matches_the_json_api(browser, kb_world):
    load(browser, kb_world.url + "/search?q=isotretinoin")
    api = api_json(kb_world, "/api/search?q=isotretinoin")
    assert result_titles(browser) == [hit["title"] for hit in api["results"]]
    assert result_titles(browser)[0] == "Isotretinoin for severe acne"
    snippet = browser.find_element(By.CSS_SELECTOR, "#results li.result .snippet")
    assert [m.text.lower() for m in snippet.find_elements(By.TAG_NAME, "mark")][:1] == ["isotretinoin"]


def test_pagination_keeps_query_and_filters(browser, kb_world):
    acne = [a for a in kb_world.articles if a.categories == ["Acne"]]
    load(browser, kb_world.url + "/search?q=skin&category=Acne")
    assert h1(browser) == f"{len(acne)} results for “skin”"
    first_page = result_titles(browser)
    nav = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Pagination]")
    click_and_wait(browser, nav.find_element(By.CSS_SELECTOR, "a[rel=next]"), "page=2")
    assert query_of(browser.current_url) == {"q": ["skin"], "category": ["Acne"], "page": ["2"]}
    second_page = result_titles(browser)
    assert len(second_page) == len(acne) - 10 and set(second_page) <= {a.title for a in acne}
    assert browser.find_element(By.CSS_SELECTOR, "#results").get_dom_attribute("start") == "11"
    current = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Pagination] a[aria-current=page]")
    assert current.text.split()[-1] == "2"
    assert "Topic: Acne" in browser.find_element(By.CSS_SELECTOR, ".active-filters").text
    assert browser.find_element(By.ID, "q").get_dom_attribute("value") == "skin"
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "a[rel=prev]"), "/search?")
    assert query_of(browser.current_url) == {"q": ["skin"], "category": ["Acne"]}
    assert result_titles(browser) == first_page


def test_pages_list_every_result_exactly_once(browser, kb_world):
    """Equal scores (every Acne article mentions "skin" alike) must not shift results between pages."""
    acne = {a.title for a in kb_world.articles if a.categories == ["Acne"]}
    pages = []
    for page in (1, 2):
        load(browser, kb_world.url + f"/search?q=skin&category=Acne&page={page}")
        pages.append(result_titles(browser))
    assert not set(pages[0]) & set(pages[1]), f"shown on both pages: {set(pages[0]) & set(pages[1])}"
    assert set(pages[0]) | set(pages[1]) == acne, f"on no page: {acne - set(pages[0]) - set(pages[1])}"


def test_filter_by_a_facet_and_remove_it(browser, kb_world):
    rosacea = {a.title for a in kb_world.articles if "Rosacea" in a.categories}
    load(browser, kb_world.url + "/search?q=skin")
    facets = browser.find_element(By.CSS_SELECTOR, "nav.facets")
    link = next(a for a in facets.find_elements(By.CSS_SELECTOR, "a.facet-link")
                if a.text.startswith("Rosacea"))
    assert link.find_element(By.CSS_SELECTOR, ".count").text.split()[0] == str(len(rosacea))
    click_and_wait(browser, link, "category=Rosacea")
    assert query_of(browser.current_url) == {"q": ["skin"], "category": ["Rosacea"]}
    assert h1(browser) == f"{len(rosacea)} results for “skin”"
    assert set(result_titles(browser)) == rosacea
    for item in browser.find_elements(By.CSS_SELECTOR, "#results li.result"):
        assert "Rosacea" in [c.text for c in item.find_elements(By.CSS_SELECTOR, ".chips a.chip")]
    selected = browser.find_element(By.CSS_SELECTOR, "nav.facets a.facet-link.selected")
    assert selected.get_dom_attribute("aria-current") == "true" and selected.text.startswith("Rosacea")
    click_and_wait(browser, selected, "/search?")
    assert query_of(browser.current_url) == {"q": ["skin"]}
    assert h1(browser) == f"{len(kb_world.articles)} results for “skin”"


def _result_dates(driver: Any) -> list[str]:
    return [t.get_dom_attribute("datetime") for t in
            driver.find_elements(By.CSS_SELECTOR, "#results li.result .result-date time")]


def test_sort_by_date(browser, kb_world):
    load(browser, kb_world.url + "/search?q=skin&category=Acne")
    newest = next(a for a in browser.find_elements(By.CSS_SELECTOR, ".results-bar .sort a")
                  if a.text == "Newest first")
    click_and_wait(browser, newest, "sort=date")
    assert query_of(browser.current_url) == {"q": ["skin"], "category": ["Acne"], "sort": ["date"]}
    expected = sorted((a.published for a in kb_world.articles if "Acne" in a.categories), reverse=True)
    dates = _result_dates(browser)
    assert dates == expected[:10]
    assert browser.find_element(By.CSS_SELECTOR, ".sort a[aria-current=true]").text == "Newest first"
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "a[rel=next]"), "page=2")
    assert query_of(browser.current_url) == {"q": ["skin"], "category": ["Acne"], "sort": ["date"], "page": ["2"]}
    assert _result_dates(browser) == expected[10:]


# -- reading ----------------------------------------------------------------------------------------------------

def test_open_an_article_contents_and_read_the_original(browser, kb_world):
    article = kb_world.article("Isotretinoin for severe acne")
    load(browser, kb_world.url + "/search?q=isotretinoin")
    title = browser.find_element(By.CSS_SELECTOR, "#results li.result a.result-title")
    assert title.text == article.title
    click_and_wait(browser, title, f"/article/{article.id}")
    assert h1(browser) == article.title
    assert browser.title.startswith(article.title)
    toc = browser.find_element(By.CSS_SELECTOR, "nav.toc")
    links = toc.find_elements(By.TAG_NAME, "a")
    assert [a.text for a in links] == [s.heading for s in article.sections]
    assert [a.get_dom_attribute("href") for a in links] == [f"#{s.anchor}" for s in article.sections]
    for section in article.sections:  # every contents entry has its target, with the original's anchor
        heading = browser.find_element(By.ID, section.anchor)
        assert heading.tag_name == "h2" and heading.text == section.heading
    links[-1].click()
    wait_for(browser, lambda d: d.execute_script("return location.hash") == "#treatment", "#treatment in the URL")
    assert browser.execute_script("var r = document.getElementById('treatment').getBoundingClientRect();"
                                  "return r.top >= 0 && r.bottom <= window.innerHeight;")
    original = browser.find_element(By.CSS_SELECTOR, ".article-meta a.source-link")
    assert original.text.startswith("Read the original")  # plus hidden context for screen readers: where it goes
    assert original.get_property("textContent") == f"Read the original: {urlsplit(article.url).hostname}"
    assert original.get_dom_attribute("href") == article.url
    assert "noopener" in original.get_dom_attribute("rel")
    click_and_wait(browser, original, article.url.split("/", 3)[3])
    assert browser.current_url == article.url
    assert h1(browser) == article.title  # the original page itself, served by the source site
    assert "/" + article.url.split("/", 3)[3] in kb_world.source.requests


def test_follow_a_source_link_to_the_original_section(browser, kb_world):
    article = kb_world.article("Hormonal acne in adults")
    load(browser, kb_world.url + "/search?q=spironolactone")
    item = browser.find_element(By.CSS_SELECTOR, "#results li.result")
    assert item.find_element(By.CSS_SELECTOR, "a.result-title").text == article.title
    assert item.find_element(By.CSS_SELECTOR, ".result-section").text == "In section Treatment"
    link = item.find_element(By.CSS_SELECTOR, "a.source-link")
    assert link.get_dom_attribute("href") == article.url + "#treatment"
    before = len(kb_world.source.requests)
    click_and_wait(browser, link, "#treatment")
    assert browser.current_url == article.url + "#treatment"
    pages = [p for p in kb_world.source.requests[before:] if p != "/favicon.ico"]
    assert pages == ["/" + article.url.split("/", 3)[3]]  # one page request; the fragment stays in the browser
    # the browser scrolled the original page to the section
    top = browser.execute_script("return document.getElementById('treatment').getBoundingClientRect().top")
    assert abs(top) <= 2 and browser.execute_script("return window.scrollY") > 1000


def test_in_section_link_opens_the_article_at_that_section(browser, kb_world):
    article = kb_world.article("Hormonal acne in adults")
    load(browser, kb_world.url + "/search?q=spironolactone")
    link = browser.find_element(By.CSS_SELECTOR, "#results li.result .result-section a")
    click_and_wait(browser, link, f"/article/{article.id}#treatment")
    assert browser.execute_script("return location.hash") == "#treatment"
    assert browser.find_element(By.ID, "treatment").text == "Treatment"


# -- suggestions with the keyboard only ---------------------------------------------------------------------------

def _listbox_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(
        "var q = document.getElementById('q'), l = document.getElementById('q-suggestions');"
        "return {expanded: q.getAttribute('aria-expanded'), active: q.getAttribute('aria-activedescendant'),"
        " hidden: l.hidden, role: q.getAttribute('role'), controls: q.getAttribute('aria-controls'),"
        " options: Array.prototype.map.call(l.querySelectorAll('[role=option]'), function (o) {"
        "   return [o.id, o.textContent, o.getAttribute('aria-selected')]; }),"
        " focused: document.activeElement === q, status: document.getElementById('q-status').textContent};")


def test_suggestions_with_the_keyboard_only(browser, kb_world):
    load(browser, kb_world.url + "/")
    focus_by_tabbing(browser, "q")
    state = _listbox_state(browser)
    assert (state["role"], state["expanded"], state["controls"], state["hidden"]) == \
        ("combobox", "false", "q-suggestions", True)
    press(browser, "rosa")
    expected = api_json(kb_world, "/api/suggest?q=rosa&limit=8")["suggestions"]
    assert len(expected) >= 2 and expected[0].lower().startswith("rosa")
    wait_for(browser, lambda d: _listbox_state(d)["expanded"] == "true", "the suggestion list to open")
    state = _listbox_state(browser)
    assert not state["hidden"] and state["active"] is None
    assert [o[1] for o in state["options"]] == expected
    assert re.match(rf"{len(expected)} suggestions? available", state["status"])
    press(browser, Keys.ARROW_DOWN)
    state = _listbox_state(browser)
    assert state["active"] == "q-suggestions-option-0" and state["options"][0][2] == "true"
    press(browser, Keys.ARROW_DOWN)
    state = _listbox_state(browser)
    assert state["active"] == "q-suggestions-option-1"
    assert [o[2] for o in state["options"][:2]] == ["false", "true"]
    press(browser, Keys.ARROW_UP)
    state = _listbox_state(browser)
    assert state["active"] == "q-suggestions-option-0" and state["focused"]  # focus never leaves the box
    page = browser.find_element(By.TAG_NAME, "html")
    press(browser, Keys.ENTER)
    wait_for(browser, ec.staleness_of(page), "Enter on a suggestion to search for it")
    wait_for(browser, lambda d: "/search?" in d.current_url, "the results page")
    assert query_of(browser.current_url) == {"q": [expected[0]]}
    assert h1(browser).endswith(f"for “{expected[0]}”")
    assert result_titles(browser)


def test_escape_closes_the_suggestions(browser, kb_world):
    load(browser, kb_world.url + "/search?q=skin")
    focus_by_tabbing(browser, "q")  # the header search box on the results page
    press(browser, Keys.END, Keys.BACKSPACE * 4, "ecz")
    wait_for(browser, lambda d: _listbox_state(d)["expanded"] == "true", "suggestions for 'ecz'")
    press(browser, Keys.ARROW_DOWN)
    assert _listbox_state(browser)["active"] == "q-suggestions-option-0"
    press(browser, Keys.ESCAPE)
    state = _listbox_state(browser)
    assert state["hidden"] and state["expanded"] == "false" and state["active"] is None
    assert state["focused"] and browser.find_element(By.ID, "q").get_property("value") == "ecz"
    assert query_of(browser.current_url) == {"q": ["skin"]}  # Escape did not navigate
    press(browser, Keys.ARROW_DOWN)  # ArrowDown reopens the list that Escape closed
    wait_for(browser, lambda d: _listbox_state(d)["expanded"] == "true", "ArrowDown to reopen the list")
    press(browser, Keys.ESCAPE, Keys.ENTER)  # Enter with the list closed submits what was typed
    wait_for(browser, lambda d: query_of(d.current_url).get("q") == ["ecz"], "a search for the typed text")


# -- keyboard shortcut: "/" and Ctrl/Cmd-K -------------------------------------------------------------------------

def chord(driver: Any, modifier: str, key: str) -> None:
    """Press `key` while holding `modifier` (Keys.CONTROL, Keys.META, Keys.ALT)."""
    ActionChains(driver).key_down(modifier).send_keys(key).key_up(modifier).perform()


def focused_id(driver: Any) -> str | None:
    return driver.execute_script("var a = document.activeElement; return a && a !== document.body ? a.id : null;")


def blur(driver: Any) -> None:
    driver.execute_script("document.activeElement && document.activeElement.blur();")
    assert focused_id(driver) is None


def test_slash_and_ctrl_k_focus_the_search_box(browser, kb_world):
    load(browser, kb_world.url + "/search?q=skin")
    url = browser.current_url
    box = browser.find_element(By.ID, "q")
    assert box.get_dom_attribute("aria-keyshortcuts") == "/ Control+K Meta+K"
    blur(browser)
    press(browser, "/")
    assert focused_id(browser) == "q"
    assert box.get_property("value") == "skin"  # the "/" moved focus and was not typed
    selection = browser.execute_script("return [arguments[0].selectionStart, arguments[0].selectionEnd]", box)
    assert selection == [0, 4]  # selected, so typing replaces the old query
    press(browser, Keys.END, "a/b")  # typing in the box: "/" is just a character there
    assert box.get_property("value") == "skina/b" and focused_id(browser) == "q"
    for modifier in (Keys.CONTROL, Keys.META):
        blur(browser)
        chord(browser, modifier, "k")
        assert focused_id(browser) == "q", f"{modifier!r}+K did not focus the search box"
    for modifier in (Keys.CONTROL, Keys.ALT):  # other combinations are left to the browser and the page
        blur(browser)
        chord(browser, modifier, "/")
        assert focused_id(browser) is None, f"{modifier!r}+/ focused the search box"
    blur(browser)
    press(browser, "k")
    assert focused_id(browser) is None  # plain K is no shortcut
    assert browser.current_url == url  # nothing navigated


def test_shortcuts_leave_other_fields_alone_and_the_hint_shows(browser, kb_world):
    load(browser, kb_world.url + "/login")
    name = browser.find_element(By.ID, "username")
    name.click()
    press(browser, "a/b")
    chord(browser, Keys.CONTROL, "k")
    assert focused_id(browser) == "username" and name.get_property("value") == "a/b"
    assert browser.find_element(By.ID, "q").get_property("value") == ""
    load(browser, kb_world.url + "/")
    hint = browser.find_element(By.CSS_SELECTOR, ".combo .shortcut-hint")
    assert hint.get_dom_attribute("aria-hidden") == "true" and hint.text == "/"
    assert hint.is_displayed()  # an empty, unfocused box shows the "/" key
    press(browser, "/")
    assert focused_id(browser) == "q" and not hint.is_displayed()


# -- the Filter control: before the results on a phone, a side column on wide screens ---------------------------------

def _open(element: Any) -> bool:
    return element.get_property("open") is True


def test_filter_control_on_a_phone_comes_before_the_results(browser, kb_world, axe_js):
    set_viewport(browser, 375, 740)
    try:
        load(browser, kb_world.url + "/search?q=skin")
        filters = browser.find_element(By.ID, "filters")
        summary = filters.find_element(By.TAG_NAME, "summary")
        first = browser.find_element(By.CSS_SELECTOR, "#results li.result")
        assert not _open(filters) and " ".join(summary.text.split()) == "Filter"
        bottom = summary.rect["y"] + summary.rect["height"]
        assert bottom <= first.rect["y"] and bottom <= 740, "the Filter control is not above the first result"
        links = filters.find_elements(By.CSS_SELECTOR, "a.facet-link")
        assert links and not any(link.is_displayed() for link in links)  # collapsed: results come first
        focus_by_tabbing(browser, "q")
        press(browser, Keys.TAB, Keys.TAB)  # Search button, then the Filter control
        assert browser.switch_to.active_element == summary
        press(browser, Keys.ENTER)  # a keyboard opens it like a click
        wait_for(browser, lambda d: _open(filters), "Enter on Filter to expand the facets")
        rosacea = next(a for a in links if a.text.startswith("Rosacea"))
        assert rosacea.is_displayed() and rosacea.rect["y"] < browser.find_element(
            By.CSS_SELECTOR, "#results li.result").rect["y"]
        inner, scroll = browser.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
        assert scroll <= inner
        screenshot(browser, SCREENSHOTS / "results-filter-open-375.png")
        violations = run_axe(browser, axe_js)
        assert not violations, ("axe-core violations with the Filter open on a phone:\n"
                                + format_violations(violations))
        click_and_wait(browser, rosacea, "category=Rosacea")
        filters = browser.find_element(By.ID, "filters")
        assert not _open(filters)
        assert " ".join(filters.find_element(By.TAG_NAME, "summary").text.split()) == "Filter (1 active)"
    finally:
        reset_viewport(browser)


def test_filter_control_is_an_open_side_column_on_wide_screens(browser, kb_world):
    load(browser, kb_world.url + "/search?q=skin")
    filters = browser.find_element(By.ID, "filters")
    results = browser.find_element(By.ID, "results")
    wait_for(browser, lambda d: _open(filters), "kb.js to open the Filter control on a wide screen")
    assert filters.rect["x"] >= results.rect["x"] + results.rect["width"]  # beside the results, not above
    assert filters.find_element(By.CSS_SELECTOR, "a.facet-link").is_displayed()
    set_viewport(browser, 375, 740)  # turning into a phone-sized window closes it again
    try:
        wait_for(browser, lambda d: not _open(filters), "the Filter control to close at 375px")
    finally:
        reset_viewport(browser)
    wait_for(browser, lambda d: _open(filters), "the Filter control to reopen at full width")


# -- without JavaScript -------------------------------------------------------------------------------------------

def test_search_works_with_javascript_disabled(browser_nojs, kb_world):
    driver = browser_nojs
    load(driver, kb_world.url + "/")
    box = driver.find_element(By.ID, "q")
    assert box.get_dom_attribute("role") is None  # kb.js really did not run: it makes the box a combobox
    box.send_keys("eczema", Keys.ENTER)
    wait_for(driver, lambda d: "/search?" in d.current_url, "the results page without JavaScript")
    assert query_of(driver.current_url) == {"q": ["eczema"]}
    eczema = {a.title for a in kb_world.articles if "Eczema" in a.categories}
    assert eczema <= set(result_titles(driver))
    assert driver.find_element(By.ID, "q-suggestions").get_dom_attribute("hidden") is not None
    filters = driver.find_element(By.ID, "filters")
    assert filters.get_property("open") is False  # without kb.js the Filter control stays as the HTML says
    filters.find_element(By.TAG_NAME, "summary").click()  # <details> opens without any script
    assert filters.get_property("open") is True
    link = next(a for a in driver.find_elements(By.CSS_SELECTOR, "nav.facets a.facet-link")
                if a.text.startswith("Eczema"))
    click_and_wait(driver, link, "category=Eczema")
    assert set(result_titles(driver)) == eczema
    load(driver, kb_world.url + "/search?q=skin&page=3")
    assert query_of(driver.current_url)["page"] == ["3"] and result_titles(driver)
    first = driver.find_element(By.CSS_SELECTOR, "#results a.result-title")
    click_and_wait(driver, first, "/article/")
    assert driver.find_elements(By.CSS_SELECTOR, "nav.toc a")


# -- layout: screenshots and no horizontal scrolling on a phone -------------------------------------------------

@pytest.mark.parametrize("width", [375, 1280])
def test_screenshots_and_no_horizontal_scrolling(browser, kb_world, width):
    long_title = kb_world.articles[-1]
    pages = {
        "home": "/",
        "results": "/search?q=skin",
        "article": f"/article/{kb_world.article('Isotretinoin for severe acne').id}",
        "long-words": f"/article/{long_title.id}",
        "long-words-results": "/search?q=" + quote(long_title.title.split()[0]),
    }
    set_viewport(browser, width, 900)
    try:
        for name, path in pages.items():
            load(browser, kb_world.url + path)
            inner, scroll = browser.execute_script(
                "return [window.innerWidth, document.documentElement.scrollWidth]")
            assert inner == width
            assert scroll <= inner, f"{name} scrolls sideways at {width}px ({scroll}px wide)"
            if name in ("home", "results", "article"):
                path_png = screenshot(browser, SCREENSHOTS / f"{name}-{width}.png")
                assert png_size(path_png)[0] == width
    finally:
        reset_viewport(browser)
