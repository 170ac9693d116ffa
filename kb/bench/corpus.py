"""A realistic, reproducible benchmark corpus built from real consumer-health text.

Synthetic lorem-ipsum corpora flatter a search engine: their vocabulary is tiny and
their term statistics are uniform. Here every sentence comes from the MedQuAD
development collection (NIH answer texts), and each article keeps to one topic the
way real pages do, so posting lists, phrase positions and highlight work look like
production. The same seed always yields the same articles and queries.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from kb.errors import KBError
from kb.models import Article, Section
from kb.text import slugify

log = logging.getLogger(__name__)

COLLECTION = Path("medquad") / "dev" / "general" / "titled"
SKIN_COLLECTION = Path("medquad") / "dev" / "skin" / "titled"

#: Bumped whenever generation changes, so stored results name the corpus they came from.
CORPUS_VERSION = 1

SITES: tuple[tuple[str, int], ...] = (
    ("derm.example.org", 40), ("skinclinic.example.com", 25), ("aad.example.net", 15),
    ("laser-center.example.org", 10), ("kids-skin.example.org", 6), ("research.example.edu", 4),
)
#: Zipf-like weights give tag filters a realistic spread of selectivity.
TAGS: tuple[tuple[str, int], ...] = (
    ("skin", 30), ("treatment", 22), ("genetics", 18), ("children", 14), ("acne", 10), ("laser", 9),
    ("psoriasis", 8), ("eczema", 7), ("skin-cancer", 7), ("injectables", 5), ("hair", 5), ("nails", 4),
    ("allergy", 4), ("wound-care", 3), ("clinical-trials", 3), ("cosmetic", 3), ("rosacea", 2),
    ("pigmentation", 2), ("infection", 2), ("surgery", 2),
)
CATEGORIES = ("Conditions", "Treatments", "Procedures", "Research", "Patient guides")
AUTHORS = ("Dr. A. Moreau", "Dr. K. Osei", "Dr. L. Chen", "Dr. M. Rossi", "Nurse J. Patel", "Editorial team")
HEADINGS = (
    "Overview", "Symptoms", "Causes", "Risk factors", "Diagnosis", "Treatment options", "Outlook",
    "Prevention", "Living with {focus}", "When to see a dermatologist", "Research and clinical trials",
    "Frequently asked questions", "How common is {focus}?", "Genetics of {focus}", "Caring for your skin",
)
#: Lay, brand and joined-form queries the medical vocabulary must expand; plain engines take them literally.
SYNONYM_QUERIES = (
    "zits", "botox sweating", "accutane", "pimples", "vbeam redness", "dysport", "sweaty palms",
    "hives", "co2 laser", "micro-botox",
)
#: Broad one-word queries whose page 5 exercises deep paging and total counting.
BROAD_QUERIES = ("skin", "disease", "treatment", "genetic", "symptoms", "children", "risk", "cells")
SECOND_TERMS = ("symptoms", "treatment", "causes", "diagnosis", "genetic", "risk", "children", "inherited",
                "skin", "therapy")
QUERY_TYPES = ("single", "two_terms", "phrase", "synonym", "tag_filter", "misspelled", "page5", "question")
STOPWORDS = frozenset(
    "a an and are as at be by for from has have how i in is it its of on or that the this to was what "
    "which who will with do does can my me you your should about there their they these those what's "
    "syndrome disease disorder type".split()
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"])")
_WS = re.compile(r"\s+")


def default_eval_dir() -> Path:
    """The shared eval data sits next to the repository (../shared/eval from the repo root)."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "eval"


def resolve_eval_dir(eval_dir: str | os.PathLike[str] | None = None) -> Path:
    """--eval-dir, else KB_EVAL_DIR, else ../shared/eval; a clear error when the collection is missing."""
    chosen = eval_dir or os.environ.get("KB_EVAL_DIR") or default_eval_dir()
    path = Path(chosen).expanduser()
    docs = path / COLLECTION / "docs.jsonl.gz"
    if not docs.is_file():
        raise KBError(
            f"Benchmark text not found: {docs} does not exist.",
            "Point --eval-dir (or KB_EVAL_DIR) at the shared eval directory that holds "
            "medquad/dev/general/titled/docs.jsonl.gz (normally ../shared/eval from the repository root).",
        )
    return path


@dataclass
class Topic:
    """All sentences and question titles about one focus (e.g. one condition)."""

    focus: str
    sentences: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    skin: bool = False


@dataclass
class SentencePool:
    """Real sentences grouped by topic, plus the collection's questions for query sampling."""

    topics: list[Topic]
    sentences: list[str]
    questions: list[dict[str, str]]  # {"query", "focus"}
    skin_topics: list[int]

    @property
    def word_count(self) -> int:
        return sum(len(s.split()) for s in self.sentences)


def split_sentences(body: str) -> list[str]:
    """Whitespace-normalised sentences of 4 to 60 words; list bullets and fragments are dropped."""
    text = _WS.sub(" ", body).strip()
    out = []
    for raw in _SENTENCE_END.split(text):
        sentence = raw.strip(" -")
        words = len(sentence.split())
        if 4 <= words <= 60 and sentence[-1:] in ".!?" and " - " not in sentence:
            out.append(sentence)
    return out


@lru_cache(maxsize=4)
def load_pool(eval_dir: Path) -> SentencePool:
    """Read the collection once per process; file order keeps everything deterministic."""
    docs_path = eval_dir / COLLECTION / "docs.jsonl.gz"
    skin_ids: set[str] = set()
    skin_path = eval_dir / SKIN_COLLECTION / "docs.jsonl.gz"
    if skin_path.is_file():
        with gzip.open(skin_path, "rt", encoding="utf-8") as fh:
            skin_ids = {json.loads(line)["id"] for line in fh if line.strip()}
    by_focus: dict[str, Topic] = {}
    doc_focus: dict[str, str] = {}
    seen: set[str] = set()
    all_sentences: list[str] = []
    try:
        with gzip.open(docs_path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                doc = json.loads(line)
                focus = _WS.sub(" ", doc.get("focus") or doc.get("title") or "").strip() or "General health"
                topic = by_focus.setdefault(focus, Topic(focus))
                topic.skin = topic.skin or doc["id"] in skin_ids
                doc_focus[doc["id"]] = focus
                title = _WS.sub(" ", doc.get("title", "")).replace(" ?", "?").strip()
                if title:
                    topic.titles.append(title)
                for sentence in split_sentences(doc.get("body", "")):
                    topic.sentences.append(sentence)
                    if sentence not in seen:
                        seen.add(sentence)
                        all_sentences.append(sentence)
    except (OSError, EOFError, json.JSONDecodeError, KeyError) as exc:
        raise KBError(f"Cannot read {docs_path}: {exc}", "Restore the shared eval data (see its README).") from None
    topics = [t for t in by_focus.values() if t.sentences]
    questions: list[dict[str, str]] = []
    queries_path = docs_path.parent / "queries.jsonl"
    if queries_path.is_file():
        with open(queries_path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    docid = row["qid"][2:] if row["qid"].startswith("Q-") else row["qid"]
                    questions.append({"query": _WS.sub(" ", row["query"]).strip(),
                                      "focus": doc_focus.get(docid, "")})
    if not topics or not questions:
        raise KBError(f"{docs_path.parent} holds no usable documents or queries.",
                      "Restore the shared eval data (see its README).")
    log.info("sentence pool: %d topics, %d sentences, %d questions", len(topics), len(all_sentences), len(questions))
    return SentencePool(topics=topics, sentences=all_sentences, questions=questions,
                        skin_topics=[i for i, t in enumerate(topics) if t.skin])


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...], k: int = 1) -> list[str]:
    """k distinct picks by weight (sampling without replacement)."""
    names = [n for n, _ in table]
    weights = [w for _, w in table]
    picked: list[str] = []
    while len(picked) < min(k, len(names)):
        name = rng.choices(names, weights)[0]
        if name not in picked:
            picked.append(name)
    return picked


def _article_rng(seed: int, number: int, variant: int) -> random.Random:
    """One RNG per article so article i does not depend on how many came before (or on the run size)."""
    return random.Random(f"kb-bench:{CORPUS_VERSION}:{seed}:{number}:{variant}")


def make_article(pool: SentencePool, number: int, seed: int = 0, *, variant: int = 0,
                 words: int = 600) -> Article:
    """Article `number` of the corpus; `variant` > 0 gives an edited version at the same URL."""
    rng = _article_rng(seed, number, variant)
    url_rng = _article_rng(seed, number, 0)  # the URL, site and dates survive edits
    if pool.skin_topics and url_rng.random() < 0.35:
        topic = pool.topics[url_rng.choice(pool.skin_topics)]
    else:
        topic = pool.topics[url_rng.randrange(len(pool.topics))]
    focus = topic.focus
    target = max(200, int(rng.gauss(words + 15, words * 0.08)))

    def sentence() -> str:
        # Mostly on-topic, some general text, as real articles drift.
        if rng.random() < 0.65:
            return rng.choice(topic.sentences)
        return rng.choice(pool.sentences)

    def paragraph(budget: int) -> tuple[str, int]:
        parts, count = [], 0
        for _ in range(rng.randint(2, 5)):
            s = sentence()
            parts.append(s)
            count += len(s.split())
            if count >= budget:
                break
        return " ".join(parts), count

    intro, total = paragraph(50)
    headings = rng.sample(HEADINGS, k=rng.randint(4, 6))
    sections: list[Section] = []
    per_section = max(40, (target - total) // len(headings) - 15)
    for position, heading in enumerate(headings):
        heading = heading.format(focus=focus)
        paragraphs: list[str] = []
        count = 0
        while count < per_section and total + count < target:
            text, n = paragraph(min(per_section - count, 80))
            paragraphs.append(text)
            count += n
        total += count
        anchor = slugify(heading) or f"section-{position + 1}"
        sections.append(Section(heading=heading, anchor=anchor, text="\n\n".join(paragraphs), level=2))
    body = "\n\n".join([intro] + [f"{s.heading}\n\n{s.text}" for s in sections])

    if topic.titles and url_rng.random() < 0.5:
        title = url_rng.choice(topic.titles)
    else:
        title = url_rng.choice([focus, f"{focus}: a guide for patients", f"Understanding {focus}",
                                f"{focus} treatment and care"])
    site = _weighted(url_rng, SITES)[0]
    published = date(2005, 1, 1) + timedelta(days=url_rng.randrange(20 * 365))
    modified = None
    if variant or url_rng.random() < 0.4:
        modified = (published + timedelta(days=rng.randrange(1, 3 * 365) + 30 * variant)).isoformat()
    tags = _weighted(url_rng, TAGS, k=url_rng.randint(1, 4))
    return Article(
        url=f"https://{site}/articles/{number:06d}-{slugify(focus)[:60]}",
        title=title,
        text=body,
        sections=sections,
        description=intro.split(". ")[0][:300],
        author=url_rng.choice(AUTHORS),
        published=published.isoformat(),
        modified=modified,
        categories=[url_rng.choice(CATEGORIES)],
        tags=sorted(tags),
        site=site,
        audience="staff" if url_rng.random() < 0.08 else "public",
        lang="en",
        kind="faq" if url_rng.random() < 0.05 else "article",
    )


def iter_corpus(pool: SentencePool, count: int, seed: int = 0) -> Iterator[Article]:
    for number in range(count):
        yield make_article(pool, number, seed)


def _misspell(word: str, rng: random.Random) -> str:
    """One realistic typing error (drop, double, swap or wrong vowel) in the middle of the word."""
    i = rng.randrange(2, len(word) - 2)
    kind = rng.randrange(4)
    if kind == 0:
        out = word[:i] + word[i + 1:]
    elif kind == 1:
        out = word[:i] + word[i] + word[i:]
    elif kind == 2:
        out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    else:
        vowels = [j for j in range(2, len(word) - 1) if word[j] in "aeiou"]
        j = rng.choice(vowels) if vowels else i
        out = word[:j] + rng.choice([v for v in "aeiou" if v != word[j]]) + word[j + 1:]
    return out if out != word else word[:i] + word[i + 1:]


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9]+", text.lower()) if w not in STOPWORDS and len(w) >= 4]


def make_queries(pool: SentencePool, per_type: int, seed: int = 0) -> list[dict[str, Any]]:
    """A fixed, seeded mix of query types drawn from the collection's questions and topics.

    Each item is {"type", "q", "page", "filters"}; the same list runs against kb and both baselines.
    """
    rng = random.Random(f"kb-bench-queries:{CORPUS_VERSION}:{seed}")
    questions = [q for q in pool.questions if q["focus"]]
    focus_words = sorted({w for q in questions for w in _content_words(q["focus"]) if w.isalpha()})
    long_words = [w for w in focus_words if len(w) >= 7]
    phrases = sorted({q["focus"] for q in questions if 2 <= len(q["focus"].split()) <= 4
                      and all(w.isalpha() for w in q["focus"].split())})
    out: list[dict[str, Any]] = []
    for i in range(per_type):
        q = rng.choice(questions)
        words = _content_words(q["focus"]) or focus_words
        single = rng.choice(words)
        out.append({"type": "single", "q": single, "page": 1, "filters": None})
        out.append({"type": "two_terms", "q": f"{rng.choice(words)} {rng.choice(SECOND_TERMS)}", "page": 1,
                    "filters": None})
        out.append({"type": "phrase", "q": f'"{rng.choice(phrases).lower()}"', "page": 1, "filters": None})
        out.append({"type": "synonym", "q": SYNONYM_QUERIES[i % len(SYNONYM_QUERIES)], "page": 1, "filters": None})
        out.append({"type": "tag_filter", "q": rng.choice((single, rng.choice(SECOND_TERMS))), "page": 1,
                    "filters": {"tag": [_weighted(rng, TAGS)[0]]}})
        word = rng.choice(long_words)
        out.append({"type": "misspelled", "q": _misspell(word, rng), "page": 1, "filters": None,
                    "intended": word})
        out.append({"type": "page5", "q": BROAD_QUERIES[i % len(BROAD_QUERIES)], "page": 5, "filters": None})
        out.append({"type": "question", "q": rng.choice(pool.questions)["query"], "page": 1, "filters": None})
    return out
