"""Bytes to text: byte-order marks, the HTTP header's charset, <meta charset>, else UTF-8. Pure.

The pipeline decodes each fetched body once, strictly (a mostly undecodable page is skipped), and hands the
text both to link discovery (kb.crawl) and to extraction, so decoding is a part of its own that needs no
HTML parser; extraction decodes the bytes it is given through the same function.
"""

from __future__ import annotations

import codecs
import re

from kb.errors import SkipPage

__all__ = ["decode_html", "detect_charset"]

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]{1,40})""", re.I)
_CT_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([a-zA-Z0-9_.:-]{1,40})", re.I)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name.strip().lower())
    except (LookupError, ValueError):
        return None
    # Pages that claim Latin-1 are almost always Windows-1252 (the HTML standard says to treat them so).
    return "cp1252" if info.name in ("latin-1", "iso8859-1", "ascii") else info.name


def detect_charset(data: bytes, content_type: str = "") -> str:
    """The encoding of a page: BOM, then the HTTP header's charset, then <meta charset>, else UTF-8."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    m = _CT_CHARSET_RE.search(content_type or "")
    encoding = _codec(m.group(1)) if m else None
    if encoding is None:
        m = _META_CHARSET_RE.search(data[:4096])
        encoding = _codec(m.group(1).decode("ascii", "replace")) if m else None
        if encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
            encoding = None  # a <meta> we could read in ASCII cannot be in UTF-16 text
    return encoding or "utf-8"


def decode_html(data: str | bytes, content_type: str = "", *, strict: bool = False) -> str:
    """Bytes to text (bad bytes become U+FFFD); `strict` skips a mostly undecodable page rather than store it garbled."""
    if isinstance(data, str):
        text = data
    else:
        encoding = detect_charset(data, content_type)
        for bom, name in _BOMS:
            if name == encoding and data.startswith(bom):
                data = data[len(bom):]
                break
        try:
            text = data.decode(encoding, errors="replace")
        except LookupError:
            encoding, text = "utf-8", data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if strict and bad > 10 and bad / max(1, len(text)) > 0.02:
            raise SkipPage(f"{bad / len(text):.0%} of the page is not valid {encoding} text; skipped rather than "
                           "storing garbled text", kind="bad_encoding")
    return _CONTROL_RE.sub("", text.replace("\x00", "").removeprefix("\ufeff"))
