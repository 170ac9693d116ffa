"""The list of sites kb may crawl, and the per-site rules that keep a crawl on its patch.

Sites live in `sources.toml` in the data directory (``kb.config.data_paths(...)["sources"]``).
Each site is one ``[[site]]`` table::

    # sources.toml — one [[site]] table per web site
    [[site]]
    name = "derm-blog"                        # unique label (default: the host name); shown in stats and filters
    url = "https://blog.example.org/"         # start URL; the crawl never leaves this host
    include = ["/"]                           # path prefixes that may be crawled (default: the start URL's path)
    exclude = ["/shop/", "/wp-admin/"]        # path prefixes never crawled (checked after include)
    audience = "public"                       # "public" (patients) or "staff" (clinicians only)
    staff_paths = ["/protocols/"]             # pages under these prefixes are "staff" whatever `audience` says
    staff_categories = ["Staff Protocols"]    # articles in these categories (any case) are "staff" too
    max_pages = 2000                          # at most this many pages per crawl (default: setting MAX_PAGES)
    delay = 2.0                               # seconds between requests to this host (default: setting CRAWL_DELAY;
                                              #  a larger robots.txt Crawl-delay still wins, up to CRAWL_DELAY_MAX)

Only `url` is required. Paths are matched as prefixes of the URL path ("/blog" admits "/blog", "/blog/" and
"/blog/x", but "/blog/" does not admit "/blogroll"). Paths and URLs are compared in one normalised form
(RFC 3986 section 6: percent-encoding, dot segments, repeated slashes), and `exclude` and `staff_paths` also
match every other spelling a server may serve as the same page (any case, percent-decoded, `;params`), so
"/%70rotocols/x", "//protocols/x" and "/PROTOCOLS/x" are staff under "/protocols/". The crawl discovers
pages through the site's sitemaps, the WordPress REST API, its RSS/Atom feed and its links, always obeying
robots.txt.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import yarl

from kb.errors import ConfigError
from kb.models import AUDIENCES

log = logging.getLogger(__name__)

FIELDS = ("name", "url", "include", "exclude", "audience", "staff_paths", "staff_categories", "max_pages", "delay")
EXAMPLE = '[[site]]\nname = "derm-blog"\nurl = "https://blog.example.org/"'
PATH_FIELDS = ("include", "exclude", "staff_paths")
MAX_DECODES = 3  # percent-decoding rounds a rule reading tries ("%2570" -> "%70" -> "p"); proxies rarely stack more
MAX_LENIENT_ROUNDS = 8  # decode-and-fold rounds of a lenient reading; a path not settled by then is staff
_IIS = re.compile(r"%u([0-9a-fA-F]{4})")  # IIS-style "%u0070"
_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]|\xf0[\x80-\x8f][\x80-\xbf]{2}")
_DROPPED = frozenset(("Cf", "Cc", "Mn", "Mc", "Me"))  # format (zero-width, soft hyphen, BOM, bidi), controls, marks
WILDCARD = "\x00"  # a non-ASCII character in an ASCII skeleton: it may stand for any letter (homoglyphs)
_SLASHES = re.compile(r"/{2,}")
_PARAMS = re.compile(r";[^/]*")  # RFC 3986 path parameters; Tomcat and Jetty route "/a;x=1/b" as "/a/b"


@dataclass
class Source:
    """One site to crawl and the rules that keep its crawl in scope."""

    name: str
    url: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    audience: str = "public"
    staff_paths: list[str] = field(default_factory=list)
    staff_categories: list[str] = field(default_factory=list)
    max_pages: int | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        if not self.include:
            self.include = [default_include(self.url)]
        for name in PATH_FIELDS:  # one spelling for configured prefixes, as for the URLs they are compared with
            setattr(self, name, [normalize_path(p) for p in getattr(self, name)])

    @property
    def host(self) -> str:
        """`host[:port]` as it appears in URLs of this site (lower case, default port dropped)."""
        return _netloc(self.url)

    def audience_for(self, url: str, categories: Iterable[str] = (), *, via: Iterable[str] = ()) -> str:
        """The audience of one article: staff when `url`, any other address of its fetch (`via`: the requested
        URL, redirect hops, the declared canonical) or a category is staff; else the site's audience.

        Paths are matched in every spelling a server may treat as the same page, so no spelling escapes.
        """
        if any(self.staff_url(u) for u in (url, *via) if u):
            return "staff"
        wanted = {c.strip().casefold() for c in self.staff_categories}
        if wanted and any(c.strip().casefold() in wanted for c in categories):
            return "staff"
        return self.audience

    def staff_url(self, url: str) -> bool:
        """Whether a staff path covers `url` in any of its readings (case-folded, percent-decoded, Unicode-folded,
        ...) or, for a path that needed lenient decoding or folding, as a path-segment sequence anywhere in its
        ASCII skeleton; an address too broken to read unambiguously is staff when there are staff paths."""
        if not self.staff_paths:
            return False
        try:
            path = urlsplit(url).path
        except ValueError:
            return True
        if path_matches(path, self.staff_paths):
            return True
        reading = lenient_reading(path)  # a plain ASCII path ("/blog/protocols/") is read as written
        return not reading.clean or any(skeleton_contains(form, rule_key(prefix))
                                        for form in reading.forms for prefix in self.staff_paths)

    def excluded(self, path: str) -> str | None:
        """The `exclude` prefix that covers `path` in any of its readings, or None."""
        return next((p for p in self.exclude if path_matches(path, [p])), None)

    def included(self, path: str) -> bool:
        """Whether the normalised `path` lies under an include prefix, and so does every other reading of it."""
        if not any(path_under(path, prefix) for prefix in self.include):
            return False
        keys = [rule_key(p) for p in self.include]
        return all(any(path_under(form, key) for key in keys) for form in path_readings(path))


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port and not (parts.scheme == "http" and port == 80) and not (parts.scheme == "https" and port == 443):
        return f"{host}:{port}"
    return host


def path_under(path: str, prefix: str) -> bool:
    """Whether URL `path` lies under the path `prefix` ("/blog/" admits "/blog" itself, not "/blogroll")."""
    if not prefix or prefix == "/":
        return True
    if path.startswith(prefix):
        return True
    return prefix.endswith("/") and path == prefix[:-1]


def _requote(path: str, *, collapse_first: bool = False) -> str:
    """RFC 3986 section 6.2.2 with yarl (escapes upper-cased, unreserved ones decoded, dot segments removed,
    "%2e" segments included), then repeated slashes collapsed; "%2F" stays encoded.

    Dot segments go first, as browsers and `urljoin` resolve them ("/a//../b" is "/a/b");
    `collapse_first` reads the path as nginx's merge_slashes does ("/b").
    """
    path = (path or "/").replace("?", "%3F").replace("#", "%23")
    if not path.startswith("/"):
        path = "/" + path
    if collapse_first:
        path = _SLASHES.sub("/", path)
    try:
        path = yarl.URL("http://h" + path).raw_path
    except ValueError:
        log.debug("yarl could not parse path %r; kept as given", path)
    return _SLASHES.sub("/", path) or "/"


@lru_cache(maxsize=65_536)
def normalize_path(path: str) -> str:
    """The one spelling of a URL path (or configured prefix) that scope, audience and storage compare."""
    return _requote(path)


def rule_key(prefix: str) -> str:
    """A configured prefix as path rules compare it: normalised, percent-decoded, case-folded."""
    return unquote(normalize_path(prefix)).casefold()


def _strip_dots(path: str) -> str:
    """Trailing dots and spaces dropped from each segment, as Windows servers read "/protocols./x"."""
    return "/".join(seg.rstrip(". ") or seg for seg in path.split("/"))


@lru_cache(maxsize=65_536)
def server_paths(path: str) -> frozenset[str]:
    """Every path a lenient server might route `path` to, normalised and case kept: `path` itself, each
    further percent-decoding ("%2F" and "%5C" become separators, "%2570" becomes "p"), without `;params`,
    and with slashes merged before or after dot segments are removed. For robots.txt, staff and exclude."""
    if not any(c in path for c in "%;\\") and normalize_path(path) == path:
        return frozenset((path,))  # the common case: nothing to decode, nothing to resolve
    readings, current = [path], path
    for _ in range(MAX_DECODES):
        decoded = unquote(current).replace("\\", "/")
        if decoded == current:
            break
        readings.append(decoded)
        current = decoded
    return frozenset(_requote(variant, collapse_first=collapse_first)
                     for reading in readings for variant in {reading, _PARAMS.sub("", reading)}
                     for collapse_first in (False, True))


@dataclass(frozen=True)
class LenientReading:
    """What a lenient server may read a path as: decoded and folded forms, and whether decoding was clean."""

    forms: frozenset[str]
    clean: bool  # False: invalid UTF-8, a lone surrogate, or no fixed point within MAX_LENIENT_ROUNDS


def _overlong(match: re.Match[bytes]) -> bytes:
    """An overlong UTF-8 sequence (bytes C0 AF) as the character lenient decoders take it for ("/")."""
    raw = match.group()
    lead = {2: 0x1F, 3: 0x0F, 4: 0x07}[len(raw)]
    code = raw[0] & lead
    for byte in raw[1:]:
        code = (code << 6) | (byte & 0x3F)
    return chr(code).encode("utf-8", "surrogatepass")


def _decode_once(text: str) -> tuple[str, bool]:
    """One lenient percent-decoding round ("%uXXXX", escapes read as bytes, overlong UTF-8 accepted);
    (text, clean) where clean is False when the bytes were not valid UTF-8 (bad bytes then dropped)."""
    text = _IIS.sub(lambda m: chr(int(m.group(1), 16)), text)
    raw = _OVERLONG.sub(_overlong, unquote_to_bytes(text.encode("utf-8", "surrogatepass")))
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "ignore"), False


def fold(text: str) -> str:
    """Unicode compatibility folding as lenient servers apply it: NFKD, format characters, controls and
    combining marks dropped, case-folded, NFKC ("／"->"/", "𝐩"/"ⓟ"/"ｐ"->"p", "ℓ"->"l", soft hyphens gone)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if unicodedata.category(c) not in _DROPPED)
    return unicodedata.normalize("NFKC", text.casefold())


def _resolve(text: str, *, merge_first: bool) -> str:
    """A decoded path as a server routes it: "\\" is "/", no `;params`, dot segments resolved (slashes merged
    before or after), one leading slash."""
    text = _PARAMS.sub("", text.replace("\\", "/"))
    if merge_first:
        text = _SLASHES.sub("/", text)
    segments: list[str] = []
    parts = text.split("/")
    for segment in parts:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    if parts[-1] in (".", ".."):
        segments.append("")
    return "/" + _SLASHES.sub("/", "/".join(segments)).lstrip("/")


@lru_cache(maxsize=65_536)
def lenient_reading(path: str) -> LenientReading:
    """Every reading of `path` by a server that decodes leniently and repeatedly and folds Unicode, in rule
    form; decoding runs to a fixed point (bounded), so "%25u0070" and "％70" end as "p"."""
    if path.isascii() and not any(c in path for c in "%\\"):
        return LenientReading(frozenset(), True)  # nothing to decode or fold beyond what server_paths reads
    texts, clean, current = set(), True, path
    for _ in range(MAX_LENIENT_ROUNDS):
        decoded, ok = _decode_once(current)
        clean = clean and ok
        folded = fold(decoded)
        texts.update((decoded.casefold(), folded))
        if folded == current:
            break
        current = folded
    else:
        clean = False
    forms = {_resolve(t, merge_first=m) for t in texts for m in (False, True)}
    return LenientReading(frozenset(forms), clean)


@lru_cache(maxsize=65_536)
def path_readings(path: str) -> frozenset[str]:
    """The server paths of `path` in rule form (percent-decoded, case-folded, and also without trailing dots
    on segments) and its lenient readings (overlong UTF-8, "%uXXXX", Unicode folding, repeated decoding):
    a staff or exclude rule that matches any one of them matches the URL, the safe side."""
    forms = {unquote(p).casefold() for p in server_paths(path)} | lenient_reading(path).forms
    return frozenset(forms | {_strip_dots(f) for f in forms})


def skeleton(segment: str) -> str:
    """A path segment reduced to ASCII: folded, whitespace dropped, any other non-ASCII letter a WILDCARD."""
    return "".join(c if c.isascii() else WILDCARD for c in fold(segment) if not c.isspace())


def _segment_like(segment: str, rule: str, *, whole: bool) -> bool:
    """Whether a skeleton segment spells `rule` (whole, or as its start), non-ASCII characters standing in for
    letters when most of the segment is ASCII and agrees (a homoglyph in a mixed-script segment)."""
    if not whole:
        segment = segment[:len(rule)]
    if segment == rule:
        return True
    if len(segment) != len(rule) or WILDCARD not in segment:
        return False
    agree = sum(a == b for a, b in zip(segment, rule))
    return agree * 2 >= len(rule) and all(a in (b, WILDCARD) for a, b in zip(segment, rule))


def skeleton_contains(form: str, key: str) -> bool:
    """Whether the ASCII skeleton of the path `form` holds the rule `key`'s segments in sequence anywhere
    ("/x/protocols/y" under "/protocols/"): the conservative last check for staff paths."""
    rule = [s for s in key.split("/") if s]
    if not rule:
        return True
    whole_last = key.endswith("/")
    segments = [skeleton(s) for s in form.split("/")]
    segments = [s for s in segments if s]
    for start in range(len(segments) - len(rule) + 1):
        window = segments[start:start + len(rule)]
        if all(_segment_like(seg, r, whole=whole_last or i < len(rule) - 1)
               for i, (seg, r) in enumerate(zip(window, rule))):
            return True
    return False


def path_matches(path: str, prefixes: Iterable[str]) -> bool:
    """Whether any reading of URL `path` lies under any of `prefixes`, compared case-insensitively."""
    keys = [rule_key(p) for p in prefixes]
    return bool(keys) and any(path_under(form, key) for form in path_readings(path) for key in keys)


def default_include(url: str) -> str:
    """The path prefix a crawl from `url` stays under: its directory ("/blog/post.html" -> "/blog/")."""
    path = urlsplit(url).path or "/"
    if path.endswith("/"):
        return path
    last = path.rsplit("/", 1)[-1]
    if "." in last:  # a file such as /blog/index.html: its directory
        return path.rsplit("/", 1)[0] + "/"
    return path  # "/blog" admits "/blog", "/blog/..." (and, as a prefix, "/blog-news")


def _check_url(url: Any) -> str | None:
    """Why `url` cannot be a start URL, or None when it can."""
    if not isinstance(url, str) or not url.strip():
        return "must be a non-empty string"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        return f"must start with http:// or https:// (got {url!r})"
    if not parts.hostname:
        return f"has no host name ({url!r})"
    try:
        parts.port
    except ValueError:
        return f"has an invalid port ({url!r})"
    return None


def source_from_url(url: str) -> Source:
    """A source for `kb crawl URL`: named after the host, staying under the URL's directory."""
    problem = _check_url(url)
    if problem:
        raise ConfigError(f"The start URL {problem}.", "Give a full address such as https://blog.example.org/.")
    url = url.strip()
    if not urlsplit(url).path:
        url += "/"
    return Source(name=_netloc(url), url=url)


def _line_numbers(text: str) -> list[int]:
    """1-based line of every `[[site]]` header, in order, so errors can point at the table."""
    return [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*site\s*\]\]", line)]


def _field_line(text: str, start: int | None, key: str) -> int | None:
    """Line of `key = ...` inside the table that starts at `start` (None when not found)."""
    if start is None:
        return None
    lines = text.splitlines()
    for i in range(start, len(lines)):  # lines after the header (start is 1-based)
        line = lines[i]
        if re.match(r"\s*\[", line):
            break
        if re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return i + 1
    return start


def load_sources(path: Path) -> list[Source]:
    """Read and validate sources.toml; every mistake is a ConfigError naming the line, field and fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No sources file at {path}.",
                          f"Create it with one [[site]] table per site, for example:\n{EXAMPLE}")
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text.", "Save it as UTF-8.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.",
                          "Fix the line named above (strings need double quotes, lists square brackets).") from None
    extra = sorted(set(data) - {"site"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r}.",
                          f"Put every site in a [[site]] table, for example:\n{EXAMPLE}")
    sites = data.get("site", [])
    if not isinstance(sites, list) or not sites:
        raise ConfigError(f"{path} lists no sites.", f"Add a [[site]] table, for example:\n{EXAMPLE}")
    headers = _line_numbers(text)
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(sites, 1):
        start = headers[number - 1] if number - 1 < len(headers) else None
        source = _source_from_table(table, path, text, start, number)
        if source.name in seen:
            raise ConfigError(
                f"{_where(path, _field_line(text, start, 'name'), number)}: the name {source.name!r} is already "
                f"used by site #{seen[source.name]}.", "Give every [[site]] a different name.")
        seen[source.name] = number
        sources.append(source)
    return sources


def _where(path: Path, line: int | None, number: int) -> str:
    return f"{path}, line {line} (site #{number})" if line else f"{path} (site #{number})"


def _source_from_table(table: Any, path: Path, text: str, start: int | None, number: int) -> Source:
    def fail(key: str, problem: str, remedy: str) -> ConfigError:
        return ConfigError(f"{_where(path, _field_line(text, start, key), number)}: {key} {problem}.", remedy)

    if not isinstance(table, dict):
        raise ConfigError(f"{_where(path, start, number)}: a site must be a table.", f"Write it as:\n{EXAMPLE}")
    for key in table:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise fail(key, "is not a known field",
                       f"{hint}Known fields: {', '.join(FIELDS)}.")
    if "url" not in table:
        raise ConfigError(f"{_where(path, start, number)}: the site has no url.",
                          'Add the start address, e.g. url = "https://blog.example.org/".')
    problem = _check_url(table["url"])
    if problem:
        raise fail("url", problem, 'Write the full start address, e.g. url = "https://blog.example.org/".')
    url = table["url"].strip()
    if not urlsplit(url).path:
        url += "/"
    name = table.get("name", _netloc(url))
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "must be a non-empty string", 'Write e.g. name = "derm-blog".')
    lists: dict[str, list[str]] = {}
    for key in ("include", "exclude", "staff_paths", "staff_categories"):
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail(key, "must be a list of non-empty strings", f'Write e.g. {key} = ["/blog/"].')
        value = [v.strip() for v in value]
        if key != "staff_categories":
            for v in value:
                if not v.startswith("/"):
                    raise fail(key, f"entry {v!r} is not a path", f'Paths start with "/", e.g. {key} = ["/blog/"].')
        lists[key] = value
    audience = table.get("audience", "public")
    if audience not in AUDIENCES:
        raise fail("audience", f"is {audience!r}", f"Use one of: {', '.join(repr(a) for a in AUDIENCES)}.")
    max_pages = table.get("max_pages")
    if max_pages is not None and (isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1):
        raise fail("max_pages", f"is {max_pages!r}", "Use a whole number of at least 1, e.g. max_pages = 500.")
    delay = table.get("delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))
                              or not math.isfinite(delay) or delay < 0):
        raise fail("delay", f"is {delay!r}", "Use seconds as a number of at least 0, e.g. delay = 1.5.")
    return Source(name=name.strip(), url=url, audience=audience, max_pages=max_pages,
                  delay=float(delay) if delay is not None else None, **lists)
