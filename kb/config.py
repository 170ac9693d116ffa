"""Every setting of kb in one table, with its default and help text.

Settings are layered (flaskr style): these defaults, then `kb.toml` in the data
directory, then `KB_<NAME>` environment variables, then an explicit mapping
(tests, CLI options). Every path is a setting so tests can point them at tmp_path.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kb import __version__
from kb.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("BOILERPLATE_MIN_PAGES", 3,
            "A paragraph counts as site boilerplate (stripped from text and snippets) only on at least this many pages."),
    Setting("BOILERPLATE_SHARE", 0.5,
            "Share of a site's articles a paragraph must appear on to count as boilerplate (calls to book, disclaimers)."),
    Setting("CRAWL_DELAY", 1.0, "Minimum seconds between two requests to the same host (robots.txt Crawl-delay may raise it)."),
    Setting("CRAWL_DELAY_MAX", 30.0, "Upper bound on a robots.txt Crawl-delay or Retry-After we agree to wait."),
    Setting("DATABASE_REPLICA_URLS", "",
            "Comma-separated postgresql:// URLs of read-only streaming replicas of DATABASE_URL: article pages, the "
            "API, facets and the FAQ read from them, falling back to another replica or the primary when one fails."),
    Setting("DATABASE_URL", "",
            "postgresql://USER:PASS@HOST:PORT/DB keeps the store in PostgreSQL (schema created and migrated "
            "automatically) instead of kb.sqlite3 in the data directory; empty: SQLite."),
    Setting("DATA_DIR", "index", "Directory for the SQLite store, the Whoosh index and sources.toml (--data-dir, KB_DATA_DIR)."),
    Setting("IMPORT_TIMEOUT", 10.0,
            "Seconds `kb add` may spend reading one document (in a separate process, stopped after this long); "
            "a document that takes longer is skipped and the others are still imported."),
    Setting("MAX_PAGES", 5000, "Maximum number of pages fetched per site in one crawl."),
    Setting("MAX_PAGE_BYTES", 5_000_000, "Responses larger than this are skipped, not stored."),
    Setting("MAX_REDIRECTS", 5, "Redirects followed per request before giving up."),
    Setting("OBEY_ROBOTS", True, "Honour robots.txt (Disallow, Allow, Crawl-delay)."),
    Setting("PER_PAGE", 10, "Search results per page in the web UI and the API default."),
    Setting("PROXY_HOPS", 0,
            "Reverse proxies in front of `kb serve` whose X-Forwarded-For/-Proto are trusted (client address for "
            "the sign-in rate limit, https for Secure cookies); 0 without a proxy."),
    Setting("QUERY_LOG", True,
            "Record searches (query text, result count, time; never IP addresses or user ids) for `kb report queries`."),
    Setting("QUERY_LOG_DAYS", 90, "Days query-log rows are kept; older rows are pruned as new ones are written."),
    Setting("QUERY_LOG_PUBLIC", True,
            "Keep the text of public (patient) queries; when false only their counts and timings are logged."),
    Setting("REMOVE_AFTER_MISSES", 3, "Consecutive crawls a page may be missing from sitemap/feed before it is removed."),
    Setting("REMOVE_MAX_SHARE", 0.2, "A crawl refuses to remove more than this share of a site's articles unless forced."),
    Setting("RETRIES", 2, "Retries (with backoff) after a timeout or a 5xx answer."),
    Setting("RETRY_BACKOFF", 1.0, "Seconds before the first retry of a failed request; doubles with each further retry."),
    Setting("SECRET_KEY", "", "Flask session key; generated into the data directory when empty."),
    Setting("SECURE_COOKIES", "auto",
            "Secure flag of the staff session cookie: auto (when the request came over https), true or false."),
    Setting("SESSION_HOURS", 12.0, "Hours a staff sign-in lasts before the user has to sign in again."),
    Setting("TIMEOUT", 20.0, "Seconds allowed for one HTTP request (connect, read and total)."),
    Setting("USER_AGENT", f"kb/{__version__} (+https://github.com/kb-search/kb; dermatology knowledge base crawler)",
            "User-Agent sent with every request; names kb so site owners can address it in robots.txt."),
    Setting("WORKERS", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
            "Worker processes of `kb serve` (--workers); default one per CPU core this process may use."),
    Setting("WORKER_HEADER", False,
            "Name the serving process in an X-KB-Worker response header (tests, load-balancing checks); off in "
            "production, as it reveals process ids."),
)

DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}

#: Settings whose values are secrets or carry passwords: `kb settings` never prints them in full.
SECRET_SETTINGS = frozenset({"SECRET_KEY", "DATABASE_URL", "DATABASE_REPLICA_URLS"})


def _coerce(name: str, value: Any) -> Any:
    """Convert an environment string to the type of the setting's default."""
    default = DEFAULTS[name]
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise ConfigError(f"Setting {name}={value!r} is not a valid {type(default).__name__}.",
                          f"Use a value like {default!r}.") from None


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the effective settings: defaults < data-dir kb.toml < KB_* environment < overrides."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    config = dict(DEFAULTS)
    data_dir = overrides.get("DATA_DIR") or environ.get("KB_DATA_DIR") or DEFAULTS["DATA_DIR"]
    toml_path = Path(data_dir) / "kb.toml"
    if toml_path.is_file():
        try:
            file_values = tomllib.loads(toml_path.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}", "Fix or remove the file.") from None
        config.update({k.upper(): v for k, v in file_values.items() if k.upper() in DEFAULTS})
    for name in DEFAULTS:
        if f"KB_{name}" in environ:
            config[name] = _coerce(name, environ[f"KB_{name}"])
    for name, value in overrides.items():
        config[name] = _coerce(name, value) if name in DEFAULTS else value
    config["DATA_DIR"] = str(Path(config["DATA_DIR"]))
    return config


def data_paths(data_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Where each kind of data lives inside the data directory (documented in the README)."""
    root = Path(data_dir)
    return {
        "root": root,
        "store": root / "kb.sqlite3",
        "index": root / "whoosh",
        "sources": root / "sources.toml",
        "cache": root / "cache",
        "lock": root / "kb.lock",
    }
