"""Site-level boilerplate: paragraphs that repeat across many pages of one site. Pure functions.

Per-page extraction cannot tell a clinic's "Book a consultation" call, its disclaimer or its author box
from article text: they sit inside the article body. Seen across a site they stand out, because the same
paragraph appears on most pages. The pipeline fingerprints each page's paragraphs, finds the fingerprints
shared by a large share of the site's pages, and strips those paragraphs before indexing, so every article
does not match a query for "consultation".

Headings are never stripped on their own: "Causes" and "Treatment" repeat on every condition page of a
medical site and are real structure. A section goes only when all of its paragraphs were boilerplate
(a "Contact us" heading over the clinic's call to action).

A site has one set per audience of reader: a public page is stripped with the set learned from the site's
public pages only, so what an anonymous visitor reads never depends on staff pages (which paragraphs those
repeat would otherwise show through); a staff page with the set learned from every page of the site.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from kb.models import Article, Section
from kb.text import paragraphs

log = logging.getLogger(__name__)

MIN_CHARS = 12  # shorter paragraphs ("Yes.", "Share") are too common to tell anything apart

#: Each boilerplate set of a site and the article audiences it is learned from (None: every article).
SETS: dict[str, tuple[str, ...] | None] = {"public": ("public",), "staff": None}

__all__ = ["SETS", "normalise_paragraph", "fingerprint", "block_fingerprints", "find_boilerplate",
           "find_boilerplate_sets", "set_for", "strip_boilerplate"]


def normalise_paragraph(text: str) -> str:
    """Case, punctuation, digits and spacing removed, so "© 2023" and "(c) 2024" footers match."""
    value = unicodedata.normalize("NFKC", text).casefold()
    value = re.sub(r"\d+", "0", value)
    value = re.sub(r"[^\w\s]", " ", value)
    return " ".join(value.split())


def fingerprint(text: str) -> str | None:
    """Short stable hash of one paragraph; None when it is too short to be told apart."""
    norm = normalise_paragraph(text)
    if len(norm) < MIN_CHARS:
        return None
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


def block_fingerprints(article_text: str) -> list[str]:
    """Fingerprints of a page's paragraphs, in order (store them per page to find site boilerplate)."""
    out = []
    for para in paragraphs(article_text):
        fp = fingerprint(para)
        if fp is not None:
            out.append(fp)
    return out


def find_boilerplate(pages_paragraph_hashes: Iterable[list[str]], min_share: float = 0.5,
                     min_pages: int = 3) -> set[str]:
    """Fingerprints present on at least `min_pages` pages and at least `min_share` of all pages given."""
    counts: Counter[str] = Counter()
    pages = 0
    for hashes in pages_paragraph_hashes:
        pages += 1
        counts.update(set(hashes))
    if pages == 0:
        return set()
    found = {h for h, n in counts.items() if n >= min_pages and n / pages >= min_share}
    log.debug("boilerplate: %d of %d paragraph fingerprints repeat on >= %.0f%% of %d pages",
              len(found), len(counts), min_share * 100, pages)
    return found


def set_for(audience: str) -> str:
    """The set an article of `audience` is stripped with: only a public page's ignores staff pages."""
    return "public" if audience == "public" else "staff"


def find_boilerplate_sets(pages: Iterable[tuple[str, list[str]]], min_share: float = 0.5,
                          min_pages: int = 3) -> dict[str, set[str]]:
    """Set name -> fingerprints, each learned (`find_boilerplate`) from the pages (audience, hashes) it counts."""
    listed = list(pages)
    return {name: find_boilerplate((hashes for audience, hashes in listed if counted is None or audience in counted),
                                   min_share=min_share, min_pages=min_pages)
            for name, counted in SETS.items()}


def _keep(text: str, boilerplate: set[str]) -> bool:
    fp = fingerprint(text)
    return fp is None or fp not in boilerplate


def strip_boilerplate(article: Article, boilerplate: set[str]) -> Article:
    """A copy of `article` without boilerplate paragraphs in its text and sections; headings stay."""
    if not boilerplate:
        return article
    headings = {s.heading for s in article.sections if s.heading}
    verdicts: dict[str, bool] = {}  # the text repeats the sections' paragraphs: fingerprint each once

    def keep(para: str) -> bool:
        if para not in verdicts:
            verdicts[para] = _keep(para, boilerplate)
        return verdicts[para]

    sections: list[Section] = []
    dropped_headings: set[str] = set()
    for section in article.sections:
        body = paragraphs(section.text)
        kept = [p for p in body if keep(p)]
        if not kept and (body or not section.heading):
            if section.heading:
                dropped_headings.add(section.heading)
            continue
        # The markup cannot drop paragraphs one by one: a section that lost some shows its plain text.
        sections.append(replace(section, text="\n\n".join(kept), html=section.html if kept == body else ""))
    text_parts = []
    for para in paragraphs(article.text):
        if para in headings:
            if para in dropped_headings:
                dropped_headings.discard(para)  # drop one occurrence per dropped section
                continue
            text_parts.append(para)
        elif keep(para):
            text_parts.append(para)
    return replace(article, text="\n\n".join(text_parts), sections=sections)
