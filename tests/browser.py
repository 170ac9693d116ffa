"""Fixtures for the real-browser tests: headless Chromium, kb served by waitress, a local "original" site.

Everything the browser sees is real: a Store filled with articles, a Whoosh index built by
`kb.index.rebuild`, the Flask app served by waitress on 127.0.0.1, and the articles' source
URLs pointing at a second tiny HTTP server, so following a source link really leaves kb and
lands on the original page (with its #anchor). Chromium and ChromeDriver come from Debian
(/usr/bin); when they are missing the tests FAIL with the command that installs them, they
never skip, because a silently skipped browser suite looks exactly like a passing one.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kb.models import Article, Section

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE_JS = REPO / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
WAIT = 10.0  # seconds any single browser condition may take before the test fails

CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--disable-features=Translate,MediaRouter,OptimizationHints", "--password-store=basic",
)

# Installed before any page script of every document: counts calls so injected code is detected.
XSS_HOOK = ("window.__xss = undefined; window.alert = window.confirm = window.prompt = "
            "function () { window.__xss = (window.__xss || 0) + 1; };")


# -- prerequisites: fail loudly, never skip -------------------------------------------------------------------

def require_chromium() -> None:
    """Fail (not skip) with the install command when Debian's Chromium or ChromeDriver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(
            f"Browser tests need Debian's Chromium and ChromeDriver; missing: {', '.join(missing)}. "
            "Install them with `sudo apt-get install chromium chromium-driver` (or `make system-deps`).",
            pytrace=False,
        )


def axe_source() -> str:
    """The axe-core script from node_modules (pinned in package-lock.json); fail clearly when absent."""
    if not AXE_JS.is_file():
        pytest.fail(
            f"axe-core is not installed ({AXE_JS} is missing). Run `npm ci` in {REPO} "
            "(or `make install-test`), which installs the version pinned in package-lock.json.",
            pytrace=False,
        )
    return AXE_JS.read_text("utf-8")


# -- Chromium ------------------------------------------------------------------------------------------------

def make_driver(user_data_dir: Path, *, javascript: bool = True, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium driven through Debian's chromedriver; Selenium Manager never downloads anything."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={user_data_dir}")
    if not javascript:
        options.add_argument("--blink-settings=scriptEnabled=false")
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    # An explicit driver path makes Selenium skip Selenium Manager; SE_OFFLINE forbids downloads if it ever ran.
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:  # a broken install should say what broke, not only a WebDriver stack
        pytest.fail(f"Could not start headless Chromium ({CHROMIUM}) with {CHROMEDRIVER}: {exc}. "
                    "Check that chromium and chromium-driver are the same version (`apt-get install "
                    "chromium chromium-driver`).", pytrace=False)
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def set_viewport(driver: Any, width: int, height: int = 900, *, mobile: bool | None = None) -> None:
    """Emulate an exact CSS viewport (window sizes include browser chrome); narrow widths act as phones."""
    mobile = width < 768 if mobile is None else mobile
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
    })


def reset_viewport(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def set_color_scheme(driver: Any, scheme: str | None) -> None:
    """Emulate prefers-color-scheme ("light", "dark"), or None to stop emulating."""
    features = [{"name": "prefers-color-scheme", "value": scheme}] if scheme else []
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


def screenshot(driver: Any, path: Path) -> Path:
    """Save a full-page PNG (not only the viewport) at the current viewport width."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    width = max(size["width"], driver.execute_script("return window.innerWidth"))  # include the scrollbar
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1},
    })
    path.write_bytes(base64.b64decode(data["data"]))
    return path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def wait_for(driver: Any, condition: Callable[[Any], Any], message: str, timeout: float = WAIT) -> Any:
    """Wait until `condition(driver)` is truthy; fail with `message` (what was expected) otherwise."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"Timed out after {timeout:.0f}s waiting for: {message} (at {driver.current_url})")


def run_axe(driver: Any, source: str) -> list[dict[str, Any]]:
    """Inject axe-core into the current page and return its violations."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(source)
    result = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        "  .then(function (r) { done({ok: true, violations: r.violations}); })"
        "  .catch(function (e) { done({ok: false, error: String(e)}); });"
    )
    if not result.get("ok"):
        pytest.fail(f"axe.run failed on {driver.current_url}: {result.get('error')}")
    return result["violations"]


def format_violations(violations: list[dict[str, Any]]) -> str:
    """axe violations as text a person can act on: rule, impact, what to fix, and where."""
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v['help']}  [{v.get('helpUrl', '')}]")
        for node in v.get("nodes", [])[:8]:
            target = " ".join(str(t) for t in node.get("target", []))
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    at {target}: {node.get('html', '')[:160]}")
            if summary:
                lines.append(f"       {summary[:300]}")
        if len(v.get("nodes", [])) > 8:
            lines.append(f"    ... and {len(v['nodes']) - 8} more elements")
    return "\n".join(lines)


# -- the "original" web site the articles came from -------------------------------------------------------------

@dataclass
class SourceSite:
    """A tiny HTTP server on 127.0.0.1 serving the original pages; records the paths browsers asked for."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    pages: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _SourceHandler(BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        site: SourceSite = self.server.site
        path = self.path.split("#", 1)[0]
        site.requests.append(path)
        body = site.pages.get(path.split("?", 1)[0])
        status = 200 if body is not None else 404
        data = (body if body is not None else "<!doctype html><title>Not found</title><h1>Not found</h1>").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve_source_site(pages: dict[str, str] | None = None) -> SourceSite:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SourceHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="kb-source-site", daemon=True)
    site = SourceSite(server, thread, dict(pages or {}))
    server.site = site  # type: ignore[attr-defined]
    thread.start()
    return site


def original_page(article: Article) -> str:
    """The original page of `article`: tall sections with the same anchors, so #anchor scrolling is visible."""
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(article.title)}"
             f"</title></head><body><h1 id=\"top\">{html.escape(article.title)}</h1>"]
    for section in article.sections:
        parts.append(f"<h2 id=\"{html.escape(section.anchor)}\">{html.escape(section.heading)}</h2>"
                     f"<p>{html.escape(section.text)}</p><div style=\"height: 1600px\"></div>")
    parts.append("</body></html>")
    return "".join(parts)


# -- kb served by waitress --------------------------------------------------------------------------------------

@dataclass
class LiveServer:
    """kb's WSGI app behind a real waitress server in a daemon thread."""

    app: Any
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.effective_port}"

    def close(self) -> None:
        """Stop the loop from inside its own thread (closing every channel empties the map), then the workers."""

        def stop() -> None:
            for channel in list(self.server._map.values()):
                channel.close()

        try:
            self.server.trigger.pull_trigger(stop)
        except OSError:
            stop()
        self.thread.join(10)
        self.server.task_dispatcher.shutdown(timeout=5)


def serve_app(app: Any) -> LiveServer:
    """Serve `app` on 127.0.0.1 with an OS-chosen port (waitress.create_server(..., port=0))."""
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4, ident="kb-test",
                                    channel_timeout=30, clear_untrusted_proxy_headers=True)
    thread = threading.Thread(target=server.run, name="kb-waitress", daemon=True)
    thread.start()
    return LiveServer(app, server, thread)


def build_data_dir(data_dir: Path, articles: list[Article]) -> list[Article]:
    """Store `articles` (assigning their ids) and build the Whoosh index, as `kb crawl` + `kb reindex` would."""
    from kb import index
    from kb.config import data_paths
    from kb.store import open_store

    paths = data_paths(data_dir)
    with open_store(paths["store"]) as store:
        for article in articles:
            store.save_article(article, source="test")
        count = index.rebuild(store, paths["index"])
    assert count == len(articles), f"indexed {count} of {len(articles)} articles"
    return articles


def make_kb_app(data_dir: Path) -> Any:
    from kb.web import create_app

    return create_app({"DATA_DIR": str(data_dir), "QUERY_LOG": False, "CRAWL_DELAY": 0.0})


def close_app(app: Any) -> None:
    app.extensions["kb"].close()


# -- the browsing world: ~25 real-looking articles -----------------------------------------------------------

# (title, category, tags, extra treatment words)
WORLD_TOPICS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("Acne vulgaris overview", "Acne", ("comedones", "teenagers"), "Most mild acne improves with topical care."),
    ("Acne scars and laser treatment", "Acne", ("laser", "scars"),
     "Fractional laser, microneedling and dermabrasion remodel scar tissue."),
    ("Isotretinoin for severe acne", "Acne", ("isotretinoin", "retinoids"),
     "Isotretinoin needs pregnancy prevention and blood tests."),
    ("Topical retinoids for acne", "Acne", ("retinoids",), "Adapalene and tretinoin are applied at night."),
    ("Benzoyl peroxide basics", "Acne", ("benzoyl peroxide",), "Benzoyl peroxide can bleach fabrics."),
    ("Hormonal acne in adults", "Acne", ("hormones",), "Combined pills or spironolactone may help."),
    ("Acne in teenagers", "Acne", ("teenagers",), "Gentle cleansing twice a day is enough."),
    ("Diet and acne", "Acne", ("diet",), "High glycaemic foods may worsen acne in some people."),
    ("Blackheads and whiteheads", "Acne", ("comedones",), "Salicylic acid unclogs pores."),
    ("Acne and sunscreen", "Acne", ("sun protection",), "Choose non-comedogenic sunscreen."),
    ("Azelaic acid for acne", "Acne", ("azelaic acid",), "Azelaic acid also fades marks."),
    ("Chemical peels for acne", "Acne", ("peels",), "Glycolic and salicylic peels are repeated monthly."),
    ("Back acne", "Acne", ("body acne",), "Loose clothing and showering after sport help."),
    ("Rosacea triggers", "Rosacea", ("redness", "triggers"), "Heat, alcohol and spicy food are common triggers."),
    ("Rosacea and pulsed dye laser", "Rosacea", ("laser", "redness"), "VBeam pulsed dye laser reduces redness."),
    ("Ocular rosacea", "Rosacea", ("eyes",), "Warm compresses and lid hygiene help the eyes."),
    ("Rosacea skincare routine", "Rosacea", ("skincare",), "Fragrance-free moisturiser and sunscreen."),
    ("Atopic eczema in children", "Eczema", ("children", "moisturiser"), "Emollients every day, steroids for flares."),
    ("Hand eczema at work", "Eczema", ("work", "gloves"), "Cotton-lined gloves protect the hands."),
    ("Eczema flare treatment", "Eczema", ("steroids",), "Topical steroids calm a flare within days."),
    ("Eczema and moisturisers", "Eczema", ("moisturiser",), "Ointments keep water in the skin longest."),
    ("Plaque psoriasis", "Psoriasis", ("plaques",), "Vitamin D creams and phototherapy."),
    ("Scalp psoriasis", "Psoriasis", ("scalp",), "Medicated shampoos with coal tar."),
    ("Psoriasis biologics", "Psoriasis", ("biologics",), "Biologic injections target the immune response."),
    ("Melanoma warning signs", "Skin cancer", ("moles", "sun protection"), "Check moles with the ABCDE rule."),
    ("Dermatopathologyimmunohistochemistrysupercalifragilisticexpialidociousneurofibromatosis"
     "keratoacanthomaxerodermapigmentosum explained", "Skin cancer", ("long words",),
     "A page whose title and address are one very long unbroken word, as crawled pages sometimes are."),
)


def world_articles(base_url: str) -> list[Article]:
    """Articles whose source URLs point at the local "original" site; distinct dates for date sorting."""
    articles = []
    for n, (title, category, tags, treatment) in enumerate(WORLD_TOPICS):
        slug = "-".join(title.lower().split())[:40] if n < len(WORLD_TOPICS) - 1 else (
            "dermatopathology" + "x" * 160 + "-unbroken-address")
        word = title.split()[0].lower()
        sections = [
            Section("Symptoms", "symptoms", f"Signs of {word} on the skin vary from person to person."),
            Section("Causes", "causes", f"The causes of {word} include genes and the environment of the skin."),
            Section("Treatment", "treatment", f"{treatment} Ask a dermatologist about treatment of the skin."),
        ]
        lead = f"{title}: what it is and how it affects the skin."
        text = "\n\n".join([lead] + [f"{s.heading}\n{s.text}" for s in sections])
        published = f"{2016 + n % 9}-{(n * 5) % 12 + 1:02d}-{(n * 7) % 27 + 1:02d}"
        articles.append(Article(
            url=f"{base_url}/conditions/{slug}", title=title, text=text, sections=sections,
            description=lead, published=published, modified=None, categories=[category], tags=list(tags),
            site="derm-original.test", lang="en",
            disclaimer=title.startswith("Isotretinoin"),  # the article page's disclaimer note is checked by axe too
        ))
    dates = [a.published for a in articles]
    assert len(set(dates)) == len(dates), "world articles need distinct dates to test date sorting"
    return articles


@dataclass
class World:
    """kb live on 127.0.0.1 over `articles`, whose originals live on `source`."""

    live: LiveServer
    source: SourceSite
    articles: list[Article]
    data_dir: Path

    @property
    def url(self) -> str:
        return self.live.url

    def article(self, title: str) -> Article:
        return next(a for a in self.articles if a.title == title)


@pytest.fixture(scope="session")
def source_site() -> Iterator[SourceSite]:
    """The "original" web site; a /canary page runs a real alert() to prove the XSS hook works."""
    site = serve_source_site({"/canary": "<!doctype html><title>canary</title><script>alert('canary')</script>"})
    yield site
    site.close()


@pytest.fixture(scope="session")
def kb_world(tmp_path_factory: pytest.TempPathFactory, source_site: SourceSite) -> Iterator[World]:
    """A data dir with a real store + index of ~25 articles, served by waitress for the whole session."""
    data_dir = tmp_path_factory.mktemp("browser-world")
    articles = build_data_dir(data_dir, world_articles(source_site.url))
    for article in articles:
        source_site.pages["/" + article.url.split("/", 3)[3]] = original_page(article)
    app = make_kb_app(data_dir)
    live = serve_app(app)
    yield World(live, source_site, articles, data_dir)
    live.close()
    close_app(app)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium with JavaScript per test module (starting one costs about a second)."""
    driver = make_driver(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def browser_nojs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second Chromium with JavaScript disabled: the site must work without kb.js."""
    driver = make_driver(tmp_path_factory.mktemp("chromium-nojs-profile"), javascript=False)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def axe_js() -> str:
    return axe_source()
