"""Build a PostgreSQL search generation from any Store: kb's document mapping and analyzers, rows for COPY.

Each primary article becomes kb.schema's document (`article_document`), analysed with the same analyzers the
Whoosh index uses (kb.vocab), so VBeam/V-Beam and protected stems behave the same on both backends. The rows,
term-major postings (what BM25F needs) and unstemmed word counts go to kb.store.postgres_search, which loads,
indexes and swaps the generation in. Field lengths are rounded to Whoosh's one-byte lengths so scores agree.

`kb update` (and `kb check --repair`) change the current generation in place instead, as kb.index does for
Whoosh: the changed articles are analysed the same way and kb.store.postgres_search.GenerationUpdate applies
them in one transaction; a large change set (REBUILD_SHARE) or a generation of another analysis is rebuilt.
Every writer here holds the database's writer lock (`writer_lock`), so two hosts never write at once.
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Iterator

from whoosh.util.numeric import byte_to_length, length_to_byte

from kb.clock import utc_iso
from kb.errors import KBError
from kb.models import Article
from kb.schema import SCHEMA_VERSION, article_document, subindex_for
from kb.store import Store
from kb.store.postgres_search import (
    STAT_FIELDS,
    DocRow,
    GenerationUpdate,
    GenerationWriter,
    generation_facts,
    indexed_rows,
    writer_lock,
)
from kb.vocab import plain_analyzer, text_analyzer

log = logging.getLogger(__name__)

#: tsvector weight per weighted kb field (title > headings > tags > body); the lead has its own tsvector.
WEIGHT = {"title": "A", "headings": "B", "tagtext": "C", "body": "D"}
LENGTH_OF = {"A": "title", "B": "headings", "C": "tagtext", "D": "body", "L": "lead"}
MAX_POS = 16383  # PostgreSQL's largest tsvector position
MAX_POSITIONS = 256  # positions PostgreSQL keeps per lexeme
FIELD_GAP = 1  # position gap between fields: no phrase spans two fields
#: Changes whenever a generation's tables or analysis change: `update` rebuilds a generation of another analysis.
#: "pg 2": doc rows keep exact field lengths and unstemmed words, what an in-place update needs.
ANALYSIS = f"kb schema {SCHEMA_VERSION} pg 2"
#: `update` rebuilds the generation instead of changing it in place when more than this share of it changed.
REBUILD_SHARE = 0.20

Progress = Callable[[int, int], None]


def quantise(length: int) -> int:
    """Whoosh keeps field lengths as one byte; the same rounding gives the same BM25F scores."""
    return byte_to_length(length_to_byte(length))


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _tokens(text: str) -> list[str]:
    return [t.text for t in text_analyzer()(text, positions=True) if t.text] if text else []


def _tsvector(positions: dict[str, list[tuple[int, str]]]) -> str:
    """A tsvector literal; positions past MAX_POS reuse free slots of the same lexeme so frequencies survive."""
    parts = []
    for lexeme, plist in positions.items():
        plist = plist[:MAX_POSITIONS]
        if plist[-1][0] > MAX_POS:
            used = {p for p, _ in plist if p <= MAX_POS}
            spare = (p for p in range(MAX_POS, 0, -1) if p not in used)
            plist = sorted((p, w) if p <= MAX_POS else (next(spare), w) for p, w in plist)
        parts.append(_quote(lexeme) + ":" + ",".join(f"{p}{w}" for p, w in plist))
    return " ".join(parts)


class _Analysed:
    """One document: its row for COPY, its postings (term, field letter, tf), its unstemmed words."""

    def __init__(self, article: Article) -> None:
        doc = article_document(article)
        positions: dict[str, list[tuple[int, str]]] = defaultdict(list)
        lengths: dict[str, int] = {}
        pos = 1
        for name, w in WEIGHT.items():
            toks = _tokens(doc.get(name, ""))
            lengths[name] = len(toks)
            for i, tok in enumerate(toks):
                positions[tok].append((pos + i, w))
            pos += len(toks) + FIELD_GAP
        lead = Counter(_tokens(doc.get("lead", "")))
        lengths["lead"] = sum(lead.values())
        lengths["all"] = sum(lengths[f] for f in WEIGHT)
        self.exact = lengths  # Whoosh's average field length sums exact lengths
        self.lengths = {k: quantise(v) for k, v in lengths.items()}
        lead_tsv = " ".join(_quote(t) + ":" + ",".join(str(i + 1) for i in range(min(n, MAX_POSITIONS)))
                            for t, n in lead.items())
        self.id = int(doc["id"])
        self.subindex = subindex_for(doc["audience"])
        self.words = {t.text for t in plain_analyzer()(doc.get("spell", "")) if t.text}
        self.postings = [(t, w, n) for t, plist in positions.items() for w, n in Counter(w for _, w in plist).items()]
        self.postings += [(t, "L", n) for t, n in lead.items()]
        published = doc.get("published")
        L = self.lengths
        self.row = DocRow(values=(
            self.id, self.subindex, doc["audience"], published, doc.get("pubdate", ""), doc.get("year"),
            doc.get("title_key", ""), doc["url"], doc["title"], doc["site"], doc["kind"],
            [t for t in doc["tags"].split(",") if t], [c for c in doc["categories"].split(",") if c],
            doc.get("sources", "[]"), doc["sections"], L["title"], L["headings"], L["tagtext"], L["body"],
            L["lead"], L["all"], _tsvector(positions), lead_tsv, doc["hash"], [lengths[f] for f in STAT_FIELDS],
            sorted(self.words)), subindex=self.subindex)


class _Postings:
    """Term-major postings of a whole generation in compact arrays, written once after the documents."""

    def __init__(self) -> None:
        self.lists: dict[tuple[str, str, str], tuple[array, array, array]] = {}

    def add(self, doc: _Analysed) -> None:
        for term, w, tf in doc.postings:
            key = (term, w, doc.subindex)
            lists = self.lists.get(key)
            if lists is None:
                lists = self.lists[key] = (array("i"), array("h"), array("i"))
            lists[0].append(doc.id)
            lists[1].append(min(tf, 32767))
            lists[2].append(doc.lengths[LENGTH_OF[w]])

    def rows(self) -> Iterator[tuple[str, str, str, list[int], list[int], list[int]]]:
        for (term, w, sub), (ids, tfs, lens) in self.lists.items():
            yield term, w, sub, ids.tolist(), tfs.tolist(), lens.tolist()


def _articles(store: Store, chunk: int = 1000) -> Iterator[Article]:
    """Every primary article (near-duplicates listed in their primary's `sources`), as kb.index reads them."""
    yield from _with_sources(store, store.primary_ids(), chunk)


def _with_sources(store: Store, ids: list[int], chunk: int = 1000) -> Iterator[Article]:
    """These articles, each with its near-duplicate group's `sources` (kb.index._with_sources)."""
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        sources = store.group_sources(part)
        for article in store.iter_articles(part):
            article.sources = sources.get(int(article.id or 0), [])
            yield article


def build_from_articles(url: str, articles: Iterable[Article], *, progress: Progress | None = None,
                        total: int = 0, seq: int = 0) -> dict[str, int]:
    """Analyse `articles` into a new generation at `url` and make it current; documents per sub-index.

    `seq` is the store's change sequence the articles were read at: `update` rebuilds once the store is past it.
    """
    start = time.perf_counter()
    postings = _Postings()
    words: dict[str, Counter[str]] = {"public": Counter(), "all": Counter()}
    fields: dict[str, Counter[str]] = {"public": Counter(), "all": Counter()}
    docs = Counter[str]()

    def rows() -> Iterator[DocRow]:
        for n, article in enumerate(articles, 1):
            doc = _Analysed(article)
            postings.add(doc)
            for scope in ("public", "all") if doc.subindex == "public" else ("all",):
                words[scope].update(doc.words)
                fields[scope].update(doc.exact)
                docs[scope] += 1
            if progress and n % 200 == 0:
                progress(n, max(total, n))
            yield doc.row

    with GenerationWriter(url) as writer:
        writer.begin()
        counts = writer.add_documents(rows())
        writer.add_postings(postings.rows())
        writer.add_words({scope: dict(c) for scope, c in words.items()})
        writer.add_field_stats({scope: {f: (docs[scope], total) for f, total in fields[scope].items()}
                                for scope in fields})
        writer.finish(json.dumps({"analysis": ANALYSIS, "seq": seq, "built": utc_iso()}))
    elapsed = time.perf_counter() - start
    done = sum(counts.values())
    log.info("search generation built on PostgreSQL: %d documents in %.1fs (%.0f/s)", done, elapsed,
             done / elapsed if elapsed else 0.0)
    return counts


def build(store: Store, url: str, *, progress: Progress | None = None) -> dict[str, Any]:
    """Build the PostgreSQL search generation of every primary article in `store` (any backend) at `url`."""
    seq = store.last_change()  # changes after this make the next `update` rebuild
    return build_from_articles(url, _articles(store), progress=progress, total=store.count_primaries(), seq=seq)


def notes(facts: dict[str, Any] | None) -> dict[str, Any]:
    """The build notes of a generation (analysis, store sequence, build time); {} when unreadable or absent."""
    try:
        found = json.loads(facts["analysis"]) if facts else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def rebuild(store: Store, url: str, *, progress: Progress | None = None, max_loss: float = 0.10,
            force: bool = False) -> int:
    """A full generation swapped in (`kb reindex`); refuses, unless `force`, to lose more than `max_loss` of it."""
    with writer_lock(url, "reindex"):
        facts = generation_facts(url)
        old = sum(facts["subindexes"].values()) if facts else 0
        new = store.count_primaries()
        if old and new < (1.0 - max_loss) * old and not force:
            raise KBError(f"The new index would have {new} documents instead of {old} (more than {max_loss:.0%} "
                          "fewer); keeping the current index.",
                          "Check the store (`kb stats`); if the loss is intended, use --force.")
        return sum(build(store, url, progress=progress).values())


def update(store: Store, url: str) -> tuple[int, int]:
    """`kb update` on PostgreSQL: apply the store's changes since the generation's sequence to it, in place.

    Returns (articles indexed, documents removed) as kb.index.update counts them. The first build, one after an
    analysis change, or one where more than REBUILD_SHARE of the documents changed builds a whole generation
    instead (and counts every document, or the changes). Readers see the old state or the new one, never a mix.
    """
    with writer_lock(url, "update"):
        facts = generation_facts(url)
        meta = notes(facts)
        if facts is None or meta.get("analysis") != ANALYSIS:
            log.info("search generation %s: building a whole new one (%s)", facts and facts["generation"],
                     "none yet" if facts is None else "built by another analysis")
            return sum(build(store, url).values()), 0
        upserts, deletes, newest = store.changes_since(int(meta.get("seq", 0)))
        if not upserts and not deletes:
            return 0, 0
        return _apply_or_rebuild(store, url, facts, meta, upserts, deletes, newest)


def reindex_ids(store: Store, url: str, *, upsert: set[int], delete: set[int]) -> tuple[int, int]:
    """(Re)index exactly these article ids in the current generation (`kb check --repair`); ids gone from the
    store are removed. The generation's store sequence stays as it was, as kb.index.reindex_ids keeps it."""
    with writer_lock(url, "reindex"):
        facts = generation_facts(url)
        meta = notes(facts)
        if facts is None or meta.get("analysis") != ANALYSIS:
            log.info("no current search generation of this analysis: building a whole new one")
            return sum(build(store, url).values()), 0
        return _apply_or_rebuild(store, url, facts, meta, set(upsert), set(delete), None)


def _apply_or_rebuild(store: Store, url: str, facts: dict[str, Any], meta: dict[str, Any], upserts: set[int],
                      deletes: set[int], seq: int | None) -> tuple[int, int]:
    """The changes in place, or a whole new generation when they touch more than REBUILD_SHARE of it."""
    docs = sum(facts["subindexes"].values())
    changed = len(upserts | deletes)
    if changed > REBUILD_SHARE * docs:
        log.info("%d of %d documents changed in search generation %d (more than %.0f%%): rebuilding it whole",
                 changed, docs, facts["generation"], REBUILD_SHARE * 100)
        build(store, url)
        return len(upserts), len(deletes)
    return _apply(store, url, int(facts["generation"]), meta, upserts, deletes, seq)


def _apply(store: Store, url: str, gen: int, meta: dict[str, Any], upsert: set[int], delete: set[int],
           seq: int | None) -> tuple[int, int]:
    """kb.index._apply on PostgreSQL: each id leaves every sub-index and is written again into its audience's
    one with its group's sources (when still a stored primary); deletes and ids no longer found are removed.

    One transaction: a record that leaves the public sub-index leaves every 'public' statistic in the same
    commit that moves it, and `seq` (when given) is recorded with the changes, so a crash replays, never skips.
    """
    start = time.perf_counter()
    postings = _Postings()
    found: set[int] = set()
    live = sorted(set(upsert) - store.duplicate_ids(upsert))  # a duplicate's document is removed below

    def rows() -> Iterator[DocRow]:
        for article in _with_sources(store, live):
            doc = _Analysed(article)
            postings.add(doc)
            found.add(doc.id)
            yield doc.row

    if seq is not None:
        meta = {**meta, "seq": max(int(meta.get("seq", 0)), seq)}
    meta = {**meta, "updated": utc_iso()}
    with GenerationUpdate(url) as writer:
        writer.begin(gen)
        writer.add_documents(rows())
        writer.add_postings(postings.rows())
        gone = writer.finish(set(upsert) | set(delete), json.dumps(meta))
    deleted = sum(1 for article_id in gone if article_id not in found)
    log.info("search generation %d updated in place: %d indexed, %d removed in %.2fs", gen, len(found), deleted,
             time.perf_counter() - start)
    return len(found), deleted


def indexed_hashes(url: str) -> dict[int, str]:
    """Article id -> content hash of every document in the current generation (`kb check`), as kb.index's:
    a document in the wrong sub-index for its audience, or in both, has an empty hash."""
    out: dict[int, str] = {}
    for article_id, sub, audience, digest in indexed_rows(url):
        out[article_id] = "" if article_id in out or subindex_for(audience) != sub else digest
    return out
