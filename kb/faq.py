"""The patient FAQ: question/answer records (kind="faq") grouped by topic for the /faq page.

FAQ records are ordinary articles in the store, made by the pipeline from FAQ pages
(`kb.extract.extract_faqs`), one per question, carrying the audience of their page. Listing
them asks the store with the reader's audiences, which it applies inside its query like every
other read the web layer makes, so a staff question never reaches the public list.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from kb.store import Store
from kb.text import slugify

log = logging.getLogger(__name__)

OTHER_TOPIC = "Other questions"
MAX_ENTRIES = 2000


@dataclass
class FaqEntry:
    id: int
    question: str
    answer: str
    url: str
    site: str
    audience: str


@dataclass
class FaqTopic:
    name: str
    anchor: str
    entries: list[FaqEntry] = field(default_factory=list)


def slug(text: str) -> str:
    """An id-safe anchor for a topic heading ("Laser & light" -> "topic-laser-light")."""
    return "topic-" + slugify(text, default="other")


# Words of category names too general to file a question under ("Skin Care", "Skin Conditions").
GENERIC_WORDS = frozenset("skin care condition conditions treatment treatments general other news blog "
                          "procedure procedures".split())


def _stems(text: str) -> set[str]:
    """Lower-case words of four letters or more, with a plural s dropped ("Lasers" and "laser" meet)."""
    out = set()
    for word in re.findall(r"[^\W\d_]{4,}", text.casefold()):
        out.add(word[:-1] if word.endswith("s") and not word.endswith("ss") else word)
    return out


def guess_topic(question: str, categories: list[str]) -> str | None:
    """The first of `categories` (most used first) a question names, for FAQ pages without categories."""
    words = _stems(question)
    for category in categories:
        if (_stems(category) - GENERIC_WORDS) & words:
            return category
    return None


def faq_topics(store: Store, audiences: tuple[str, ...], *, limit: int = MAX_ENTRIES) -> list[FaqTopic]:
    """Visible FAQ entries by topic: their page's first category, else a visible category the question
    names ("laser" files under "Lasers & Light"), else "Other questions"; topics A–Z, that one last."""
    rows = store.faq_entries(audiences, limit=limit)
    known = [name for name, _ in store.topic_counts("categories", audiences, limit=200)] if rows else []
    topics: dict[str, FaqTopic] = {}
    used: set[str] = set()
    for row in rows:
        categories = [c for c in row["categories"] if isinstance(c, str) and c.strip()]
        name = categories[0].strip() if categories else (guess_topic(row["title"], known) or OTHER_TOPIC)
        key = name.casefold()
        topic = topics.get(key)
        if topic is None:
            anchor = slug(name)
            while anchor in used:
                anchor += "-x"
            used.add(anchor)
            topic = topics[key] = FaqTopic(name, anchor)
        topic.entries.append(FaqEntry(id=row["id"], question=row["title"], answer=row["text"], url=row["url"],
                                      site=row["site"], audience=row["audience"]))
    return sorted(topics.values(), key=lambda t: (t.name == OTHER_TOPIC, t.name.casefold()))


def faq_count(store: Store, audiences: tuple[str, ...]) -> int:
    return store.faq_count(audiences)
