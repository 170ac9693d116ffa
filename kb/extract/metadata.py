"""What a page says about itself: JSON-LD, <meta> tags, dates, the site name in a <title>, robots directives. Pure.

These read the untouched tree, before the content is cleaned, and none of them needs the content; document
import (kb.documents) also uses `normalise_date` on its own for the dates in front matter.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from bs4 import BeautifulSoup, SoupStrainer

from kb.extract.charset import decode_html
from kb.extract.tree import _attr, _clean

__all__ = ["meta_robots", "normalise_date"]

TITLE_SEPARATORS = (" | ", " – ", " — ", " - ", " :: ", " · ", " » ", " • ", " // ")
ARTICLE_TYPES = {
    "article", "newsarticle", "blogposting", "webpage", "medicalwebpage", "reportagenewsarticle",
    "analysisnewsarticle", "techarticle", "scholarlyarticle", "medicalscholarlyarticle", "faqpage",
    "qapage", "posting", "socialmediaposting", "liveblogposting", "opinionnewsarticle", "healthtopiccontent",
}


# ------------------------------------------------------------------------------------------- metadata

def _json_ld(soup: BeautifulSoup) -> list[dict]:
    """All schema.org objects from JSON-LD blocks, @graph flattened; broken JSON is skipped."""
    found: list[dict] = []
    for script in soup.find_all("script", attrs={"type": re.compile(r"ld\+json", re.I)}):
        raw = script.string or script.get_text() or ""
        raw = raw.strip().removeprefix("<!--").removesuffix("-->").strip()
        if not raw:
            continue
        try:
            data = json.loads(raw, strict=False)
        except (ValueError, RecursionError):
            continue
        stack = [data]
        while stack and len(found) < 200:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                found.append(item)
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(reversed(graph))
    return found


def _ld_types(obj: dict) -> set[str]:
    t = obj.get("@type", "")
    values = t if isinstance(t, list) else [t]
    return {str(v).rsplit("/", 1)[-1].lower() for v in values if v}


def _ld_names(value: object) -> list[str]:
    """Names from a JSON-LD person/organisation/string or a list of them."""
    items = value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("name") or ""
        if isinstance(item, str) and item.strip() and not _looks_like_url(item):
            names.append(_clean(item))
    return names


def _ld_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [_clean(v) for v in value if isinstance(v, str) and v.strip()]
    return []


def _looks_like_url(value: str) -> bool:
    return bool(re.match(r"^(https?:)?//|^www\.", value.strip(), re.I))


def _meta_map(soup: BeautifulSoup) -> dict[str, list[str]]:
    metas: dict[str, list[str]] = {}
    for meta in soup.find_all("meta"):
        key = (_attr(meta, "property") or _attr(meta, "name") or _attr(meta, "itemprop")).strip().lower()
        content = _attr(meta, "content").strip()
        if key and content:
            metas.setdefault(key, []).append(content)
    return metas


def _first(metas: dict[str, list[str]], *keys: str) -> str:
    for key in keys:
        for value in metas.get(key, []):
            if value.strip():
                return _clean(value)
    return ""


_DATE_RE = re.compile(
    r"^\s*(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{1,2}):?(\d{2})(?::?(\d{2})(?:[.,]\d+)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_TEXT_DATE_FORMATS = (
    "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%b. %d, %Y", "%Y/%m/%d",
    "%d/%m/%Y", "%d.%m.%Y",
)


def normalise_date(value: str | None) -> str | None:
    """ISO 8601 from the date spellings pages use; None when it is not a date we can trust."""
    if not value or not isinstance(value, str):
        return None
    s = value.strip()[:100]
    m = _DATE_RE.match(s)
    if m:
        year, month, day, hour, minute, second, tz = m.groups()
        try:
            if hour is None:
                return datetime(int(year), int(month), int(day)).date().isoformat()
            dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
        except ValueError:
            return None
        if tz:
            if tz in ("Z", "z"):
                dt = dt.replace(tzinfo=timezone.utc)
            else:
                try:
                    dt = datetime.fromisoformat(dt.isoformat() + _tz_colon(tz))
                except ValueError:
                    pass
        return dt.isoformat()
    try:
        dt = parsedate_to_datetime(s)
        return dt.isoformat()
    except (TypeError, ValueError, IndexError):
        pass
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", s)
    cleaned = re.sub(r"^(on|posted on|published|updated)\s+", "", cleaned, flags=re.I).strip(" .")
    for fmt in _TEXT_DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _tz_colon(tz: str) -> str:
    tz = tz.replace(":", "")
    return f"{tz[:3]}:{tz[3:5] or '00'}"


def _split_title(title: str, site_names: Iterable[str], host: str) -> str:
    """Drop a ' – Site name' suffix (or 'Site name | ' prefix) from a <title>."""
    title = _clean(title)
    names = {n.lower() for n in site_names if n}
    host_key = re.sub(r"^www\.", "", host.lower()).split(".")[0]
    for sep in TITLE_SEPARATORS:
        if sep not in title:
            continue
        parts = [p.strip() for p in title.split(sep)]
        head, tail = sep.join(parts[:-1]).strip(), parts[-1]
        first, rest = parts[0], sep.join(parts[1:]).strip()

        def is_site(part: str) -> bool:
            low = part.lower()
            squashed = re.sub(r"[^a-z0-9]", "", low)
            return low in names or (bool(host_key) and squashed == re.sub(r"[^a-z0-9]", "", host_key)) or (
                bool(host_key) and host_key in squashed and len(part.split()) <= 4
            )

        if head and is_site(tail):
            return head
        if rest and is_site(first):
            return rest
        if head and len(tail.split()) <= 4 and len(head) >= len(tail):
            return head
    return title


# ------------------------------------------------------------------------------------ page-level signals

def meta_robots(html: str | bytes) -> set[str]:
    """Directives of <meta name="robots"> (e.g. {"noindex", "nofollow"}); "none" means both."""
    text = decode_html(html)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        soup = BeautifulSoup(text, "lxml", parse_only=SoupStrainer("meta"))
    out: set[str] = set()
    for meta in soup.find_all("meta"):
        if _attr(meta, "name").strip().lower() != "robots":
            continue
        for token in re.split(r"[,\s]+", _attr(meta, "content").lower()):
            if token == "none":
                out |= {"noindex", "nofollow"}
            elif token:
                out.add(token)
    return out
