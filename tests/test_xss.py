"""Cross-site scripting: hostile strings in queries and in crawled titles, bodies, URLs, tags and metadata.

Every payload is stored as a crawled article (Store.save_article, then kb.index.rebuild) and
also sent as a query and as a filter value. Two independent checks:

* without a browser (Flask test client): HTML pages contain no markup, event handler, script or
  dangerous URL that came from a payload, text round-trips exactly, and JSON is application/json
  with no raw < > at all;
* in headless Chromium: alert/confirm/prompt are replaced before any page script runs
  (Page.addScriptToEvaluateOnNewDocument) and must never be called. The page's Content-Security-
  Policy is bypassed for these loads (Page.setBypassCSP) so escaping alone is under test; a
  separate test shows CSP would also have blocked an injected handler.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Iterator
from urllib.parse import quote, urlencode

import pytest
from bs4 import BeautifulSoup

from kb.models import Article, Section
from tests.browser import XSS_HOOK, build_data_dir, close_app, make_kb_app, serve_app, wait_for

PAYLOADS: tuple[str, ...] = (
    # script elements
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//xss.example/x.js></SCRIPT>",
    "<script>confirm('x')</script>",
    "<script>prompt(1)</script>",
    "\"><script>alert(document.domain)</script>",
    "'><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    "</textarea><script>alert(1)</script>",
    "</script><script>alert(1)</script>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<<script>alert(1)//<</script>",
    "<script>/*</script><svg onload=alert(1)>*/",
    # event handlers
    "<img src=x onerror=alert(1)>",
    "<img src=\"x\" onerror=\"alert('img')\">",
    "<IMG SRC=# onmouseover=\"alert(1)\">",
    "<img/src/onerror=alert(1)>",
    "<img src=x onerror=alert&#40;1&#41;>",
    "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    "<body onload=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<select autofocus onfocus=alert(1)>",
    "<textarea autofocus onfocus=alert(1)>",
    "<keygen autofocus onfocus=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<video><source onerror=alert(1)>",
    "<audio src=x onerror=alert(1)>",
    "<marquee onstart=alert(1)>",
    "<isindex type=image src=1 onerror=alert(1)>",
    "<x onclick=alert(1)>click me",
    "<div style=\"animation-name:spin\" onanimationstart=alert(1)>",
    # SVG and MathML
    "<svg onload=alert(1)>",
    "<svg/onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<svg><a xlink:href=\"javascript:alert(1)\"><text x=\"20\" y=\"20\">x</text></a></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    # frames, objects, forms, meta, base, style
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\">",
    "<object data=\"javascript:alert(1)\">",
    "<embed src=\"javascript:alert(1)\">",
    "<form action=\"javascript:alert(1)\"><button>x</button></form>",
    "<button formaction=javascript:alert(1)>x</button>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<base href=\"javascript:alert(1)//\">",
    "<style>@import 'javascript:alert(1)';</style>",
    "<div style=\"background:url(javascript:alert(1))\">",
    "<a href=\"javascript:alert(1)\">click</a>",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<!--<img src=\"--><img src=x onerror=alert(1)//\">",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    # javascript:, data: and vbscript: URLs (these also become article URLs)
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "&#106;avascript:alert(1)",
    "javascript&colon;alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    # http(s) URLs that try to break out of the href attribute
    "https://example.org/\"><script>alert(1)</script>",
    "https://example.org/' onmouseover='alert(1)",
    "http://example.org/#\"><img src=x onerror=alert(1)>",
    "https://example.org/?q=<svg/onload=alert(1)>",
    "https://example.org/\" autofocus onfocus=\"alert(1)",
    # attribute and JavaScript-string breakouts
    "\" onmouseover=\"alert(1)",
    "' onfocus='alert(1)' autofocus='",
    "\" autofocus onfocus=\"alert(1)\" x=\"",
    "x\" onerror=\"alert(1)",
    "\"-alert(1)-\"",
    "';alert(1);//",
    # encoded variants
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
    "\\x3cscript\\x3ealert(1)\\x3c/script\\x3e",
    "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e",
    # template injection (Jinja, Angular, other engines)
    "{{7*7}}",
    "{{ config }}",
    "{% for c in [1,2] %}{{ c }}{% endfor %}",
    "{{constructor.constructor('alert(1)')()}}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
)

# Tags kb's own templates use; a payload that produces any other element was parsed as markup.
KB_TAGS = frozenset({
    "html", "head", "meta", "title", "link", "script", "body", "a", "span", "header", "div", "form", "label",
    "input", "ul", "ol", "li", "button", "p", "main", "footer", "nav", "h1", "h2", "h3", "h4", "h5", "h6",
    "section", "article", "aside", "dl", "dt", "dd", "time", "mark", "br", "strong", "em", "code", "small",
    "abbr", "hr", "fieldset", "legend", "summary", "details",
    # article bodies keep the source's safe markup (kb.extract.markup's allow-list)
    "b", "i", "blockquote", "table", "thead", "tbody", "tr", "th", "td",
})
URL_ATTRIBUTES = ("href", "src", "action", "formaction", "data", "xlink:href", "poster", "background", "srcset")
SPECIAL = set("<>\"'")  # raw in HTML only as markup; a raw & may be part of another escaped payload


def code_word(n: int) -> str:
    """A unique, letters-only search word per payload (digits and punctuation are analysed differently)."""
    letters = string.ascii_lowercase
    return "xq" + letters[n // 26 % 26] + letters[n % 26]


def indexed(value: str) -> str:
    """A tag or category as the index keeps it: commas separate values there, so they become spaces."""
    return " ".join(value.replace(",", " ").split())


def url_like(payload: str) -> bool:
    return bool(re.match(r"\s*[a-zA-Z&#0-9;\t\n]+:", payload))


def payload_article(n: int, payload: str) -> Article:
    """A crawled article carrying `payload` in every field a crawler fills from the page."""
    code = code_word(n)
    url = payload if n % 2 == 0 or url_like(payload) else f"https://xss.example/{n}/{payload}"
    return Article(
        url=url, title=f"{code} {payload}",
        text=f"{code} introduction about the skin.\n\n{payload}\n{payload} {code} detail about the skin.",
        sections=[Section(payload, payload.strip() or "x", f"{payload} {code} detail about the skin.")],
        description=payload, author=payload, published=f"20{10 + n % 15}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        categories=[payload] if n % 3 == 0 else ["Payloads"], tags=[payload, code],
        site=payload if n % 4 == 1 else "xss.example", lang="en",
    )


@pytest.fixture(scope="module")
def xss_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Article]]]:
    """The Flask app over a store + index holding one article per payload."""
    data_dir = tmp_path_factory.mktemp("xss-world")
    articles = build_data_dir(data_dir, [payload_article(n, p) for n, p in enumerate(PAYLOADS)])
    app = make_kb_app(data_dir)
    yield app, articles
    close_app(app)


def test_payload_list_is_large_and_varied():
    assert len(PAYLOADS) >= 50 and len(set(PAYLOADS)) == len(PAYLOADS)
    kinds = {
        "script tag": lambda p: "<script" in p.lower(), "event handler": lambda p: re.search(r"\son\w+=", p),
        "javascript: URL": lambda p: "script:" in p.lower(), "svg": lambda p: "<svg" in p,
        "attribute breakout": lambda p: p.startswith(("\"", "'")), "template": lambda p: "{{" in p or "${" in p,
        "encoded": lambda p: "%3C" in p or "&lt;" in p or "\\u003c" in p, "http URL": lambda p: p.startswith("http"),
    }
    counts = {kind: sum(1 for p in PAYLOADS if matches(p)) for kind, matches in kinds.items()}
    assert all(count >= 2 for count in counts.values()), counts


# -- without a browser: the HTML and JSON as served ----------------------------------------------------------

def _get(client: Any, url: str) -> Any:
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def dangerous_scheme(value: str) -> bool:
    """Would a browser treat this URL as script/data? (It strips whitespace and control characters first.)"""
    cleaned = re.sub(r"[\x00-\x20\x7f]", "", value).lower()
    return cleaned.startswith(("javascript:", "vbscript:", "data:"))


def assert_inert_html(text: str, payload: str, where: str) -> BeautifulSoup:
    """No element, attribute, script or URL in `text` came from `payload`; returns the parsed page."""
    page = BeautifulSoup(text, "html.parser")
    problems = []
    for element in page.find_all(True):
        if element.name not in KB_TAGS:
            problems.append(f"unexpected <{element.name}> element")
        for name, value in element.attrs.items():
            value = " ".join(value) if isinstance(value, list) else str(value)
            if name.lower().startswith("on"):
                problems.append(f"event handler {name}= on <{element.name}>")
            if name.lower() in URL_ATTRIBUTES and dangerous_scheme(value):
                problems.append(f"{name}={value!r} on <{element.name}>")
            if name.lower() in ("srcdoc", "style", "http-equiv"):
                problems.append(f"{name}= on <{element.name}>")
    scripts = page.find_all("script")
    for script in scripts:
        if not (script.get("src") or "").startswith("/static/") or script.get_text().strip():
            problems.append(f"script that is not kb's own: {str(script)[:80]}")
    if text.lower().count("<script") != len(scripts):
        problems.append("a raw <script sequence the parser did not see as kb's script")
    if SPECIAL & set(payload) and payload in text:
        problems.append("the payload appears unescaped")
    assert not problems, f"{where} with payload {payload!r}: " + "; ".join(problems)
    return page


def assert_safe_json(response: Any, where: str) -> Any:
    assert response.status_code in (200, 400, 404), f"{where}: status {response.status_code}"
    assert response.mimetype == "application/json", f"{where}: served as {response.mimetype}"
    body = response.get_data(as_text=True)
    assert "<" not in body and ">" not in body, f"{where}: raw < or > in JSON"
    return json.loads(body)


@pytest.mark.parametrize("n", range(len(PAYLOADS)), ids=[f"p{n:02d}" for n in range(len(PAYLOADS))])
def test_payload_is_escaped_in_html_and_json(xss_world, n):
    app, articles = xss_world
    payload, article, code = PAYLOADS[n], articles[n], code_word(n)
    with app.test_client() as client:
        # the payload as a query, as a filter value, and in a bad parameter's error message
        for url in (f"/search?{urlencode({'q': payload})}", f"/search?{urlencode({'tag': indexed(payload)})}",
                    f"/search?{urlencode({'q': code, 'category': indexed(article.categories[0]), 'sort': 'date'})}",
                    f"/search?{urlencode({'q': code, 'year': payload})}", "/article/" + quote(payload, safe="")):
            response = _get(client, url)
            assert response.status_code in (200, 400, 404), f"{url}: {response.status_code}"
            assert response.mimetype == "text/html"
            assert_inert_html(response.get_data(as_text=True), payload, url)

        # the crawled article on the results page: its title is text, its URL is only a link when http(s)
        response = _get(client, f"/search?q={code}")
        page = assert_inert_html(response.get_data(as_text=True), payload, f"results for {code}")
        item = next(li for li in page.select("#results li.result")
                    if li.select_one("a.result-title")["href"] == f"/article/{article.id}")
        assert item.select_one("a.result-title").get_text() == article.title
        for link in page.select("a[href]"):
            assert not dangerous_scheme(link["href"]), link
        source = item.select_one("a.source-link")
        if url_like(article.url) and not article.url.lower().startswith("http"):
            assert source is None, "a javascript:/data: URL became a link"
            assert payload in item.select_one(".source-text").get_text()
        if source is not None:
            assert source["href"].startswith(("http://", "https://"))

        # the article page: every field round-trips as text
        response = _get(client, f"/article/{article.id}")
        assert response.status_code == 200
        page = assert_inert_html(response.get_data(as_text=True), payload, f"article {article.id}")
        assert page.h1.get_text() == article.title
        assert page.title.get_text().startswith(article.title)
        assert page.find("meta", attrs={"name": "description"})["content"] == payload
        assert payload.strip() in [h.get_text() for h in page.select(".article-body h2")]
        assert article.tags[0] in [a.get_text() for a in page.select(".article-header .chips a")] or "," in payload

        # JSON API: application/json, no raw markup characters, exact round trip
        data = assert_safe_json(_get(client, f"/api/articles/{article.id}"), "api article")
        assert (data["title"], data["url"], data["tags"][0], data["description"]) == \
            (article.title, article.url, payload, payload)
        data = assert_safe_json(_get(client, f"/api/search?q={code}"), "api search")
        assert article.title in [hit["title"] for hit in data["results"]]
        assert_safe_json(_get(client, f"/api/search?{urlencode({'q': payload})}"), "api search payload")
        assert_safe_json(_get(client, f"/api/search?{urlencode({'q': code, 'year': payload})}"), "api 400")
        data = assert_safe_json(_get(client, f"/api/suggest?{urlencode({'q': payload})}"), "api suggest")
        assert data["query"] == " ".join(payload.split())


@pytest.mark.parametrize("name", ["tag", "category", "site"])
def test_unknown_filter_values_are_not_errors(xss_world, name):
    """A hand-made link may name a tag or topic no article has: that is "0 results", never a 500."""
    app, _ = xss_world
    with app.test_client() as client:
        for payload in ("<img src=x onerror=alert(2)>", "no such value"):
            response = _get(client, f"/search?{urlencode({'q': 'skin', name: payload})}")
            assert response.status_code == 200, f"{name}={payload!r} gave {response.status_code}"
            page = assert_inert_html(response.get_data(as_text=True), payload, f"{name} filter")
            assert page.h1.get_text(" ", strip=True).startswith("0 results")
            assert payload in page.select_one(".active-filters").get_text()
            response = _get(client, f"/api/search?{urlencode({'q': 'skin', name: payload})}")
            assert response.status_code == 200 and assert_safe_json(response, "api")["total"] == 0


def test_query_is_echoed_only_as_text(xss_world):
    """The search box and the heading show the query literally (a template would show 49 for {{7*7}})."""
    app, _ = xss_world
    with app.test_client() as client:
        for payload in ("{{7*7}}", "<script>alert(1)</script>", "\" autofocus onfocus=\"alert(1)\" x=\""):
            page = BeautifulSoup(_get(client, f"/search?{urlencode({'q': payload})}").get_data(as_text=True),
                                 "html.parser")
            assert page.select_one("#q")["value"] == payload
            assert f"“{payload}”" in page.h1.get_text()
            assert "49" not in page.h1.get_text()


# -- in the browser ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xss_server(xss_world):
    live = serve_app(xss_world[0])
    yield live
    live.close()


@pytest.fixture(scope="module")
def hooked_browser(browser):
    """The module's Chromium with the alert hook on every new document and CSP bypassed."""
    browser.execute_cdp_cmd("Page.enable", {})
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": XSS_HOOK})
    browser.execute_cdp_cmd("Page.setBypassCSP", {"enabled": True})
    yield browser
    browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    browser.execute_cdp_cmd("Page.setBypassCSP", {"enabled": False})


PAGE_STATE = """
var done = arguments[arguments.length - 1];
setTimeout(function () {  // let load-time handlers (onerror, onfocus, ontoggle, animations) fire first
  var handlers = 0;
  document.querySelectorAll('*').forEach(function (e) {
    for (var i = 0; i < e.attributes.length; i++) { if (/^on/i.test(e.attributes[i].name)) handlers++; }
  });
  var bad = [];
  Array.prototype.forEach.call(document.querySelectorAll('a[href], area[href], form[action], [formaction]'),
    function (e) { var u = new URL(e.href || e.action || e.getAttribute('formaction'), location.href);
                   if (u.protocol !== 'http:' && u.protocol !== 'https:') bad.push(e.outerHTML.slice(0, 80)); });
  done({xss: window.__xss === undefined ? null : window.__xss, hooked: String(window.alert).indexOf('__xss') >= 0,
        inline: document.querySelectorAll('script:not([src]), iframe, object, embed, svg, math').length,
        handlers: handlers, bad: bad, h1: (document.querySelector('h1') || {}).textContent || ''});
}, 60);
"""


def page_state(driver: Any, url: str) -> dict[str, Any]:
    driver.get(url)
    state = driver.execute_async_script(PAGE_STATE)
    assert state["hooked"], f"the alert hook is not installed on {url}"
    return state


@pytest.mark.browser
def test_alert_hook_detects_real_script(hooked_browser, source_site):
    """Guard against a vacuous pass: a page that really calls alert() is counted."""
    state = page_state(hooked_browser, source_site.url + "/canary")
    assert state["xss"] == 1


@pytest.mark.browser
def test_csp_would_also_block_injected_handlers(hooked_browser, xss_server):
    """With CSP bypassed an injected handler runs (so the payload checks test escaping); with kb's CSP it cannot."""
    inject = ("document.body.insertAdjacentHTML('beforeend', '<img src=\"/nope.png\" onerror=\"alert(1)\">');"
              "var done = arguments[0]; setTimeout(function () { done(window.__xss || 0); }, 300);")
    hooked_browser.get(xss_server.url + "/")
    assert hooked_browser.execute_async_script(inject) == 1
    hooked_browser.execute_cdp_cmd("Page.setBypassCSP", {"enabled": False})
    try:
        hooked_browser.get(xss_server.url + "/")
        assert hooked_browser.execute_async_script(inject) == 0
    finally:
        hooked_browser.execute_cdp_cmd("Page.setBypassCSP", {"enabled": True})


@pytest.mark.browser
@pytest.mark.parametrize("n", range(len(PAYLOADS)), ids=[f"p{n:02d}" for n in range(len(PAYLOADS))])
def test_payload_never_runs_in_the_browser(hooked_browser, xss_server, xss_world, n):
    payload, article, code = PAYLOADS[n], xss_world[1][n], code_word(n)
    base = xss_server.url
    pages = {
        "query": f"{base}/search?{urlencode({'q': payload})}",
        "results": f"{base}/search?{urlencode({'q': code, 'tag': code})}",
        "article": f"{base}/article/{article.id}",
    }
    for label, url in pages.items():
        state = page_state(hooked_browser, url)
        assert state["xss"] is None, f"{label} page ran injected script {state['xss']} time(s): {url}"
        assert (state["inline"], state["handlers"], state["bad"]) == (0, 0, []), f"{label}: {state}"
        if label == "article":
            assert state["h1"] == article.title  # shown as text, exactly as crawled
        if label == "results":
            titles = hooked_browser.execute_script("return Array.prototype.map.call(document.querySelectorAll("
                                                   "'.result-title'), function (a) { return a.textContent; })")
            assert titles == [article.title]


@pytest.mark.browser
def test_suggestions_show_hostile_titles_as_text(hooked_browser, xss_server, xss_world):
    """kb.js renders suggestions with textContent: typing a prefix lists payload titles, none runs."""
    from selenium.webdriver.common.by import By

    articles = xss_world[1]
    hooked_browser.get(xss_server.url + "/")
    box = hooked_browser.find_element(By.ID, "q")
    box.send_keys("xqa")
    wait_for(hooked_browser, lambda d: box.get_dom_attribute("aria-expanded") == "true", "suggestions for xqa")
    options = hooked_browser.execute_script(
        "var l = document.getElementById('q-suggestions');"
        "return {texts: Array.prototype.map.call(l.children, function (o) { return o.textContent; }),"
        " tags: Array.prototype.map.call(l.querySelectorAll('*'), function (o) { return o.tagName; }),"
        " xss: window.__xss === undefined ? null : window.__xss};")
    assert options["xss"] is None
    assert set(options["tags"]) == {"LI"}
    titles = {a.title for a in articles}
    assert options["texts"] and set(options["texts"]) <= titles
