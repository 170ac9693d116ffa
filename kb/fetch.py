"""The only module that touches the network: a polite HTTP client for one crawl.

Politeness is not optional here (after Scrapy's ROBOTSTXT_OBEY / DOWNLOAD_DELAY): every request,
including each redirect hop and every retry, goes through robots.txt and the per-host delay.
Failures become documented exceptions (`SkipPage`, `BlockedByRobots`, `FetchError` with a `kind`)
so one bad page is recorded and the crawl goes on.

Bounded in memory and time (DESIGN: "decode, parse and import with bounded memory and time"): bodies are
read raw and their content codings undone here, a slice at a time, so a compression bomb never unpacks
past the size limit; and one page gets TIMEOUT seconds in all (every socket wait of every request, retry
wait and redirect hop), enforced at the socket by a network backend, so a drip-fed page ends on time.
"""

from __future__ import annotations

import codecs
import email.utils
import io
import logging
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from protego import Protego

from kb.clock import utc_iso
from kb.errors import BlockedByRobots, FetchError, SkipPage
from kb.models import Page

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
ROBOTS_MAX_BYTES = 512_000  # RFC 9309: parse at least 500 KiB, ignore the rest
PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate"  # exactly the codings _unpack undoes (httpx would add br/zstd when installed)
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
MAX_CODINGS = 3  # stacked codings undone; each keeps a zlib window (32 KiB) and one slice, so memory stays small
_SLICE = 64 * 1024  # bytes a decompressor may produce per call: the most a bomb unpacks at once


class RobotsUnavailable(BlockedByRobots):
    """robots.txt could not be read (5xx, timeout): the host is treated as disallowed for this crawl."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url)
        self.message = f"robots.txt of this host is unavailable ({reason}), so nothing there is fetched: {url}"
        self.args = (self.message,)


@dataclass
class RobotsRules:
    """What robots.txt of one origin allows; `deny_all` when it could not be read."""

    parser: Protego | None = None
    deny_all: bool = False
    reason: str = ""  # why the rules are what they are ("404: allow all", "503: disallow all", ...)
    sitemaps: list[str] = field(default_factory=list)
    crawl_delay: float | None = None


def robot_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched against ("kb" for "kb/0.1 (+https://...)")."""
    token = re.split(r"[/\s;(]", user_agent.strip(), maxsplit=1)[0]
    return token.lower() or "kb"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _host(url: str) -> str:
    return (urlsplit(url).netloc or "").lower()


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a Retry-After header (delta seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


# -- content sniffing --------------------------------------------------------------------------------------

_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def looks_binary(content: bytes) -> bool:
    """Whether a body served as HTML is really binary (NUL bytes or many control characters)."""
    sample = content[:8192]
    if not sample or any(sample.startswith(bom) for bom, _ in _BOMS):
        return False
    if b"\x00" in sample:
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL))
    return controls / len(sample) > 0.05


# -- content codings, undone a slice at a time ------------------------------------------------------------

def content_codings(header: str) -> list[str]:
    """The codings of a Content-Encoding header in the order to undo them; FetchError for what kb cannot undo."""
    names = [name.strip().lower() for name in header.split(",")]
    names = [name for name in names if name and name != "identity"]
    unknown = sorted({name for name in names if name not in _WBITS})
    if unknown:
        raise FetchError(f"the response uses Content-Encoding {', '.join(unknown)}, which kb cannot decode "
                         f"(it asks for {ACCEPT_ENCODING} only)", kind="decoding")
    if len(names) > MAX_CODINGS:
        raise FetchError(f"the response is compressed {len(names)} times over (Content-Encoding "
                         f"{', '.join(names[:MAX_CODINGS + 1])}, ...); kb undoes at most {MAX_CODINGS} codings",
                         kind="decoding")
    return names[::-1]  # the last coding listed was applied last, so it comes off first


def _decompressor(coding: str, head: bytes) -> Any:
    """A zlib decompressor for `coding`; deflate comes zlib-wrapped or raw, told apart by its first two bytes."""
    if coding == "deflate":
        try:
            zlib.decompressobj().decompress(head[:2])  # zlib checks the two header bytes at once
        except zlib.error:
            return zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as many servers send it
    return zlib.decompressobj(_WBITS[coding])


def _unpack(pieces: Iterable[bytes], coding: str, tick: Callable[[], None]) -> Iterator[bytes]:
    """Undo one coding at most _SLICE bytes per step, so a bomb never unpacks whole; stops at end of stream."""
    decoder = None
    head = b""
    for data in pieces:
        if decoder is None:
            head += data
            if len(head) < 2:
                continue
            decoder, data = _decompressor(coding, head), head
        while True:  # output short of a full slice means the input is used up
            tick()
            out = decoder.decompress(data, _SLICE)
            if out:
                yield out
            if decoder.eof:
                return  # bytes after the end of the stream are ignored, as httpx does
            data = decoder.unconsumed_tail
            if not data and len(out) < _SLICE:
                break


def _decoded(raw: Iterable[bytes], codings: list[str], tick: Callable[[], None]) -> Iterator[bytes]:
    """The body with every coding undone, slice by slice; zlib errors become FetchError(kind="decoding")."""
    stream: Iterable[bytes] = raw
    for coding in codings:
        stream = _unpack(stream, coding, tick)
    try:
        yield from stream
    except zlib.error as exc:
        raise FetchError(f"the response could not be decompressed (Content-Encoding {', '.join(codings[::-1])}: "
                         f"{exc})", kind="decoding") from None


# -- one time budget per page, enforced at the socket -------------------------------------------------------

@dataclass
class _Budget:
    """TIMEOUT seconds for one page: all its requests, redirect hops and the waits before its own retries."""

    seconds: float
    clock: Callable[[], float]
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.seconds

    def left(self) -> float:
        return self.deadline - self.clock()

    def excuse(self, seconds: float) -> None:
        """Waiting for our turn at the host is the crawl's pace, not this page's slowness: not charged."""
        self.deadline += seconds

    def charge(self, seconds: float) -> None:
        """A wait this page asked for (backoff, Retry-After) is charged, whenever it is slept."""
        self.deadline -= seconds


class _BudgetStream(httpcore.NetworkStream):
    """A socket stream whose every wait ends by the current page's deadline, however the bytes trickle in."""

    def __init__(self, stream: httpcore.NetworkStream, backend: "_BudgetBackend") -> None:
        self._stream = stream
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        timeout = self._backend.clamp(timeout, httpcore.ConnectTimeout)
        return _BudgetStream(self._stream.start_tls(ssl_context, server_hostname, timeout), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BudgetBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with each timeout cut to what is left of the page's budget."""

    def __init__(self, current: Callable[[], _Budget | None]) -> None:
        self._current = current
        self._backend = httpcore.SyncBackend()

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """The socket timeout for one wait: at most what is left of the page's TIMEOUT."""
        budget = self._current()
        if budget is None:
            return timeout
        left = budget.left()
        if left <= 0:
            raise error("the time budget of this page (TIMEOUT) is spent")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        timeout = self.clamp(timeout, httpcore.ConnectTimeout)
        return _BudgetStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options), self)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        timeout = self.clamp(timeout, httpcore.ConnectTimeout)
        return _BudgetStream(self._backend.connect_unix_socket(path, timeout, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _BudgetTransport(httpx.HTTPTransport):
    """httpx's own transport (request and error mapping) over a connection pool on the budget backend."""

    def __init__(self, current: Callable[[], _Budget | None]) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is replaced by one with httpx's default limits on ours;
        # should httpx stop reading `_pool`, the header-drip test in tests/test_fetch.py fails
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=5.0, network_backend=_BudgetBackend(current))


# -- the client ----------------------------------------------------------------------------------------------

@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    url: str
    content: bytes | None = None


class Fetcher:
    """An httpx client that obeys robots.txt, spaces requests per host, retries, and caps sizes.

    One Fetcher lives for one crawl: robots.txt is read once per origin and a host whose robots.txt
    is unavailable stays disallowed until the next crawl.
    """

    def __init__(self, settings: Mapping[str, Any], *, delay: float | None = None,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.user_agent: str = settings["USER_AGENT"]
        self.robot_token = robot_token(self.user_agent)
        self.base_delay = float(settings["CRAWL_DELAY"] if delay is None else delay)
        self.max_delay = float(settings["CRAWL_DELAY_MAX"])
        self.timeout = float(settings["TIMEOUT"])
        self.max_bytes = int(settings["MAX_PAGE_BYTES"])
        self.max_redirects = int(settings["MAX_REDIRECTS"])
        self.retries = max(0, int(settings["RETRIES"]))
        self.backoff = float(settings.get("RETRY_BACKOFF", 1.0))
        self.obey_robots = bool(settings["OBEY_ROBOTS"])
        self._sleep = sleep
        self._clock = clock
        self._robots: dict[str, RobotsRules] = {}
        self._last: dict[str, float] = {}  # host -> clock when its last response ended
        self._not_before: dict[str, float] = {}  # host -> earliest next request (Retry-After)
        self.notes: list[str] = []  # problems worth a line in the crawl log (robots.txt unavailable, ...)
        self.requests = 0
        self._budget: _Budget | None = None  # the time budget of the page being fetched
        self.client = httpx.Client(
            headers={"User-Agent": self.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            transport=transport if transport is not None else _BudgetTransport(lambda: self._budget),
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- robots.txt ----------------------------------------------------------------------------------
    def robots(self, url: str) -> RobotsRules:
        """The robots.txt rules for the origin of `url`, fetched once per crawl."""
        origin = _origin(url)
        rules = self._robots.get(origin)
        if rules is None:
            rules = self._robots[origin] = self._load_robots(origin)
        return rules

    def _load_robots(self, origin: str) -> RobotsRules:
        robots_url = origin + "/robots.txt"
        try:
            resp = self._request(robots_url, {"Accept": "text/plain,*/*;q=0.1"}, max_bytes=ROBOTS_MAX_BYTES,
                                 truncate=True, robots_redirects=True)
        except FetchError as exc:
            if exc.status is not None and 300 <= exc.status < 500 and exc.status != 429:
                # RFC 9309: a missing robots.txt (4xx, or a redirect chain that goes nowhere) allows everything
                return RobotsRules(reason=f"robots.txt answered {exc.status}: everything allowed")
            reason = exc.message
            self.notes.append(f"{robots_url} is unavailable ({reason}); nothing on {origin} is fetched this crawl.")
            log.warning("robots.txt unavailable: %s (%s)", robots_url, reason)
            return RobotsRules(deny_all=True, reason=reason)
        text = (resp.content or b"").decode("utf-8", errors="replace")
        parser = Protego.parse(text)
        delay = parser.crawl_delay(self.robot_token)
        rules = RobotsRules(parser=parser, reason="robots.txt read", sitemaps=list(parser.sitemaps),
                            crawl_delay=float(delay) if delay is not None else None)
        if rules.crawl_delay and rules.crawl_delay > self.max_delay:
            self.notes.append(f"{robots_url} asks for Crawl-delay {rules.crawl_delay:g} s; "
                              f"using CRAWL_DELAY_MAX = {self.max_delay:g} s.")
        return rules

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets us fetch `url` (always True when OBEY_ROBOTS is off)."""
        if not self.obey_robots:
            return True
        rules = self.robots(url)
        if rules.deny_all:
            return False
        return rules.parser is None or rules.parser.can_fetch(url, self.robot_token)

    def check_robots(self, url: str) -> None:
        """Raise BlockedByRobots (or RobotsUnavailable) when robots.txt forbids `url`."""
        if not self.obey_robots:
            return
        rules = self.robots(url)
        if rules.deny_all:
            raise RobotsUnavailable(url, rules.reason)
        if rules.parser is not None and not rules.parser.can_fetch(url, self.robot_token):
            raise BlockedByRobots(url)

    def delay_for(self, url: str) -> float:
        """Seconds between requests to this host: our delay, raised by robots.txt Crawl-delay (capped)."""
        delay = self.base_delay
        if self.obey_robots:
            rules = self._robots.get(_origin(url))
            if rules and rules.crawl_delay:
                delay = max(delay, min(rules.crawl_delay, self.max_delay))
        return delay

    # -- requests -------------------------------------------------------------------------------------
    def _wait_turn(self, url: str, budget: _Budget) -> None:
        """Sleep until the host may be asked again (the page's own retry waits were charged when asked for)."""
        host = _host(url)
        ready = max(self._last.get(host, float("-inf")) + self.delay_for(url),
                    self._not_before.get(host, float("-inf")))
        pause = ready - self._clock()
        if pause > 0:
            budget.excuse(pause)
            self._sleep(pause)

    def _timeout(self, budget: _Budget) -> FetchError:
        """The timeout error, saying whether the whole budget or one wait for the server ran out."""
        if budget.left() <= 0:
            return FetchError(f"timeout: fetching took longer than TIMEOUT = {self.timeout:g} s, the time allowed "
                              "for one URL with its retries and redirects", kind="timeout")
        return FetchError(f"timeout: no answer within TIMEOUT = {self.timeout:g} s", kind="timeout")

    def _send(self, url: str, headers: dict[str, str], *, max_bytes: int, truncate: bool, budget: _Budget,
              accept_types: tuple[str, ...] | None) -> _Response:
        """One polite request; reads at most `max_bytes` of decoded body while streaming, within the budget."""
        self._wait_turn(url, budget)
        if budget.left() <= 0:
            raise self._timeout(budget)
        host = _host(url)
        self.requests += 1
        log.debug("GET %s", url)
        try:
            with self.client.stream("GET", url, headers=headers) as resp:
                rheaders = {k.lower(): v for k, v in resp.headers.items()}
                result = _Response(resp.status_code, rheaders, str(resp.url))
                if not 200 <= resp.status_code < 300:  # redirects and errors: the status is all we need
                    return result
                ctype = rheaders.get("content-type", "").split(";")[0].strip().lower()
                if accept_types is not None and ctype and ctype not in accept_types:
                    raise SkipPage(f"not an HTML page (Content-Type {ctype})", kind="not_html")
                declared = rheaders.get("content-length", "")
                if not truncate and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"too large: {int(declared):,} bytes declared, limit MAX_PAGE_BYTES = "
                                     f"{max_bytes:,}", kind="too_large", status=resp.status_code)
                result.content = self._read_body(resp, max_bytes=max_bytes, truncate=truncate, budget=budget)
                return result
        except httpx.TimeoutException:
            raise self._timeout(budget) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise FetchError(f"not a fetchable URL ({exc})", kind="bad_url") from None
        except httpx.TransportError as exc:
            raise FetchError(f"network error: {exc.__class__.__name__}: {exc}", kind="network") from None
        finally:
            self._last[host] = self._clock()

    def _read_body(self, resp: httpx.Response, *, max_bytes: int, truncate: bool, budget: _Budget) -> bytes:
        """The body, decoded here a slice at a time so neither its size nor a bomb's can pass `max_bytes`."""
        codings = content_codings(resp.headers.get("content-encoding", "")) if not resp.is_stream_consumed else []

        def tick() -> None:  # a drip or a long unpacking meets the deadline between slices
            if budget.left() <= 0:
                raise self._timeout(budget)

        def too_large(what: str = "the server sent") -> FetchError:
            return FetchError(f"too large: {what} more than MAX_PAGE_BYTES = {max_bytes:,} bytes; download aborted",
                              kind="too_large", status=resp.status_code)

        def raw() -> Iterator[bytes]:
            size = 0
            # as they arrive, so a slow drip meets the deadline (a response built in memory is already read)
            for chunk in resp.iter_raw() if not resp.is_stream_consumed else [resp.content]:
                tick()
                yield chunk
                size += len(chunk)
                if size > max_bytes:
                    if truncate:
                        return
                    raise too_large()

        body = io.BytesIO()  # getvalue() hands over its buffer: the page is held once, not twice
        for piece in _decoded(raw(), codings, tick):
            room = max_bytes - body.tell()
            if len(piece) > room:
                if not truncate:
                    raise too_large(f"the body unpacks (Content-Encoding {', '.join(codings[::-1])}) to"
                                    if codings else "the server sent")
                body.write(piece[:room])
                break
            body.write(piece)
        return body.getvalue()

    def _request(self, url: str, headers: dict[str, str], *, max_bytes: int, truncate: bool = False,
                 accept_types: tuple[str, ...] | None = None, robots_redirects: bool = False,
                 scope: Callable[[str], bool] | None = None, redirects: list[str] | None = None) -> _Response:
        """GET within one TIMEOUT budget, with retries and redirects followed by hand (each hop checked first)."""
        outer = self._budget  # robots.txt of a redirect target is read with a budget of its own
        budget = self._budget = _Budget(self.timeout, self._clock)
        try:
            return self._follow(url, headers, max_bytes=max_bytes, truncate=truncate, accept_types=accept_types,
                                robots_redirects=robots_redirects, scope=scope,
                                redirects=redirects if redirects is not None else [], budget=budget)
        finally:
            self._budget = outer

    def _follow(self, url: str, headers: dict[str, str], *, max_bytes: int, truncate: bool,
                accept_types: tuple[str, ...] | None, robots_redirects: bool, scope: Callable[[str], bool] | None,
                redirects: list[str], budget: _Budget) -> _Response:
        """The redirect chain from `url`: every hop is checked (loop, limit, scope, robots) before it is requested."""
        seen = {url}
        hops = redirects
        current = url
        while True:
            resp = self._with_retries(current, headers, max_bytes=max_bytes, truncate=truncate,
                                      accept_types=accept_types, budget=budget)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("location", "").strip()
                if not location:
                    raise FetchError(f"redirect ({resp.status}) without a Location header", kind="bad_redirect",
                                     status=resp.status)
                target = urljoin(current, location).split("#", 1)[0]
                if urlsplit(target).scheme not in ("http", "https"):
                    raise FetchError(f"redirect to a non-HTTP address {target}", kind="bad_redirect",
                                     status=resp.status)
                if target in seen:
                    raise FetchError(f"redirect loop: {current} leads back to {target}", kind="redirect_loop",
                                     status=resp.status)
                if len(hops) >= self.max_redirects:
                    raise FetchError(f"more than MAX_REDIRECTS = {self.max_redirects} redirects",
                                     kind="too_many_redirects", status=resp.status)
                if not robots_redirects:
                    if scope is not None and not scope(target):
                        raise SkipPage(f"redirects out of scope to {target}", kind="redirect_out_of_scope")
                    self.check_robots(target)
                seen.add(target)
                hops.append(target)
                current = target
                continue
            if resp.status == 304 or 200 <= resp.status < 300:
                return resp
            raise FetchError(f"HTTP {resp.status} for {current}", kind=_status_kind(resp.status), status=resp.status)

    def _with_retries(self, url: str, headers: dict[str, str], *, max_bytes: int, truncate: bool,
                      accept_types: tuple[str, ...] | None, budget: _Budget) -> _Response:
        """One hop with its retries, each only when its wait still fits in the page's budget."""
        attempt = 0
        while True:
            try:
                resp = self._send(url, headers, max_bytes=max_bytes, truncate=truncate, accept_types=accept_types,
                                  budget=budget)
            except FetchError as exc:
                if exc.kind not in ("timeout", "network") or attempt >= self.retries:
                    raise
                if self._pause(attempt + 1) >= budget.left():  # a slow failure spent the budget: no retry
                    raise
                attempt += 1
                self._backoff(attempt, url, exc.message, budget)
                continue
            if resp.status in (429, 503) and resp.headers.get("retry-after"):
                wait = _retry_after(resp.headers["retry-after"])
                if wait is not None and attempt < max(1, self.retries):
                    if wait > self.max_delay:
                        raise FetchError(f"HTTP {resp.status}: the server asks to wait {wait:g} s (Retry-After), "
                                         f"more than CRAWL_DELAY_MAX = {self.max_delay:g} s",
                                         kind=_status_kind(resp.status), status=resp.status)
                    self._not_before[_host(url)] = self._clock() + wait  # the next request to the host waits too
                    if wait >= budget.left():
                        raise FetchError(f"HTTP {resp.status}: the server asks to wait {wait:g} s (Retry-After), "
                                         f"more than the {max(0.0, budget.left()):.1f} s left of TIMEOUT = "
                                         f"{self.timeout:g} s for this page", kind=_status_kind(resp.status),
                                         status=resp.status)
                    attempt += 1
                    budget.charge(wait)
                    log.info("%s answered %s; waiting %.1f s (Retry-After)", url, resp.status, wait)
                    continue
            if (resp.status >= 500 or resp.status == 429) and attempt < self.retries \
                    and self._pause(attempt + 1) < budget.left():
                attempt += 1
                self._backoff(attempt, url, f"HTTP {resp.status}", budget)
                continue
            return resp

    def _pause(self, attempt: int) -> float:
        """Seconds before retry number `attempt`: RETRY_BACKOFF doubled each time, at most CRAWL_DELAY_MAX."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_delay)

    def _backoff(self, attempt: int, url: str, why: str, budget: _Budget) -> None:
        pause = self._pause(attempt)
        budget.charge(pause)
        log.info("retrying %s in %.1f s after %s (attempt %d of %d)", url, pause, why, attempt, self.retries)
        self._not_before[_host(url)] = max(self._not_before.get(_host(url), 0.0), self._clock() + pause)

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
              scope: Callable[[str], bool] | None = None, html_only: bool = True,
              accept: str = PAGE_ACCEPT) -> Page:
        """Fetch one URL politely; a conditional GET when validators are given (304 -> Page.not_modified).

        `scope` is asked about every redirect hop (default: stay on the same host); with `html_only`
        anything but an HTML body raises SkipPage (not_html, binary).
        """
        if scope is None:
            scope = _same_host(url)
        if not scope(url):
            raise SkipPage(f"out of scope: {url}", kind="out_of_scope")
        self.check_robots(url)
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        hops: list[str] = []
        resp = self._request(url, headers, max_bytes=self.max_bytes, scope=scope, redirects=hops,
                             accept_types=HTML_TYPES if html_only else None)
        page = Page(url=hops[-1] if hops else url, status=resp.status, content=resp.content or b"",
                    headers=resp.headers, requested_url=url, fetched_at=utc_iso(), redirects=hops,
                    not_modified=resp.status == 304)
        if html_only and not page.not_modified and looks_binary(page.content):
            raise SkipPage("binary content served as text/html", kind="binary")
        return page


def _same_host(url: str) -> Callable[[str], bool]:
    """The default scope of a fetch: the host of `url` only."""
    host = _host(url)

    def in_scope(other: str) -> bool:
        return _host(other) == host
    return in_scope


def _status_kind(status: int) -> str:
    if status in (404, 410, 429):
        return f"http_{status}"
    if status >= 500:
        return "http_5xx"
    return "http_4xx" if status >= 400 else f"http_{status}"
