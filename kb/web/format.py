"""Small text helpers shared by the templates and the API: safe links, language tags, dates, page numbers.

Crawled values are untrusted: every one that reaches an href, a lang attribute or a <time> passes through one
of these. They hold no Flask state, so they are tested directly and every other part of kb.web may use them.
"""

from __future__ import annotations

import re
from datetime import date
from urllib.parse import urlsplit

import langcodes

from kb.text import paragraphs as text_paragraphs

MAX_LANG_LENGTH = 64

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # one regex scan: this runs for every link of every result page
_HTTP_URL = re.compile(r"(?i)https?://[^\s/?#\\]+(?:[/?#]|$)")


def http_url(url: str | None) -> str | None:
    """Return `url` if it is safe to put in an href (absolute http or https), else None.

    Crawled URLs are untrusted: `javascript:`, `data:` and anything with control
    characters (which browsers silently strip) must never become a link.
    """
    if not url or not isinstance(url, str):
        return None
    text = url.strip()
    if _CONTROL_CHARS.search(text):
        return None
    if not _HTTP_URL.match(text):
        return None
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    return text if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def language_tag(value: str | None) -> str:
    """A crawled language as a valid BCP 47 tag in its standard form (`en_us` -> `en-US`), else "".

    Pages declare anything in `lang`; only a tag the IANA registry knows may reach an attribute or API client.
    """
    if not value or not isinstance(value, str) or len(value) > MAX_LANG_LENGTH:
        return ""
    text = value.strip()
    try:
        return langcodes.standardize_tag(text) if langcodes.tag_is_valid(text) else ""
    except (langcodes.LanguageTagError, ValueError):
        return ""


def host_name(url: str | None) -> str:
    """Host shown next to a result so readers see where it comes from."""
    try:
        return (urlsplit((url or "").strip()).hostname or "") if http_url(url) else ""
    except ValueError:
        return ""


def iso_date(value: str | None) -> str:
    """The YYYY-MM-DD part of an ISO date/datetime, or "" when it is not one (for <time datetime>)."""
    if not value:
        return ""
    try:
        return date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        return ""


def human_date(value: str | None) -> str:
    """A date people read without thinking about formats (`3 March 2024`); odd values pass through."""
    text = iso_date(value)
    if not text:
        return str(value or "")
    d = date.fromisoformat(text)
    return f"{d.day} {d.strftime('%B')} {d.year}"


def page_window(page: int, pages: int, radius: int = 2) -> list[int | None]:
    """Page numbers around `page` plus first and last; None marks a gap (ellipsis)."""
    shown = {1, pages, *range(max(1, page - radius), min(pages, page + radius) + 1)}
    out: list[int | None] = []
    previous = 0
    for n in sorted(shown):
        if n - previous > 1:
            out.append(None)
        out.append(n)
        previous = n
    return out


def paragraphs(text: str) -> list[list[str]]:
    """Stored plain text as paragraphs of lines, for escaped rendering (kb.text splits the paragraphs)."""
    out = []
    for block in text_paragraphs((text or "").replace("\r\n", "\n")):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if lines:
            out.append(lines)
    return out
