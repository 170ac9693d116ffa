"""Plain-text conventions shared by several stages: paragraphs and slugs.

kb keeps article text as paragraphs separated by blank lines; the extractor writes it that way and the
boilerplate rule, document import and article page read it back the same way. Anchors and topic ids are
slugs made by one rule, so a heading always yields the same fragment.
"""

from __future__ import annotations

import re
import unicodedata

_BLANK_LINE = re.compile(r"\n\s*\n")


def paragraphs(text: str) -> list[str]:
    """The blank-line separated paragraphs of `text`, stripped, empty ones dropped."""
    return [p.strip() for p in _BLANK_LINE.split(text or "") if p.strip()]


def slugify(text: str, *, limit: int = 80, default: str = "section") -> str:
    """A URL-fragment-safe slug: lower case, accents dropped, words joined by '-'."""
    value = unicodedata.normalize("NFKD", text)
    value = "".join(c for c in value if not unicodedata.combining(c)).lower()
    value = re.sub(r"[^\w\s-]", "", value)
    value = re.sub(r"[\s_-]+", "-", value).strip("-")
    return value[:limit].strip("-") or default
