"""Question/answer pairs of a page as FAQ records: FAQPage JSON-LD, <details> accordions, question headings. Pure.

The pipeline asks for them on its own, after it has stored the page's article, so FAQ extraction is a part
of its own over the same parsed page, blocks and anchors that `extract` uses.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag

from kb.errors import SkipPage
from kb.extract.blocks import _Block, _fragment
from kb.extract.page import _anchor_candidates, _Page, extract
from kb.extract.tree import HEADINGS, _attr, _clean, _is_text, _text
from kb.models import Article, Section

__all__ = ["extract_faqs"]


# ------------------------------------------------------------------------------------------------- FAQs

def extract_faqs(html: str | bytes, url: str) -> list[Article]:
    """Question/answer pairs (FAQPage JSON-LD, <details> accordions, question headings) as kind="faq"."""
    page = _Page(html, url)
    site = page.host
    seen: set[str] = set()
    pairs: list[tuple[str, str, str]] = []

    def add(question: str, answer: str, anchor: str) -> None:
        question, answer = _clean(question), answer.strip()
        key = re.sub(r"\W+", " ", question).strip().lower()
        if not question or not answer or key in seen:
            return
        seen.add(key)
        pairs.append((question, answer, anchor))

    faq_objects = page.ld_objects({"faqpage"})
    anchors = _question_anchors(page.soup) if faq_objects else {}
    for obj in faq_objects:
        entities = obj.get("mainEntity") or []
        for q in entities if isinstance(entities, list) else [entities]:
            if not isinstance(q, dict):
                continue
            question = q.get("name") or q.get("text") or ""
            accepted = q.get("acceptedAnswer") or q.get("suggestedAnswer") or {}
            if isinstance(accepted, list):
                accepted = accepted[0] if accepted else {}
            answer = accepted.get("text", "") if isinstance(accepted, dict) else str(accepted)
            if isinstance(question, str) and isinstance(answer, str):
                add(question, _html_to_text(answer), anchors.get(_key(question), ""))
    for details in page.soup.find_all("details"):
        summary = details.find("summary")
        if not isinstance(summary, Tag):
            continue
        question = _text(summary)
        parts = [_text(c) if isinstance(c, Tag) else _clean(str(c)) for c in details.children
                 if c is not summary and (isinstance(c, Tag) or _is_text(c))]
        answer = "\n\n".join(p for p in parts if p)
        anchor = _attr(details, "id") or _attr(summary, "id")
        add(question, answer, anchor or anchors.get(_key(question), ""))
    try:
        article = extract(page.text, url)
    except SkipPage:
        article = None
    if article is not None:
        for section in article.sections:
            if section.heading.rstrip().endswith("?") and section.text:
                add(section.heading, section.text, section.anchor)
    return [
        Article(url=url, title=q, text=a, sections=[Section(heading=q, anchor=anchor, text=a, level=2)],
                canonical=page.canonical, site=site, lang=page.lang, kind="faq")
        for q, a, anchor in pairs
    ]


def _key(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _question_anchors(soup: BeautifulSoup) -> dict[str, str]:
    """Question text -> id of the element showing it, so JSON-LD answers can deep-link."""
    found: dict[str, str] = {}
    for el in soup.find_all(list(HEADINGS) + ["summary", "dt", "button", "div", "span", "p"]):
        text = _text(el)
        if not text.endswith("?") or len(text) > 300:
            continue
        anchor = next((c for c in _anchor_candidates(el) if c), "")
        if not anchor and el.parent is not None and el.parent.name == "details":
            anchor = _attr(el.parent, "id")
        if anchor:
            found.setdefault(_key(text), anchor)
    return found


def _fragment_blocks(fragment: str) -> list[_Block]:
    """Blocks of an HTML or plain-text fragment (JSON-LD answers and article bodies carry either)."""
    return _fragment(fragment)[0]


def _html_to_text(fragment: str) -> str:
    return "\n\n".join(b.text for b in _fragment_blocks(fragment))
