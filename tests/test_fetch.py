"""The polite client: robots.txt, per-host delay, retries, Retry-After, size and time limits, redirects,
conditional GET and charset sniffing — against the real fixture server and, for exact timing, MockTransport."""

from __future__ import annotations

import codecs
import gzip
import socket
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import httpx
import pytest

from kb import config
from kb.errors import BlockedByRobots, FetchError, SkipPage
from kb.fetch import Fetcher, RobotsUnavailable, looks_binary, robot_token
from tests.fixture_site import FixtureSite, install_edge_cases


def make_settings(tmp_path, **overrides) -> dict:
    base = {"DATA_DIR": str(tmp_path), "CRAWL_DELAY": 0.0, "TIMEOUT": 2.0, "RETRIES": 0, "RETRY_BACKOFF": 0.05}
    return config.load(base | overrides, environ={})


class FakeClock:
    """A monotonic clock that only moves when the fetcher sleeps, so delays are measured exactly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def mock_fetcher(tmp_path, handler: Callable[[httpx.Request], httpx.Response], clock: FakeClock | None = None,
                 **overrides) -> Fetcher:
    clock = clock or FakeClock()
    return Fetcher(make_settings(tmp_path, **overrides), transport=httpx.MockTransport(handler),
                   sleep=clock.sleep, clock=clock)


def html(body: str = "<p>hello</p>", status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/html; charset=utf-8", **headers},
                          content=f"<html><body>{body}</body></html>".encode())


def robots_then(robots: str | httpx.Response, page: Callable[[httpx.Request], httpx.Response] | None = None,
                log: list[str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if log is not None:
            log.append(request.url.path)
        if request.url.path == "/robots.txt":
            return robots if isinstance(robots, httpx.Response) else httpx.Response(200, text=robots)
        return page(request) if page else html()
    return handler


# -- robots.txt ----------------------------------------------------------------------------------------------

def test_user_agent_sent_and_robots_read_once(site: FixtureSite, tmp_path) -> None:
    settings = make_settings(tmp_path)
    with Fetcher(settings) as fetcher:
        page = fetcher.fetch(site.abs("/vbeam/"))
        fetcher.fetch(site.abs("/sebaceous-glands/"))
        with pytest.raises(BlockedByRobots, match="robots.txt disallows"):
            fetcher.fetch(site.abs("/private/secret-notes/"))
    assert page.status == 200 and b"VBeam" in page.content and page.content_type == "text/html"
    assert site.paths() == ["/robots.txt", "/vbeam/", "/sebaceous-glands/"]  # robots once; /private/ never
    assert all(r[3]["user-agent"] == settings["USER_AGENT"] for r in site.requests)


def test_robots_wildcards_allow_and_agent_groups(tmp_path) -> None:
    robots = ("User-agent: *\nDisallow: /*.php$\nDisallow: /wp-admin/\nAllow: /wp-admin/admin-ajax.php\n"
              "Disallow: /*?replytocom=\n\nUser-agent: kb\nDisallow: /drafts/\n")
    with mock_fetcher(tmp_path, robots_then(robots)) as fetcher:
        allowed = {path: fetcher.allowed("https://a.org" + path) for path in (
            "/index.php", "/index.php?x=1", "/wp-admin/", "/wp-admin/admin-ajax.php", "/post/?replytocom=3",
            "/drafts/x/", "/post/")}
    # our own group (kb) replaces the * group entirely, as RFC 9309 says
    assert allowed == {"/index.php": True, "/index.php?x=1": True, "/wp-admin/": True,
                       "/wp-admin/admin-ajax.php": True, "/post/?replytocom=3": True, "/drafts/x/": False,
                       "/post/": True}
    with mock_fetcher(tmp_path, robots_then(robots.split("\n\n")[0])) as fetcher:
        assert not fetcher.allowed("https://a.org/index.php")
        assert fetcher.allowed("https://a.org/index.php?x=1")
        assert not fetcher.allowed("https://a.org/wp-admin/")
        assert fetcher.allowed("https://a.org/wp-admin/admin-ajax.php")
        assert not fetcher.allowed("https://a.org/post/?replytocom=3")


def test_robots_404_allows_everything(tmp_path) -> None:
    with mock_fetcher(tmp_path, robots_then(httpx.Response(404))) as fetcher:
        assert fetcher.fetch("https://a.org/anything/").status == 200
        assert fetcher.robots("https://a.org/").reason.startswith("robots.txt answered 404")
        assert fetcher.notes == []


@pytest.mark.parametrize("failure", ["503", "timeout", "429"])
def test_unavailable_robots_blocks_the_host_for_the_crawl(tmp_path, failure: str) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/robots.txt":
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            return httpx.Response(int(failure))
        return html()

    with mock_fetcher(tmp_path, handler, RETRIES=1) as fetcher:
        for _ in range(2):
            with pytest.raises(RobotsUnavailable, match="robots.txt of this host is unavailable") as info:
                fetcher.fetch("https://a.org/page/")
            assert info.value.kind == "robots"
        assert "is unavailable" in fetcher.notes[0] and len(fetcher.notes) == 1
    assert set(calls) == {"/robots.txt"}  # no page was requested
    assert len(calls) == 2  # one retry, then cached for the crawl


def test_obey_robots_off_fetches_disallowed(site: FixtureSite, tmp_path) -> None:
    with Fetcher(make_settings(tmp_path, OBEY_ROBOTS=False)) as fetcher:
        assert fetcher.fetch(site.abs("/private/secret-notes/")).status == 200
    assert "/robots.txt" not in site.paths()


def test_robot_token() -> None:
    assert robot_token("kb/0.1.0 (+https://github.com/kb-search/kb; crawler)") == "kb"
    assert robot_token("DermBot/2 (+x)") == "dermbot"
    assert robot_token("") == "kb"


# -- politeness ---------------------------------------------------------------------------------------------

def test_delay_between_requests_to_the_same_host(site: FixtureSite, tmp_path) -> None:
    with Fetcher(make_settings(tmp_path, CRAWL_DELAY=0.25)) as fetcher:
        for path in ("/vbeam/", "/sebaceous-glands/", "/2024/02/acne-scars/"):
            fetcher.fetch(site.abs(path))
    times = [r[0] for r in site.requests]
    assert len(times) == 4  # robots.txt counts as a request too
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.25


def test_crawl_delay_raises_delay_and_is_capped(tmp_path) -> None:
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("User-agent: *\nCrawl-delay: 3\n"), clock, CRAWL_DELAY=1.0) as fetcher:
        fetcher.fetch("https://a.org/1/")
        fetcher.fetch("https://a.org/2/")
        assert fetcher.delay_for("https://a.org/") == 3.0
        assert fetcher.delay_for("https://b.org/") == 1.0  # per host
    assert clock.sleeps == [3.0, 3.0]  # after robots.txt, between pages
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("User-agent: *\nCrawl-delay: 3600\n"), clock, CRAWL_DELAY=0.5,
                      CRAWL_DELAY_MAX=10.0) as fetcher:
        fetcher.fetch("https://a.org/1/")
        assert "Crawl-delay 3600" in fetcher.notes[0] and "CRAWL_DELAY_MAX" in fetcher.notes[0]
    assert clock.sleeps == [10.0]


def test_source_delay_overrides_setting(tmp_path) -> None:
    clock = FakeClock()
    fetcher = Fetcher(make_settings(tmp_path, CRAWL_DELAY=5.0), delay=0.5,
                      transport=httpx.MockTransport(robots_then("")), sleep=clock.sleep, clock=clock)
    with fetcher:
        fetcher.fetch("https://a.org/1/")
    assert clock.sleeps == [0.5]


# -- retries -------------------------------------------------------------------------------------------------

def test_retry_after_is_honoured(tmp_path) -> None:
    answers = [httpx.Response(429, headers={"retry-after": "4"}), html()]
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("", lambda r: answers.pop(0)), clock, RETRIES=0) as fetcher:
        assert fetcher.fetch("https://a.org/busy/").status == 200
    assert clock.sleeps == [4.0]


def test_retry_after_http_date_and_cap(tmp_path) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    answers = [httpx.Response(503, headers={"retry-after": when}), html()]
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("", lambda r: answers.pop(0)), clock, RETRIES=1,
                      CRAWL_DELAY_MAX=60.0) as fetcher:
        assert fetcher.fetch("https://a.org/x/").status == 200
    assert len(clock.sleeps) == 1 and 25 <= clock.sleeps[0] <= 31
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("", lambda r: httpx.Response(429, headers={"retry-after": "3600"})),
                      clock, CRAWL_DELAY_MAX=30.0) as fetcher:
        with pytest.raises(FetchError, match="asks to wait 3600 s") as info:
            fetcher.fetch("https://a.org/x/")
    assert info.value.kind == "http_429" and info.value.status == 429 and clock.sleeps == []


def test_5xx_retried_with_exponential_backoff(tmp_path) -> None:
    answers = [httpx.Response(503), httpx.Response(502), html()]
    clock = FakeClock()
    with mock_fetcher(tmp_path, robots_then("", lambda r: answers.pop(0)), clock, RETRIES=2,
                      RETRY_BACKOFF=1.0) as fetcher:
        assert fetcher.fetch("https://a.org/x/").status == 200
    assert clock.sleeps == [1.0, 2.0]
    calls: list[str] = []
    with mock_fetcher(tmp_path, robots_then("", lambda r: httpx.Response(500), calls), RETRIES=1) as fetcher:
        with pytest.raises(FetchError, match="HTTP 500") as info:
            fetcher.fetch("https://a.org/x/")
    assert info.value.kind == "http_5xx" and info.value.status == 500
    assert calls.count("/x/") == 2


def test_timeouts_and_network_errors_are_retried(tmp_path) -> None:
    calls: list[str] = []

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    with mock_fetcher(tmp_path, robots_then("", slow, calls), RETRIES=2) as fetcher:
        with pytest.raises(FetchError, match="timeout") as info:
            fetcher.fetch("https://a.org/x/")
    assert info.value.kind == "timeout" and calls.count("/x/") == 3
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Fetcher(make_settings(tmp_path, RETRIES=1, OBEY_ROBOTS=False)) as fetcher:
        with pytest.raises(FetchError, match="network error") as info:
            fetcher.fetch(f"http://127.0.0.1:{port}/")
    assert info.value.kind == "network"


def test_total_time_per_page_is_bounded(tmp_path) -> None:
    clock = FakeClock()

    def drip(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for _ in range(100):
                clock.now += 0.5  # each byte arrives in time for the read timeout, the page never ends
                yield b"<p>x</p>"
        return httpx.Response(200, headers={"content-type": "text/html"}, content=body())

    with mock_fetcher(tmp_path, robots_then("", drip), clock, TIMEOUT=2.0) as fetcher:
        with pytest.raises(FetchError, match="took longer than TIMEOUT = 2 s") as info:
            fetcher.fetch("https://a.org/drip/")
    assert info.value.kind == "timeout"


def test_robots_redirects_are_followed(tmp_path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(301, headers={"location": "/real-robots.txt"})
        if request.url.path == "/real-robots.txt":
            return httpx.Response(200, text="User-agent: *\nDisallow: /private/\n")
        return html()

    with mock_fetcher(tmp_path, handler) as fetcher:
        assert not fetcher.allowed("https://a.org/private/x") and fetcher.allowed("https://a.org/public/")

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/robots.txt"})

    with mock_fetcher(tmp_path, loop) as fetcher:  # RFC 9309: a robots.txt that goes nowhere allows all
        assert fetcher.allowed("https://a.org/private/x") and fetcher.notes == []


def test_404_and_other_statuses(tmp_path) -> None:
    statuses = {"/gone/": 404, "/removed/": 410, "/forbidden/": 403}
    handler = robots_then("", lambda r: httpx.Response(statuses[r.url.path]))
    with mock_fetcher(tmp_path, handler) as fetcher:
        kinds = {}
        for path in statuses:
            with pytest.raises(FetchError) as info:
                fetcher.fetch("https://a.org" + path)
            kinds[path] = (info.value.kind, info.value.status)
    assert kinds == {"/gone/": ("http_404", 404), "/removed/": ("http_410", 410), "/forbidden/": ("http_4xx", 403)}


# -- limits on the real server ----------------------------------------------------------------------------

def test_slow_page_times_out(site: FixtureSite, tmp_path) -> None:
    install_edge_cases(site)
    started = time.monotonic()
    with Fetcher(make_settings(tmp_path, TIMEOUT=0.5)) as fetcher:
        with pytest.raises(FetchError, match="TIMEOUT = 0.5 s") as info:
            fetcher.fetch(site.abs("/slow/"))
    assert info.value.kind == "timeout" and time.monotonic() - started < 2


@pytest.mark.parametrize("path", ["/huge/", "/huge-declared/"])
def test_huge_page_aborted_while_streaming(site: FixtureSite, tmp_path, path: str) -> None:
    install_edge_cases(site)
    started = time.monotonic()
    with Fetcher(make_settings(tmp_path, MAX_PAGE_BYTES=1_000_000)) as fetcher:
        with pytest.raises(FetchError, match="too large") as info:
            fetcher.fetch(site.abs(path))
    assert info.value.kind == "too_large"
    assert time.monotonic() - started < 3
    time.sleep(0.2)  # let the server notice the hang-up
    assert site.bytes_sent[path] < 10_000_000  # the 50 MB were never all sent, let alone read


def test_decompressed_size_is_limited(tmp_path) -> None:
    bomb = gzip.compress(b"<html>" + b" " * 5_000_000)
    response = httpx.Response(200, headers={"content-type": "text/html", "content-encoding": "gzip"}, content=bomb)
    with mock_fetcher(tmp_path, robots_then("", lambda r: response), MAX_PAGE_BYTES=1_000_000) as fetcher:
        with pytest.raises(FetchError, match="too large"):
            fetcher.fetch("https://a.org/zip/")
    small = gzip.compress(b"<html><body><p>compressed</p></body></html>")
    response2 = httpx.Response(200, headers={"content-type": "text/html", "content-encoding": "gzip"}, content=small)
    with mock_fetcher(tmp_path, robots_then("", lambda r: response2)) as fetcher:
        assert b"compressed" in fetcher.fetch("https://a.org/zip/").content


def test_non_html_and_binary_are_skipped(site: FixtureSite, tmp_path) -> None:
    install_edge_cases(site)
    with Fetcher(make_settings(tmp_path)) as fetcher:
        with pytest.raises(SkipPage, match="application/pdf") as info:
            fetcher.fetch(site.abs("/download/"))
        assert info.value.kind == "not_html"
        with pytest.raises(SkipPage, match="binary content served as text/html") as info:
            fetcher.fetch(site.abs("/binary/"))
        assert info.value.kind == "binary"
        sitemap = fetcher.fetch(site.abs("/post-sitemap.xml"), html_only=False)
        assert sitemap.content.startswith(b"<?xml")


# -- conditional GET and redirects ---------------------------------------------------------------------------

def test_conditional_get(site: FixtureSite, tmp_path) -> None:
    with Fetcher(make_settings(tmp_path)) as fetcher:
        first = fetcher.fetch(site.abs("/vbeam/"))
        assert first.etag and first.last_modified and not first.not_modified
        again = fetcher.fetch(site.abs("/vbeam/"), etag=first.etag, last_modified=first.last_modified)
        by_date = fetcher.fetch(site.abs("/vbeam/"), last_modified=first.last_modified)
        site.set("/vbeam/", "<html><body><p>new text</p></body></html>")
        changed = fetcher.fetch(site.abs("/vbeam/"), etag=first.etag, last_modified=first.last_modified)
    assert again.not_modified and again.status == 304 and again.content == b""
    assert by_date.not_modified
    assert not changed.not_modified and b"new text" in changed.content
    headers = [r[3] for r in site.hits("/vbeam/")]
    assert "if-none-match" not in headers[0]
    assert headers[1]["if-none-match"] == first.etag and headers[1]["if-modified-since"] == first.last_modified
    assert headers[2]["if-modified-since"] == first.last_modified


def test_redirect_chain_followed_hop_by_hop(site: FixtureSite, tmp_path) -> None:
    install_edge_cases(site)
    with Fetcher(make_settings(tmp_path, CRAWL_DELAY=0.1)) as fetcher:
        page = fetcher.fetch(site.abs("/old-vbeam/"))
    assert page.url == site.abs("/vbeam/") and page.requested_url == site.abs("/old-vbeam/")
    assert page.redirects == [site.abs("/vbeam-moved/"), site.abs("/vbeam/")]
    times = [r[0] for r in site.requests]
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.1  # every hop waits its turn


def test_redirect_loop_limit_scope_and_robots(site: FixtureSite, tmp_path) -> None:
    install_edge_cases(site)
    site.set("/to-private/", "", status=301, headers={"Location": "/private/secret-notes/"})
    with Fetcher(make_settings(tmp_path)) as fetcher:
        with pytest.raises(FetchError, match="redirect loop") as info:
            fetcher.fetch(site.abs("/loop-a/"))
        assert info.value.kind == "redirect_loop"
        with pytest.raises(SkipPage, match="redirects out of scope") as info:
            fetcher.fetch(site.abs("/offsite-redirect/"))
        assert info.value.kind == "redirect_out_of_scope"
        with pytest.raises(BlockedByRobots):
            fetcher.fetch(site.abs("/to-private/"))
        with pytest.raises(SkipPage, match="out of scope"):
            fetcher.fetch(site.abs("/vbeam/"), scope=lambda u: "/vbeam/" not in u)
    assert "/private/secret-notes/" not in site.paths()
    assert site.other is not None and site.other.requests == []


def test_too_many_redirects(tmp_path) -> None:
    def chain(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.strip("/") or 0)
        return httpx.Response(302, headers={"location": f"/{n + 1}"})

    with mock_fetcher(tmp_path, robots_then("", chain), MAX_REDIRECTS=3) as fetcher:
        with pytest.raises(FetchError, match="MAX_REDIRECTS = 3") as info:
            fetcher.fetch("https://a.org/0")
    assert info.value.kind == "too_many_redirects"


# -- binary sniffing ----------------------------------------------------------------------------

def test_looks_binary() -> None:
    assert looks_binary(b"%PDF\x00\x01\x02")
    assert looks_binary(bytes(range(1, 32)) * 10)
    assert not looks_binary("<html><body>caf\u00e9\ttab\r\n</body></html>".encode())
    assert not looks_binary(codecs.BOM_UTF16_LE + "<html>".encode("utf-16-le"))
    assert not looks_binary(b"")
