"""Search: query parsing, ranking, snippets, deep links, facets and suggestions; the only index reader.

One `Searcher` per process serves every thread. It opens the generation CURRENT points at and,
per request, borrows a Whoosh searcher from a small pool tied to that generation and commit.
When CURRENT or the commit changes it opens the new state and lets the old one drain; it never
calls `searcher.refresh()` (wrong results in every Whoosh fork, see DESIGN.md).

Audiences are separate indexes, not a filter over one (see kb/index.py): each generation holds a
public and a staff sub-index, and the searcher keeps one state per set of sub-indexes a request
may read (`kb.index.subindexes_for`). An anonymous request opens the public sub-index alone, so
its BM25 statistics, facet labels and counts, suggestions, "Did you mean" and its timing are
exactly those of a kb that never held staff material. A staff request reads both through one
Whoosh MultiReader over the leaf (segment) readers of the two, which gives one document
numbering and combined statistics; everything below works per leaf reader with its docnum offset,
as it does for a multi-segment index. The two states share nothing: each has its own caches.

Per-request work is kept small: the matching document set is computed with set algebra over
cached posting lists (Python sets run in C), facets are counted from per-document value tables
built once per index state, and snippets come from one regular expression over the stored
(compressed) body instead of re-analysing it. Posting lists are read a whole Whoosh block at a
time (`_term_blocks`), ranking sums cached per-term BM25F arrays instead of walking Whoosh's
matcher tree (`_score`, equal scores), phrases decode positions only where candidates are
(`_phrase_matches`), and spelling corrections are cached per index state and audience and
bounded per query (`MAX_CORRECTED_WORDS` words, `MAX_CORRECTION_CANDIDATES` candidates each).
"""

from __future__ import annotations

import heapq
import html
import json
import logging
import math
import os
import re
import threading
import weakref
import zlib
from array import array
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, islice
from pathlib import Path
from pickle import loads  # noqa: S403 - Whoosh's own posting format; the index is trusted (DESIGN.md)
from typing import Any, Callable, Iterable, Iterator

from whoosh import formats
from whoosh import query as wq
from whoosh.codec.whoosh3 import LENGTHS_COLUMN
from whoosh.filedb.filestore import FileStorage
from whoosh.idsets import DocIdSet
from whoosh.reading import EmptyReader, MultiReader, TermNotFound
from whoosh.scoring import BM25F
from whoosh.searching import Searcher as WhooshSearcher
from whoosh.support.levenshtein import distance
from whoosh.util.numeric import byte_to_length, length_to_byte

from kb import querylang
from kb.errors import IndexDamaged, IndexUnavailable
from kb.indexcheck import READ_ERRORS, problems as index_problems
from kb.index import (POINTER, current_generation, is_legacy, named_generation, section_at, subindex_dirs,
                      subindexes_for, title_key)
from kb.models import Hit, Results
from kb.querylang import Either, Group, Not, Node, Parsed, Phrase, Word

log = logging.getLogger(__name__)

#: Query-time field weights: title > headings > tags > body. The lead (opening words) is searched
#: for question-intent words only (INTENT_FIELDS): measured on the MedQuAD dev sets, it helps there
#: and hurts as a field for every word.
FIELD_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("title", 3.0), ("headings", 2.0), ("tagtext", 1.5), ("body", 1.0),
)
INTENT_WEIGHT = 0.6  # question-intent words (querylang.QUESTION_INTENTS): ranking only
EXACT_TITLE_BOOST = 30.0  # the whole query is the whole title
#: The whole query as a phrase, per field: bonus = weight x sum of the terms' idf, added when re-ranking.
PHRASE_BONUS = (("title", 3.0), ("headings", 1.5), ("body", 1.0))
#: Short keyword queries mean "all of these": score x (share of query words matched) ** COORD_POWER.
#: Longer (question-like) queries are left alone: measured on MedQuAD, coordination over every word
#: of a question costs 0.02-0.04 nDCG@10.
COORD_POWER = 1.0
COORD_MAX_WORDS = 3
PHRASE_RERANK = 30  # best candidates checked for the whole-query phrase
RERANK_DEPTH = 100  # candidates scored exactly / re-ranked with the phrase bonus
FREQUENT_SHARE = 0.02  # terms in more than this share of documents only score candidates ...
FREQUENT_MIN_DF = 500  # ... and in more than this many documents
EXPANSION_WEIGHT = 1.0  # times the vocabulary's own weight
EXPANSION_FIELDS: tuple[tuple[str, float], ...] = (("title", 3.0), ("headings", 2.0), ("body", 1.0))
MAX_EXPANSIONS = 4  # per vocabulary entry found in the query
INTENT_FIELDS: tuple[tuple[str, float], ...] = (("lead", 1.0), ("body", 1.0))
SNIPPET_CHARS = 200
MAX_PER_PAGE = 100
FACET_FIELDS = (("category", "categories"), ("tag", "tags"), ("site", "site"), ("year", "year"))
FACET_LIMIT = 10
FILTER_FIELDS = {"tag": "tags", "category": "categories", "site": "site", "year": "year"}
SUGGESTION_LIMIT = 3
RARE_DF = 2  # with few results, a word this rare may be a typo of a much commoner one
#: Posting lists kept as DocSets per index state, bounded by their bytes (at most N/8 each: 12 KB at
#: 100,000 documents; a rare term's set is smaller). A cold body word costs ~0.5 us per posting
#: (measured; Whoosh's block format unpickles positions with the ids), so a frequent word costs
#: 15-50 ms each time it drops out: 64 MB keeps ~5,000 full-size sets where a 2,048-entry cap kept
#: 25 MB whatever their size.
TERM_CACHE_BYTES = 64 * 1024 * 1024
DF_CACHE = 50_000
POOL_SIZE = 4  # concurrent searches per process (the GIL serialises the work anyway)
DEFAULT_AUDIENCES = ("public",)
#: BM25F parameters: Whoosh's defaults, which `_score` reproduces exactly.
BM25_B = 0.75
BM25_K1 = 1.2
SCORE_CACHE_BYTES = 24 * 1024 * 1024  # per-term score arrays kept per index state (12 bytes a posting)
CORRECTION_CACHE = 4096  # "Did you mean" candidates per word and audience, per index state
#: Spelling look-ups per query: only the first this many words that need one get it (in query order,
#: so the answer does not depend on what is cached). Each look-up walks the word list with a
#: Levenshtein automaton (~15 ms at 3,000 articles, more with the vocabulary), so a query of 30
#: unknown words used to cost 30 of them (~0.5 s) and held up every other request in the process.
MAX_CORRECTED_WORDS = 3
MAX_CORRECTION_CANDIDATES = 30  # index words within the edit distance examined per look-up
MAX_CORRECTION_CHARS = 30  # longer "words" (pasted codes, URLs) get no look-up


# -- vocabulary (optional: written by the analysis helper) --------------------------------------

def _load_vocabulary() -> Any | None:
    try:
        from kb.vocab import vocabulary
    except ImportError:
        log.warning("kb.vocab is not available: searching without synonym expansion")
        return None
    try:
        return vocabulary()
    except Exception:  # noqa: BLE001 - a broken vocabulary file must not take search down
        log.exception("could not load the vocabulary: searching without synonym expansion")
        return None


_vocab_lock = threading.Lock()
_vocab: list[Any] = []


def _vocabulary() -> Any | None:
    if not _vocab:
        with _vocab_lock:
            if not _vocab:
                _vocab.append(_load_vocabulary())
    return _vocab[0]


@lru_cache(maxsize=4096)
def _expansions(text: str) -> tuple[tuple[str, float], ...]:
    """Vocabulary expansions of `text` other than itself, (text, weight) with weight < 1."""
    vocab = _vocabulary()
    if vocab is None:
        return ()
    try:
        found = list(vocab.expand(text))
    except Exception:  # noqa: BLE001
        log.exception("vocabulary expansion failed for %r", text)
        return ()
    key = text.casefold()
    out = []
    for item in found:
        term, weight = (item, 0.5) if isinstance(item, str) else (item[0], float(item[1]))
        if term.casefold() != key and weight > 0:
            out.append((term, min(weight, 0.95)))
    return tuple(out)


@lru_cache(maxsize=8192)
def _is_clinical(word: str) -> bool:
    vocab = _vocabulary()
    if vocab is None:
        return False
    try:
        return bool(vocab.is_clinical(word))
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=1)
def _vocab_terms() -> tuple[tuple[str, str], ...]:
    """(casefolded, display) vocabulary terms, sorted for prefix lookups."""
    vocab = _vocabulary()
    if vocab is None:
        return ()
    try:
        terms = list(vocab.terms())
    except Exception:  # noqa: BLE001
        return ()
    return tuple(sorted({(t.casefold(), t) for t in terms if t}))


def _vocabulary_lookalikes(word: str, maxdist: int) -> list[tuple[str, int]]:
    """(one-word vocabulary term, edit distance) near `word`, same first letter; MAX_CORRECTION_CANDIDATES at most."""
    out: list[tuple[str, int]] = []
    for key, _display in _vocab_terms():
        if " " not in key and abs(len(key) - len(word)) <= maxdist and key[:1] == word[:1] and key != word:
            d = distance(key, word, limit=maxdist + 1)
            if d <= maxdist:
                out.append((key, d))
                if len(out) >= MAX_CORRECTION_CANDIDATES:
                    break
    return out


# -- document sets -------------------------------------------------------------------------------

_BITS = tuple(tuple(bit for bit in range(8) if byte >> bit & 1) for byte in range(256))
_BIT = tuple(1 << bit for bit in range(8))


class DocSet(DocIdSet):
    """Document numbers as the bits of one Python int.

    Union, intersection, difference and counting run in C over N/8 bytes (12 KB at 100,000
    documents), so matching sets and facet counts cost microseconds, and caching a posting
    list costs 12 KB instead of megabytes for a set of ints. A DocIdSet, so Whoosh accepts it
    as a search filter.
    """

    __slots__ = ("mask", "_bytes")

    def __init__(self, mask: int = 0) -> None:
        self.mask = mask
        self._bytes: bytes | None = None

    @classmethod
    def from_ids(cls, ids: Iterable[int], size: int = 0) -> "DocSet":
        buf = bytearray((size >> 3) + 1)
        for docnum in ids:
            i = docnum >> 3
            if i >= len(buf):
                buf.extend(bytes(i - len(buf) + 1))
            buf[i] |= _BIT[docnum & 7]
        return cls(int.from_bytes(buf, "little"))

    @classmethod
    def from_postings(cls, reader: Any, fieldname: str, text: str, size: int) -> "DocSet":
        """The live documents of one term (about 1 us per posting: Whoosh decodes whole blocks)."""
        buf = bytearray((size >> 3) + 1)
        try:
            ids = reader.postings(fieldname, text).all_ids()
        except TermNotFound:
            return EMPTY
        for docnum in ids:
            buf[docnum >> 3] |= _BIT[docnum & 7]
        return cls(int.from_bytes(buf, "little"))

    def _raw(self) -> bytes:
        if self._bytes is None:
            self._bytes = self.mask.to_bytes((self.mask.bit_length() + 7) >> 3, "little")
        return self._bytes

    def __len__(self) -> int:
        return self.mask.bit_count()

    def __bool__(self) -> bool:
        return self.mask != 0

    def __contains__(self, docnum: object) -> bool:
        raw = self._raw()
        i = int(docnum) >> 3  # type: ignore[call-overload]
        return i < len(raw) and (raw[i] >> (int(docnum) & 7)) & 1 == 1  # type: ignore[call-overload]

    def __iter__(self):
        return iter(self.ids())

    def ids(self) -> list[int]:
        return [i << 3 | bit for i, byte in enumerate(self._raw()) if byte for bit in _BITS[byte]]

    def first(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1

    def __and__(self, other: "DocSet") -> "DocSet":  # type: ignore[override]
        return DocSet(self.mask & other.mask)

    def __or__(self, other: "DocSet") -> "DocSet":  # type: ignore[override]
        return DocSet(self.mask | other.mask)

    def __sub__(self, other: "DocSet") -> "DocSet":  # type: ignore[override]
        return DocSet(self.mask & ~other.mask)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DocSet) and other.mask == self.mask

    def __hash__(self) -> int:
        return hash(self.mask)

    def copy(self) -> "DocSet":
        return DocSet(self.mask)


EMPTY = DocSet()


def _docset_bytes(docs: DocSet) -> int:
    return 64 + (docs.mask.bit_length() >> 3)


def _union(sets: Iterable[DocSet]) -> DocSet:
    mask = 0
    for s in sets:
        mask |= s.mask
    return DocSet(mask)


# -- posting lists, a block at a time --------------------------------------------------------------
#
# Whoosh hands out postings one at a time through a stack of Python matchers (~1-2 us each; a
# frequent body word has 80,000 postings at 100,000 articles). Its W3 codec stores them in blocks
# of up to 128: one pickled tuple (id deltas, weights, values). Reading those tuples whole turns
# the per-posting work into C (unpickle, accumulate) plus one short Python loop, ~5-8x faster,
# and a block whose id range holds no wanted document is skipped without being decoded.
# Measured at 100,000 articles: a cold body word's document set costs ~0.57 us per posting
# instead of ~0.75, almost all of it now Whoosh's file read, zlib and unpickling of the blocks.
# Anything but a plain W3 leaf matcher (inlined postings, another Whoosh fork) takes the generic
# matcher path, so this is an optimisation, never a second source of truth. Deleted documents
# are not filtered here: every caller intersects with live document sets.

class _Block:
    """One block of one segment's postings: global `ids`, weights and values read on demand."""

    __slots__ = ("ids", "_weights", "_values")

    def __init__(self, ids: Any, weights: Any, values: Any) -> None:
        self.ids = ids
        self._weights = weights
        self._values = values

    def weights(self) -> Any:
        w = self._weights
        if w is None or isinstance(w, float):
            return [1.0 if w is None else w] * len(self.ids)
        return w

    def values(self) -> Any:
        return self._values


def _leaf_matcher(matcher: Any) -> Any | None:
    """The W3 leaf under an optional deletion filter, when its block layout is the one we read."""
    inner = matcher.child if type(matcher).__name__ == "FilterMatcher" else matcher
    if all(hasattr(inner, a) for a in ("_read_data", "_next_block", "_maxid", "_byteids", "_blocklength")):
        return inner
    return None


def _term_blocks(reader: Any, fieldname: str, text: str, need: list[int] | None = None,
                 values: bool = False) -> Iterator[_Block]:
    """Every block of a term's postings over all segments, in document order.

    With `need` (sorted global document numbers), blocks holding none of them are skipped
    undecoded. `values` asks for the raw values (positions) of the generic path too.
    """
    for seg, offset in reader.leaf_readers():
        if need is not None:  # no wanted document in this segment: not even a term lookup
            i = bisect_left(need, offset)
            if i >= len(need) or need[i] >= offset + seg.doc_count_all():
                continue
        try:
            matcher = _raw_postings(seg, fieldname, text)
        except TermNotFound:
            continue
        leaf = _leaf_matcher(matcher)
        if leaf is None:
            yield _generic_block(matcher, offset, values)
            continue
        low = 0
        while leaf.is_active():
            high = leaf._maxid
            if need is not None:
                i = bisect_left(need, offset + low)
                if i >= len(need) or need[i] > offset + high:
                    low = high + 1
                    leaf._next_block()
                    continue
            if leaf._data is None:
                leaf._read_data()
            ids, weights, vals = leaf._data
            if not leaf._byteids:
                ids = accumulate(ids)
            ids = [d + offset for d in ids] if offset else list(ids)
            yield _Block(ids, weights, vals)
            low = high + 1
            leaf._next_block()


def _raw_postings(seg: Any, fieldname: str, text: str) -> Any:
    """A segment's postings of a term without the deletion filter.

    `SegmentReader.postings` wraps a segment with deletions in a FilterMatcher that decodes the
    first block id by id as soon as it is built; callers here intersect with live documents.
    """
    terms = getattr(seg, "_terms", None)
    if terms is None or not hasattr(terms, "matcher") or fieldname not in seg.schema:
        return seg.postings(fieldname, text)
    fieldobj = seg.schema[fieldname]
    tbytes = fieldobj.to_bytes(text) if isinstance(text, str) else text
    try:
        return terms.matcher(fieldname, tbytes, fieldobj.format)
    except KeyError:
        raise TermNotFound(f"{fieldname}:{text!r}") from None


def _generic_block(matcher: Any, offset: int, values: bool) -> _Block:
    ids: list[int] = []
    weights: list[float] = []
    vals: list[Any] = []
    while matcher.is_active():
        ids.append(matcher.id() + offset)
        weights.append(matcher.weight())
        if values:
            vals.append(matcher.value())
        matcher.next()
    return _Block(ids, weights, vals)


def _length_bytes(seg: Any, fieldname: str) -> bytes:
    """One segment's stored field lengths (Whoosh's one-byte encoding), one per document."""
    count = seg.doc_count_all()
    try:  # the W3 codec keeps them as one byte column: one read
        column = seg._perdoc._cached_reader(f"_{fieldname}_len", LENGTHS_COLUMN)
        raw = column._dbfile.get(column._basepos, column._count) if column is not None else b""
        if len(raw) <= count:
            return bytes(raw) + bytes(count - len(raw))
    except Exception:  # noqa: BLE001 - another codec or fork: the public per-document call
        log.debug("reading %s lengths per document", fieldname, exc_info=True)
    return bytes(length_to_byte(seg.doc_field_length(d, fieldname, 0) or 0) for d in range(count))


def _docset_of_term(reader: Any, fieldname: str, text: str, size: int) -> DocSet:
    """Every document of a term (deleted ones too: callers intersect with live documents)."""
    buf = bytearray((size >> 3) + 1)
    bit = _BIT
    for block in _term_blocks(reader, fieldname, text):
        for docnum in block.ids:
            i = docnum >> 3
            if i >= len(buf):
                buf.extend(bytes(i - len(buf) + 1))
            buf[i] |= bit[docnum & 7]
    return DocSet(int.from_bytes(buf, "little"))


# -- one opened index state ------------------------------------------------------------------------

class _FacetTable:
    """The documents of each value of one facet field (case variants merged), for counting and filters."""

    def __init__(self, reader: Any, fieldname: str, state: "_State") -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        masks: list[int] = []
        for raw in reader.lexicon(fieldname):
            term = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            key = term.casefold()
            vid = self.index.get(key)
            if vid is None:
                vid = self.index[key] = len(self.values)
                self.values.append(term)
                masks.append(0)
            masks[vid] |= state.term_docs(reader, fieldname, term).mask
        self.masks = [DocSet(m) for m in masks]
        #: value ids, most documents first: counting can stop once no later value can enter the top
        self.order = sorted(range(len(masks)), key=lambda v: -self.masks[v].mask.bit_count())
        self.sizes = {v: self.masks[v].mask.bit_count() for v in self.order}

    def docs(self, value: str) -> DocSet:
        vid = self.index.get(value.casefold())
        return self.masks[vid] if vid is not None else EMPTY

    def count(self, docs: DocSet, limit: int) -> list[tuple[str, int]]:
        found: list[tuple[int, int]] = []  # (count, vid)
        mask = docs.mask
        for vid in self.order:
            if len(found) >= limit and self.sizes[vid] < found[-1][0]:
                break  # no remaining value has enough documents to enter the top `limit`
            n = (mask & self.masks[vid].mask).bit_count()
            if n:
                found.append((n, vid))
                found.sort(key=lambda cv: (-cv[0], self.values[cv[1]].casefold()))
                del found[limit:]
        return [(self.values[vid], n) for n, vid in found]


def _close_all(searchers: list[Any], pool: list[Any], indexes: list[Any]) -> None:
    for searcher in searchers:
        try:
            searcher.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("closing a searcher failed", exc_info=True)
    searchers.clear()
    pool.clear()
    for ix in indexes:
        ix.close()


def _open_indexes(dirs: list[Path]) -> list[Any]:
    """Open these sub-indexes read-only, all or none."""
    opened: list[Any] = []
    try:
        for path in dirs:
            # No mmap: Whoosh copies every mmapped compound segment into a private BytesIO per
            # reader (~the whole index per pooled searcher); plain file reads share the OS cache.
            opened.append(FileStorage(str(path), supports_mmap=False, readonly=True).open_index())
    except BaseException:
        for ix in opened:
            ix.close()
        raise
    return opened


def _combined_reader(readers: list[Any]) -> Any:
    """One reader over several indexes: a MultiReader of all their segment readers, docnums in order.

    Flat (segment readers, not readers of readers), so `leaf_readers()` gives every segment with
    its offset, exactly as for one multi-segment index; empty indexes add nothing.
    """
    if len(readers) == 1:
        return readers[0]
    leaves = [leaf for reader in readers for leaf, _offset in reader.leaf_readers()
              if not isinstance(leaf, EmptyReader)]
    if not leaves:
        return readers[0]
    return leaves[0] if len(leaves) == 1 else MultiReader(leaves)


class _Retired(Exception):
    """Internal: the state was replaced while a request waited for one of its searchers."""


class _State:
    """One generation's sub-indexes (`names`) at one commit each: a pool of searchers and derived caches."""

    def __init__(self, generation: Path, names: tuple[str, ...]) -> None:
        self.generation = generation
        self.names = names
        self.dirs = list(subindex_dirs(generation, names).values())
        self.indexes = _open_indexes(self.dirs)
        self.toc = self.latest()
        self.dir_mtime = self.stamp()
        self.schema = self.indexes[0].schema
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self._pool: list[Any] = []
        self._open: list[Any] = []
        self._count = 0  # searchers opened or being opened
        # Close the files even if nobody calls close() (an app dropped without teardown): the
        # finalizer holds the index and the searcher list, not this object.
        self._finalizer = weakref.finalize(self, _close_all, self._open, self._pool, self.indexes)
        self.in_use = 0
        self.retired = False
        self.closed = False
        self.size = sum(ix.doc_count_all() for ix in self.indexes)
        self._terms: OrderedDict[tuple[str, str], DocSet] = OrderedDict()
        self._df: dict[tuple[str, str], int] = {}
        self._analyze_lock = threading.Lock()
        self._audiences: dict[tuple[str, ...], DocSet] = {}
        self._facets: dict[str, _FacetTable] = {}
        self._published: list[int] | None = None
        self._newest: list[int] = []
        self._analyzed: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
        self._live: int | None = None
        self._term_bytes = 0
        self._corrections: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._norms: dict[str, tuple[bytes, list[float]]] = {}
        self._scores: OrderedDict[tuple[str, str], tuple[array, array]] = OrderedDict()
        self._score_bytes = 0

    def latest(self) -> tuple[int, ...]:
        """The newest commit (TOC generation) of each sub-index."""
        return tuple(ix.latest_generation() for ix in self.indexes)

    def stamp(self) -> tuple[int, ...]:
        """Modification times of the sub-index directories: a commit changes its directory's."""
        return tuple(_mtime(path) for path in self.dirs)

    def _new_searcher(self) -> Any:
        readers: list[Any] = []
        try:
            for ix in self.indexes:
                readers.append(ix.reader())
            reader = _combined_reader(readers)
        except BaseException:
            for opened in readers:
                opened.close()
            raise
        return WhooshSearcher(reader, weighting=BM25F(B=BM25_B, K1=BM25_K1))

    # pool ----------------------------------------------------------------------------------
    def acquire(self) -> Any:
        """A searcher for this thread alone; at most POOL_SIZE exist (each holds file handles)."""
        with self.cond:
            while not self.retired and not self._pool and self._count >= POOL_SIZE:
                self.cond.wait()
            if self.retired:
                raise _Retired  # replaced by a newer state: the caller takes that one
            self.in_use += 1
            if self._pool:
                return self._pool.pop()
            self._count += 1
        try:
            searcher = self._new_searcher()
        except BaseException:
            with self.cond:
                self.in_use -= 1
                self._count -= 1
                self.cond.notify()
            raise
        with self.cond:
            self._open.append(searcher)
        return searcher

    def release(self, searcher: Any) -> None:
        with self.cond:
            self.in_use -= 1
            if not self.retired:
                self._pool.append(searcher)
                self.cond.notify()
                return
            self._open.remove(searcher)
            self._count -= 1
            self.cond.notify()
        searcher.close()
        self.close_if_idle()

    def retire(self) -> None:
        with self.cond:
            self.retired = True
            self.cond.notify_all()
        self.close_if_idle()

    def close_if_idle(self) -> None:
        with self.lock:
            if self.in_use or self.closed:
                return
            self.closed = True
        self._finalizer()

    # caches ---------------------------------------------------------------------------------
    def term_docs(self, reader: Any, fieldname: str, text: str) -> DocSet:
        """Live documents containing a term (deleted ones excluded), LRU-cached.

        `reader` is the calling thread's own (Whoosh readers are not shared between threads);
        every reader of one state numbers documents the same way, so the cache is shared.
        """
        key = (fieldname, text)
        with self.lock:
            found = self._terms.get(key)
            if found is not None:
                self._terms.move_to_end(key)
                return found
        if self.doc_frequency(reader, fieldname, text):
            found = DocSet(_docset_of_term(reader, fieldname, text, self.size).mask & self.live_mask(reader))
        else:
            found = EMPTY
        return self.remember(key, found)

    def norms(self, reader: Any, fieldname: str, avgfl: float) -> tuple[bytes, list[float]]:
        """(length byte per document, BM25 length norm per length byte) of one field, built once."""
        found = self._norms.get(fieldname)
        if found is None:
            lengths = bytearray()
            for seg, _offset in reader.leaf_readers():
                lengths += _length_bytes(seg, fieldname)
            table = [BM25_K1 * ((1 - BM25_B) + BM25_B * byte_to_length(b) / avgfl) for b in range(256)]
            found = (bytes(lengths), table)
            with self.lock:
                self._norms[fieldname] = found
        return found

    def leaf_scores(self, searcher: Any, fieldname: str, text: str) -> tuple[array, array]:
        """(document numbers, BM25F score at boost 1) of one term, as Whoosh's BM25F scores it; cached.

        Terms and their scores do not change within one index state, so a term searched again
        costs one pass over two C arrays instead of re-reading and re-scoring its postings.
        """
        key = (fieldname, text)
        with self.lock:
            found = self._scores.get(key)
            if found is not None:
                self._scores.move_to_end(key)
                return found
        reader = searcher.reader()
        ids = array("i")
        scores = array("d")
        if self.doc_frequency(reader, fieldname, text):
            if self.schema[fieldname].scorable:
                avgfl = searcher.avg_field_length(fieldname) or 1
                lengths, table = self.norms(reader, fieldname, avgfl)
                c = searcher.idf(fieldname, text) * (BM25_K1 + 1)
                for block in _term_blocks(reader, fieldname, text):
                    ids.extend(block.ids)
                    scores.extend([c * tf / (tf + table[lengths[d]]) for d, tf in zip(block.ids, block.weights())])
            else:  # Whoosh scores an unscorable field (title_key) by the posting's weight
                for block in _term_blocks(reader, fieldname, text):
                    ids.extend(block.ids)
                    scores.extend(block.weights())
        found = (ids, scores)
        with self.lock:
            self._scores[key] = found
            self._score_bytes += 12 * len(ids)
            while self._score_bytes > SCORE_CACHE_BYTES and len(self._scores) > 1:
                _, (old_ids, _old) = self._scores.popitem(last=False)
                self._score_bytes -= 12 * len(old_ids)
        return found

    def corrections(self, word: str, audiences: tuple[str, ...], compute: Callable[[], list[str]]) -> list[str]:
        """Spelling corrections of `word` for one audience, computed once per index state.

        Finding them walks every segment's word list with a Levenshtein automaton (~40 ms at
        100,000 articles); a query that finds nothing tends to be asked again. Keyed by
        audience: a staff-only look-alike must never reach patients through the cache.
        """
        key = (word, tuple(sorted(set(audiences))))
        with self.lock:
            found = self._corrections.get(key)
        if found is None:
            found = compute()
            with self.lock:
                if len(self._corrections) >= CORRECTION_CACHE:
                    self._corrections.clear()
                self._corrections[key] = found
        return list(found)

    def live_mask(self, reader: Any) -> int:
        """Bits of the documents not deleted (block reads see deleted ones too)."""
        if self._live is None:
            if reader.has_deletions():
                live = DocSet.from_ids(reader.all_doc_ids(), self.size).mask
            else:
                live = (1 << self.size) - 1
            with self.lock:
                self._live = live
        return self._live

    def remember(self, key: tuple[str, str], docs: DocSet) -> DocSet:
        with self.lock:
            previous = self._terms.pop(key, None)
            if previous is not None:
                self._term_bytes -= _docset_bytes(previous)
            self._terms[key] = docs
            self._term_bytes += _docset_bytes(docs)
            while self._term_bytes > TERM_CACHE_BYTES and len(self._terms) > 1:
                _, dropped = self._terms.popitem(last=False)
                self._term_bytes -= _docset_bytes(dropped)
        return docs

    def cached(self, key: tuple[str, str]) -> DocSet | None:
        with self.lock:
            return self._terms.get(key)

    def doc_frequency(self, reader: Any, fieldname: str, text: str) -> int:
        """Documents with the term (deleted ones included until a merge), cached: a multi-segment
        index looks every term up in each segment."""
        key = (fieldname, text)
        found = self._df.get(key)
        if found is None:
            found = reader.doc_frequency(fieldname, text) if fieldname in self.schema else 0
            with self.lock:
                if len(self._df) > DF_CACHE:
                    self._df.clear()
                self._df[key] = found
        return found

    def audience_docs(self, reader: Any, audiences: tuple[str, ...]) -> DocSet:
        key = tuple(sorted(set(audiences)))
        with self.lock:
            found = self._audiences.get(key)
        if found is None:
            found = _union(self.term_docs(reader, "audience", a) for a in key)
            with self.lock:
                self._audiences[key] = found
        return found

    def facet(self, reader: Any, name: str) -> _FacetTable:
        with self.lock:
            table = self._facets.get(name)
            if table is None:
                table = self._facets[name] = _FacetTable(reader, name, self)
            return table

    def by_date(self, reader: Any) -> tuple[list[int], list[int]]:
        """(published sort key per document, document numbers newest first), built once per state.

        Read per segment: a segment without any dated document has no column, and Whoosh's
        multi-segment column would then lend it a neighbour's values.
        """
        with self.lock:
            if self._published is None:
                values = [0] * self.size
                for seg, offset in reader.leaf_readers():
                    if not seg.has_column("published"):
                        continue
                    column = seg.column_reader("published", translate=False)
                    for docnum in range(min(seg.doc_count_all(), len(values) - offset)):
                        v = column[docnum]
                        values[offset + docnum] = int(v) if isinstance(v, int) and v > 0 else 0
                self._published = values
                self._newest = sorted(range(len(values)), key=lambda d: (-values[d], d))
            return self._published, self._newest

    def analyze(self, fieldname: str, text: str) -> tuple[str, ...]:
        """Index terms of `text` with this generation's own analyzer (query mode), cached."""
        key = (fieldname, text)
        with self.lock:
            found = self._analyzed.get(key)
            if found is not None:
                return found
        analyzer = self.schema[fieldname].analyzer
        with self._analyze_lock:  # analyzers may keep per-call state; results are cached anyway
            tokens = tuple(t.text for t in analyzer(text, mode="query") if t.text)
        with self.lock:
            self._analyzed[key] = tokens
            if len(self._analyzed) > 4096:
                self._analyzed.popitem(last=False)
        return tokens


def _no_index(index_root: Path) -> IndexUnavailable:
    """Why there is nothing to search: no index yet, or one of an older layout that must be rebuilt."""
    named = named_generation(index_root)
    if named is not None and named.is_dir() and is_legacy(named):
        return IndexUnavailable(f"The search index in {index_root} was built by an older kb (one index for every "
                                "audience) and must be rebuilt.", "Run `kb reindex` (or `kb update`) to rebuild it.")
    if named is not None:  # CURRENT names a generation that is gone or does not read: kb.index logged why
        return IndexDamaged(f"The search index in {index_root} cannot be read: generation {named.name} is damaged "
                            "or missing (`kb check` says what is wrong).")
    return IndexUnavailable(f"There is no search index in {index_root} yet.", "Run `kb reindex` to build it.")


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


class _Request:
    """What one search borrows: the state, a Whoosh searcher and its reader (this thread's only)."""

    def __init__(self, state: _State, searcher: Any) -> None:
        self.state = state
        self.searcher = searcher
        self.reader = searcher.reader()

    def term_docs(self, fieldname: str, text: str) -> DocSet:
        return self.state.term_docs(self.reader, fieldname, text)

    def has(self, fieldname: str, text: str) -> bool:
        return self.state.doc_frequency(self.reader, fieldname, text) > 0

    def doc_frequency(self, fieldname: str, text: str) -> int:
        return self.state.doc_frequency(self.reader, fieldname, text)

    def audience_docs(self, audiences: tuple[str, ...]) -> DocSet:
        return self.state.audience_docs(self.reader, audiences)

    def facet(self, name: str) -> _FacetTable:
        return self.state.facet(self.reader, name)

    def by_date(self) -> tuple[list[int], list[int]]:
        return self.state.by_date(self.reader)

    def newest(self, docs: DocSet, count: int, skip: Iterable[int] = ()) -> list[int]:
        """The `count` newest documents of `docs` (not in `skip`), walking the date order once."""
        out: list[int] = []
        if count <= 0 or not docs:
            return out
        skip = set(skip)
        _, order = self.by_date()
        for docnum in order:
            if docnum in docs and docnum not in skip:
                out.append(docnum)
                if len(out) >= count:
                    break
        return out

    def analyze(self, fieldname: str, text: str) -> tuple[str, ...]:
        return self.state.analyze(fieldname, text)


# -- compiling the parsed query ------------------------------------------------------------------

@dataclass
class _Compiled:
    match: Any | None  # whoosh query whose matches are the results (total, facets)
    score: Any | None  # match plus optional ranking-only clauses
    phrase: tuple[str, ...] = ()  # the whole query's terms, for the phrase bonus when re-ranking
    concepts: list[set[tuple[str, ...]]] = field(default_factory=list)  # for the coordination factor
    highlight: list[str] = field(default_factory=list)  # analysed terms, for snippet marks
    surface: list[str] = field(default_factory=list)  # words as typed, for snippet marks


class _Compiler:
    """Turns the parsed tree into Whoosh queries, keeping the number of leaves (= cost) small."""

    def __init__(self, ctx: _Request) -> None:
        self.ctx = ctx
        self.terms: list[str] = []
        self.surface: list[str] = []
        #: query word (analysed) -> the token sequences that satisfy it (itself, its expansions)
        self.concepts: dict[str, set[tuple[str, ...]]] = {}
        self.expanded: list[tuple[str, ...]] = []

    def tokens(self, text: str) -> tuple[str, ...]:
        return self.ctx.analyze("body", text)

    def clause(self, tokens: tuple[str, ...], weight: float = 1.0,
               fields: tuple[tuple[str, float], ...] | None = None, exact: bool = True) -> Any | None:
        """A term (one token) or phrase (several) in each field that holds it, with the field's weight.

        Fields whose lexicon lacks a token are left out: every leaf costs time on each search.
        With `exact` False several tokens need only co-occur (cheap And instead of positions).
        """
        if not tokens:
            return None
        parts = []
        for f, b in fields or FIELD_WEIGHTS:
            if not all(self.ctx.has(f, t) for t in tokens):
                continue
            if len(tokens) == 1:
                parts.append(wq.Term(f, tokens[0], boost=weight * b))
            elif exact:
                parts.append(wq.Phrase(f, list(tokens), boost=weight * b))
            else:
                parts.append(wq.And([wq.Term(f, t) for t in tokens], boost=weight * b))
        if not parts:
            return wq.NullQuery
        return parts[0] if len(parts) == 1 else _new_or(parts)

    def expansions(self, text: str, have: set[str]) -> list[Any]:
        """Vocabulary expansions of `text` not already searched, best first, at most MAX_EXPANSIONS."""
        out: list[Any] = []
        for term, weight in sorted(_expansions(text), key=lambda tw: -tw[1]):
            toks = self.tokens(term)
            if not toks or tuple(toks) in have or (len(toks) == 1 and toks[0] in have):
                continue
            have.add(tuple(toks))
            self.expanded.append(tuple(toks))
            self.surface.append(term)
            self.terms += toks
            # multi-word expansions need not be exact phrases: reading positions costs ~10x
            out.append(self.clause(toks, weight * EXPANSION_WEIGHT, EXPANSION_FIELDS, exact=False))
            if len(out) >= MAX_EXPANSIONS:
                break
        return out

    def words_run(self, words: list[str]) -> list[Any]:
        """Clauses for consecutive plain words: each analysed term, plus vocabulary expansions."""
        out: list[Any] = []
        self.surface += words
        tokens = list(dict.fromkeys(self.tokens(" ".join(words))))
        for token in tokens:
            self.terms.append(token)
            self.concepts.setdefault(token, set()).add((token,))
            out.append(self.clause((token,)))
        have: set[Any] = set(tokens)
        covered: set[int] = set()
        for n in (4, 3, 2, 1):
            for i in range(0, len(words) - n + 1):
                if covered & set(range(i, i + n)):
                    continue
                text = " ".join(words[i:i + n])
                self.expanded = []
                found = self.expansions(text, have)
                if found:
                    covered |= set(range(i, i + n))
                    out += found
                    for token in self.tokens(text):
                        self.concepts.setdefault(token, set()).update(self.expanded)
        return out

    def node(self, node: Node) -> Any | None:
        if isinstance(node, Word):
            return _or(self.words_run([node.text]))
        if isinstance(node, Phrase):
            toks = self.tokens(node.text)
            self.surface.append(node.text)
            self.terms += toks
            parts = [self.clause(toks)] if toks else []
            self.expanded = []
            parts += self.expansions(node.text, {tuple(toks)})
            if toks:
                self.concepts.setdefault(" ".join(toks), set()).update([tuple(toks), *self.expanded])
            return _or(parts)
        if isinstance(node, Either):
            return _or([self.node(c) for c in node.children])
        if isinstance(node, Not):
            return None  # handled by the enclosing group
        if isinstance(node, Group):
            positive: list[Any] = []
            negative: list[Any] = []
            run: list[str] = []
            for child in node.children:
                if isinstance(child, Word):
                    run.append(child.text)
                    continue
                if run:
                    positive += self.words_run(run)
                    run = []
                if isinstance(child, Not):
                    negative.append(_Compiler(self.ctx).node(child.child))
                else:
                    positive.append(self.node(child))
            if run:
                positive += self.words_run(run)
            pos = _or(positive)
            neg = _or(negative)
            if pos is None:
                return _NegativeOnly(neg) if neg is not None else None
            return wq.AndNot(pos, neg) if neg is not None else pos
        raise TypeError(node)


@dataclass
class _NegativeOnly:
    """A group of exclusions only ("-acne"): everything visible except those documents."""

    exclude: Any


def _or(parts: list[Any]) -> Any | None:
    parts = [p for p in parts if p is not None and p is not wq.NullQuery]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else _new_or(parts)


def _new_or(parts: list[Any]) -> Any:
    """An Or that always streams (a tree of union matchers with block-quality skipping).

    Whoosh preloads every posting of an Or into arrays when a segment has under 5,000
    documents; a full build writes segments of about that size, so that "optimisation"
    would read every posting of every word on every search.
    """
    q = wq.Or(parts)
    q.matcher_type = wq.Or.DEFAULT_MATCHER
    return q


def compile_query(ctx: _Request, parsed: Parsed, text: str) -> _Compiled:
    compiler = _Compiler(ctx)
    tree = Group([parsed.tree]) if isinstance(parsed.tree, Not) else parsed.tree
    match = compiler.node(tree) if tree is not None else None
    if isinstance(match, _NegativeOnly):
        return _Compiled(match=match, score=None)
    if match is None:
        if compiler.terms:  # words that no document contains: no results, but "Did you mean"
            return _Compiled(match=wq.NullQuery, score=None, surface=compiler.surface)
        return _Compiled(match=None, score=None, surface=compiler.surface)
    bonus: list[Any] = []
    phrase: tuple[str, ...] = ()
    if parsed.plain:
        words = parsed.words()
        key = title_key(" ".join(words))
        if key and ctx.has("title_key", key):
            bonus.append(wq.Term("title_key", key, boost=EXACT_TITLE_BOOST))
        toks = compiler.tokens(" ".join(words))
        if len(toks) > 1:
            phrase = toks
    seen = set(compiler.terms)
    for word in querylang.intent_words(text):
        for token in compiler.tokens(word):
            if token not in seen:
                seen.add(token)
                bonus.append(compiler.clause((token,), INTENT_WEIGHT, INTENT_FIELDS))
    bonus_q = _or(bonus)
    score = wq.AndMaybe(match, bonus_q) if bonus_q is not None else match
    return _Compiled(match=match, score=score, phrase=phrase, concepts=list(compiler.concepts.values()),
                     highlight=list(dict.fromkeys(compiler.terms)),
                     surface=list(dict.fromkeys(compiler.surface)))


def _phrase_docs(ctx: _Request, fieldname: str, tokens: tuple[str, ...], candidates: Iterable[int]) -> set[int]:
    """Which candidates hold `tokens` as a phrase in `fieldname` (the whole-query phrase bonus)."""
    if len(tokens) < 2 or not all(ctx.has(fieldname, t) for t in tokens):
        return set()
    known = [ctx.state.cached((fieldname, t)) for t in tokens]
    docs = [d for d in candidates if all(k is None or d in k for k in known)]
    return set(_phrase_matches(ctx, fieldname, tokens, docs))


def _positions_decoder(fmt: Any) -> Callable[[bytes], Iterable[int]]:
    """Positions of one posting value; Whoosh's Positions format (count + pickled deltas) in C."""
    if type(fmt) is not formats.Positions:
        return fmt.decode_positions

    def decode(value: bytes) -> Iterable[int]:
        body = value[4:]
        return accumulate(loads(body if body.endswith(b".") else body + b"."))

    return decode


def _phrase_matches(ctx: _Request, fieldname: str, words: Iterable[str], candidates: Iterable[int]) -> list[int]:
    """The candidates holding `words` consecutively in `fieldname`, in document order.

    Positions are decoded only in posting blocks that hold a remaining candidate, rarest word
    first, so each word narrows the documents the next one reads. Whoosh's phrase matcher
    instead walks every posting of the intersection through several matcher layers (with
    `_score`, phrase queries' p95 at 100,000 articles went from 186 ms to 94 ms; see README).
    """
    words = list(words)
    alive = sorted(set(candidates))
    if not words or not alive:
        return []
    decode = _positions_decoder(ctx.state.schema[fieldname].format)
    order = sorted(range(len(words)), key=lambda i: ctx.doc_frequency(fieldname, words[i]))
    starts: dict[int, set[int]] | None = None
    for i in order:
        wanted = set(alive)
        found: dict[int, set[int]] = {}
        for block in _term_blocks(ctx.reader, fieldname, words[i], need=alive, values=True):
            vals = block.values()
            for j, docnum in enumerate(block.ids):
                if docnum in wanted:
                    here = {p - i for p in decode(vals[j])}
                    if starts is not None:
                        here &= starts[docnum]
                    if here:
                        found[docnum] = here
        starts = found
        alive = sorted(found)
        if not alive:
            break
    return alive


def _prune(q: Any, ctx: _Request, cutoff: int, frequent: list[tuple[str, tuple[str, ...], float]],
           scale: float) -> Any | None:
    """`q` without leaves whose terms are all in more than `cutoff` documents.

    Those leaves go to `frequent` as (field, terms, boost): they only add their weight later.
    """
    if isinstance(q, wq.Term):
        if ctx.doc_frequency(q.fieldname, q.text) > cutoff:
            frequent.append((q.fieldname, (q.text,), scale * q.boost))
            return None
        return q
    if isinstance(q, wq.Phrase):  # ranking only: the filter already holds just the phrase's documents
        q = wq.And([wq.Term(q.fieldname, w) for w in q.words], boost=q.boost)
    if isinstance(q, wq.And) and all(isinstance(s, wq.Term) for s in q.subqueries):
        if min(ctx.doc_frequency(s.fieldname, s.text) for s in q.subqueries) > cutoff:
            frequent.append((q.subqueries[0].fieldname, tuple(s.text for s in q.subqueries), scale * q.boost))
            return None
        return q
    if isinstance(q, wq.Or):
        return _or([_prune(s, ctx, cutoff, frequent, scale * q.boost) for s in q.subqueries])
    if isinstance(q, wq.AndMaybe):
        a = _prune(q.a, ctx, cutoff, frequent, scale)
        b = _prune(q.b, ctx, cutoff, frequent, scale)
        if a is None:
            return None
        return wq.AndMaybe(a, b) if b is not None else a
    if isinstance(q, wq.AndNot):
        a = _prune(q.a, ctx, cutoff, frequent, scale)
        return wq.AndNot(a, q.b) if a is not None else None
    return q


def _score(ctx: _Request, q: Any, factor: float = 1.0, acc: dict[int, float] | None = None) -> dict[int, float]:
    """Document -> score of a pruned query, the sum Whoosh's BM25F matchers would compute.

    Replaces `searcher.search()` for ranking: Whoosh walks a tree of matchers per posting
    (~2 us each, x5 fields per word); here each term is one cached array pass (see
    `_State.leaf_scores`) added into one dict. Scores are equal to Whoosh's (tested), but every
    matching document is scored exactly instead of top-k with block skipping (Whoosh's block
    skipping barely applied: the candidate depth is 100). Measured at 100,000 articles, with the
    block reads: question queries' p95 from 182 ms to 88 ms, two-term queries' from 49 to 21 ms.
    """
    acc = {} if acc is None else acc
    if isinstance(q, wq.Term):
        ids, scores = ctx.state.leaf_scores(ctx.searcher, q.fieldname, q.text)
        f = factor * q.boost
        get = acc.get
        for d, x in zip(ids, scores):
            acc[d] = get(d, 0.0) + f * x
        return acc
    if isinstance(q, wq.Or):
        f = factor * (q.boost if len(q.subqueries) > 1 else 1.0)
        for sub in q.subqueries:
            _score(ctx, sub, f, acc)
        return acc
    if isinstance(q, (wq.And, wq.Phrase)):
        subs = [wq.Term(q.fieldname, w) for w in q.words] if isinstance(q, wq.Phrase) else list(q.subqueries)
        if not subs:
            return acc
        f = factor * (q.boost if len(subs) > 1 else 1.0)
        # Rarest term first; a frequent term then only looks its postings up in the survivors
        # (a dict probe per posting) instead of becoming a dict of its own.
        subs.sort(key=lambda sub: ctx.doc_frequency(sub.fieldname, sub.text) if isinstance(sub, wq.Term) else 0)
        found = _score(ctx, subs[0])
        for sub in subs[1:]:
            if not found:
                break
            narrowed: dict[int, float] = {}
            if isinstance(sub, wq.Term):
                ids, scores = ctx.state.leaf_scores(ctx.searcher, sub.fieldname, sub.text)
                b = sub.boost
                get = found.get
                for d, x in zip(ids, scores):
                    y = get(d)
                    if y is not None:
                        narrowed[d] = y + b * x
            else:
                other = _score(ctx, sub)
                narrowed = {d: y + other[d] for d, y in found.items() if d in other}
            found = narrowed
        get = acc.get
        for d, x in found.items():
            acc[d] = get(d, 0.0) + f * x
        return acc
    if isinstance(q, wq.AndMaybe):
        base = _score(ctx, q.a, factor)
        extra = _score(ctx, q.b, factor)
        for d, x in extra.items():
            if d in base:
                base[d] += x
        if acc:
            for d, x in base.items():
                acc[d] = acc.get(d, 0.0) + x
            return acc
        return base
    if isinstance(q, wq.AndNot):
        base = _score(ctx, q.a, factor)
        excluded = _docs(ctx, q.b)
        for d, x in base.items():
            if d not in excluded:
                acc[d] = acc.get(d, 0.0) + x
        return acc
    if q is wq.NullQuery or q is None:
        return acc
    for hit in ctx.searcher.search(q, limit=None):  # anything else: Whoosh itself
        acc[hit.docnum] = acc.get(hit.docnum, 0.0) + factor * hit.score
    return acc


def _top_scores(ctx: _Request, q: Any, docs: DocSet, limit: int) -> dict[int, float]:
    """The `limit` best documents of `docs` by `_score` (ties: lower document number first)."""
    raw = docs._raw()
    n = len(raw)
    scored = [(x, d) for d, x in _score(ctx, q).items() if (d >> 3) < n and raw[d >> 3] >> (d & 7) & 1]
    best = heapq.nlargest(limit, scored, key=lambda xd: (xd[0], -xd[1]))
    return {d: x for x, d in best}


def _idf(ctx: _Request, fieldname: str, token: str) -> float:
    n = ctx.state.size or 1
    df = ctx.doc_frequency(fieldname, token)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _docs(ctx: _Request, q: Any) -> DocSet:
    """The documents a compiled query matches, by bit algebra over cached posting lists."""
    if isinstance(q, wq.Term):
        return ctx.term_docs(q.fieldname, q.text)
    if isinstance(q, wq.Or):
        return _union(_docs(ctx, s) for s in q.subqueries)
    if isinstance(q, wq.And):
        mask = -1
        for s in q.subqueries:
            mask &= _docs(ctx, s).mask
        return DocSet(mask) if q.subqueries else EMPTY
    if isinstance(q, wq.AndNot):
        return _docs(ctx, q.a) - _docs(ctx, q.b)
    if isinstance(q, wq.AndMaybe):
        return _docs(ctx, q.a)
    if isinstance(q, wq.Phrase):
        key = (q.fieldname, "\x00".join(q.words))
        found = ctx.state.cached(key)
        if found is None:
            possible = EMPTY
            if q.words:
                mask = -1
                for word in q.words:
                    mask &= ctx.term_docs(q.fieldname, word).mask
                possible = DocSet(mask)
            if not possible:
                found = EMPTY
            else:  # positions of the co-occurrences only, see _phrase_matches
                found = DocSet.from_ids(_phrase_matches(ctx, q.fieldname, q.words, possible.ids()), ctx.state.size)
            ctx.state.remember(key, found)
        return found
    if q is wq.NullQuery:
        return EMPTY
    return DocSet.from_ids(q.docs(ctx.searcher), ctx.state.size)


# -- snippets ------------------------------------------------------------------------------------

def highlight_pattern(terms: Iterable[str], surface: Iterable[str]) -> re.Pattern[str] | None:
    """One regex marking query words in text: analysed terms as word prefixes, typed words as is."""
    alts: set[str] = set()
    for term in terms:
        term = term.strip()
        if len(term) >= 3 and re.fullmatch(r"\w+", term):
            alts.add(re.escape(term) + r"\w*")
        elif term:
            alts.add(re.escape(term) + r"\b")
    for word in surface:
        word = " ".join(word.split())
        if word and re.search(r"\w", word):
            alts.add(r"\s+".join(re.escape(w) for w in word.split()) + (r"\b" if word[-1:].isalnum() else ""))
    if not alts:
        return None
    ordered = sorted(alts, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(ordered) + ")", re.IGNORECASE)


def make_snippet(text: str, pattern: re.Pattern[str] | None, sections: list[list[Any]] | None = None,
                 size: int = SNIPPET_CHARS) -> tuple[str, int]:
    """(escaped HTML with <mark>s, start offset of the chosen fragment or -1 when nothing matched)."""
    sections = sections or []
    matches = []
    if pattern is not None and text:
        for m in pattern.finditer(text):
            matches.append((m.start(), m.end(), m.group(0).casefold()))
            if len(matches) >= 400:
                break
    if not matches:
        end = _word_end(text, size)
        return html.escape(text[:end].strip()) + ("…" if end < len(text) else ""), -1
    heading_bonus: dict[int, int] = {}
    if sections and pattern is not None:
        for i, (_, heading, _start) in enumerate(sections):
            heading_bonus[i] = len({m.group(0).casefold() for m in pattern.finditer(heading or "")})
    starts = [s[2] for s in sections]
    best = (-1.0, 0)
    j = 0
    for i, (start, _, _) in enumerate(matches):
        j = max(j, i)
        while j + 1 < len(matches) and matches[j + 1][1] <= start + size:
            j += 1
        window = matches[i:j + 1]
        distinct = len({w[2] for w in window})
        score = distinct * 10 + len(window)
        if sections:
            si = bisect_left(starts, start + 1) - 1
            score += 6 * heading_bonus.get(si, 0) if si >= 0 else 0
        if score > best[0]:
            best = (score, i)
    first = matches[best[1]][0]
    start = max(0, first - 40)
    if start:
        space = text.find(" ", start, first)  # begin at a word, not inside one
        start = space + 1 if space >= 0 else start
    end = _word_end(text, start + size)
    out: list[str] = ["…"] if start else []
    pos = start
    for s, e, _ in matches:
        if s < start or e > end:
            continue
        out.append(html.escape(text[pos:s]))
        out.append("<mark>" + html.escape(text[s:e]) + "</mark>")
        pos = e
    out.append(html.escape(text[pos:end]))
    if end < len(text):
        out.append("…")
    return "".join(out).strip(), first


def _word_end(text: str, end: int) -> int:
    if end >= len(text):
        return len(text)
    space = text.find(" ", end, end + 30)
    return space if space >= 0 else end


# -- the searcher --------------------------------------------------------------------------------

class Searcher:
    """Thread-safe search over the current index generation; reopens after a swap or update."""

    def __init__(self, index_root: Path) -> None:
        self.index_root = Path(index_root)
        self._lock = threading.Lock()
        #: one state per set of sub-indexes read (kb.index.subindexes_for): public alone, or all
        self._states: dict[tuple[str, ...], _State] = {}
        self._pointer_stats: dict[tuple[str, ...], tuple[int, int, int] | None] = {}
        self._closed = False

    # state management --------------------------------------------------------------------------
    def _pointer(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.index_root / POINTER)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _current(self, scope: tuple[str, ...]) -> _State:
        pointer = self._pointer()
        state = self._states.get(scope)
        if state is not None and pointer == self._pointer_stats.get(scope) and state.stamp() == state.dir_mtime:
            return state
        with self._lock:
            state = self._states.get(scope)
            generation = current_generation(self.index_root)
            if generation is None:
                raise _no_index(self.index_root)
            stale = (state is None or state.generation != generation
                     or (state.stamp() != state.dir_mtime and state.latest() != state.toc))
            if stale:
                try:
                    new = _State(generation, scope)
                except Exception as exc:  # noqa: BLE001 - vanished mid-swap or unreadable
                    if state is not None and state.generation.is_dir():
                        log.warning("keeping the old index open: %s", exc)
                        return state
                    raise IndexDamaged(f"The search index in {generation} cannot be read ({exc}).") from None
                if state is not None:
                    state.retire()
                self._states[scope] = state = new
                log.info("search opened index generation %s %s (commit %s)", generation.name, "+".join(scope),
                         new.toc)
            else:
                state.dir_mtime = state.stamp()
            self._pointer_stats[scope] = pointer
            return state

    def close(self) -> None:
        with self._lock:
            states = list(self._states.values())
            self._states.clear()
            self._closed = True
        for state in states:
            state.retire()

    def _with(self, fn: Callable[[_Request], Any], audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> Any:
        """Run `fn` on a searcher of the sub-indexes `audiences` may read (the public one alone for patients)."""
        scope = subindexes_for(audiences)
        while True:
            state = self._current(scope)
            try:
                searcher = state.acquire()
            except _Retired:
                continue
            try:
                return fn(_Request(state, searcher))
            except Exception as exc:
                self._raise_if_damaged(state, exc)
                raise
            finally:
                state.release(searcher)

    def _raise_if_damaged(self, state: _State, exc: Exception) -> None:
        """A search failed: when its index no longer reads (damaged while open), say so (503), not 500."""
        if isinstance(exc, IndexUnavailable):
            return
        damage = index_problems(state.dirs)  # quick, and cached until a file changes
        if damage:
            log.warning("a search failed on a damaged index (%s): %s", exc, "; ".join(damage[:3]))
            with self._lock:
                if self._states.get(state.names) is state:
                    del self._states[state.names]
            state.retire()
            raise IndexDamaged(f"The search index in {state.generation} cannot be read: {damage[0]}") from None
        if isinstance(exc, READ_ERRORS):  # damage where the quick check does not look: `kb check` reads it all
            log.warning("a search read damaged data in %s (%r); run `kb check`", state.generation.name, exc)
            raise IndexDamaged(f"Part of the search index in {state.generation} cannot be read ({exc}).") from None

    # search ------------------------------------------------------------------------------------
    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> Results:
        """One page of results; malformed queries degrade to their words with a notice, never an error."""
        parsed = querylang.parse(query if isinstance(query, str) else str(query or ""))
        text, _ = querylang.clean(query if isinstance(query, str) else "")
        page = max(1, int(page or 1))
        per_page = max(1, min(MAX_PER_PAGE, int(per_page or 10)))
        merged: dict[str, list[str]] = {}
        for source in (filters or {}, parsed.filters):
            for name, values in source.items():
                if name in FILTER_FIELDS:
                    for value in values if isinstance(values, (list, tuple)) else [values]:
                        value = " ".join(str(value).split())
                        if value and value not in merged.setdefault(name, []):
                            merged[name].append(value)
        audiences = tuple(audiences or DEFAULT_AUDIENCES)
        return self._with(lambda ctx: self._search(
            ctx, parsed, text, page, per_page, merged, sort, audiences), audiences)

    def _allowed(self, ctx: _Request, audiences: tuple[str, ...], filters: dict[str, list[str]]) -> DocSet:
        """The audience's documents narrowed by every filter (values of one filter are alternatives)."""
        allowed = ctx.audience_docs(audiences)
        for name, values in filters.items():
            fieldname = FILTER_FIELDS[name]
            if fieldname in ("tags", "categories"):
                # Unknown values match nothing (not KeyError: a 500 for a missing value and a 200
                # for a staff-only one would tell patients which staff topics exist).
                docs = _union(ctx.facet(fieldname).docs(v) for v in values)
            else:
                docs = _union(ctx.term_docs(fieldname, v.casefold() if fieldname == "site" else v) for v in values)
            allowed = allowed & docs
        return allowed

    def _search(self, ctx: _Request, parsed: Parsed, text: str, page: int, per_page: int,
                filters: dict[str, list[str]], sort: str, audiences: tuple[str, ...]) -> Results:
        results = Results(query=text, total=0, page=page, per_page=per_page, notice=parsed.notice)
        allowed = self._allowed(ctx, audiences, filters)
        compiled = compile_query(ctx, parsed, text)
        browse = False
        if isinstance(compiled.match, _NegativeOnly):
            if not filters:
                results.notice = results.notice or "Add a word to search for: a query of exclusions only matches nothing."
                return results
            docs = allowed - _docs(ctx, compiled.match.exclude)
            browse = True
        elif compiled.match is None:
            if not filters:
                if text and not results.notice:
                    results.notice = "There are no searchable words in your query."
                return results
            docs = allowed
            browse = True
        else:
            docs = _docs(ctx, compiled.match) & allowed
        results.total = len(docs)
        if docs:
            results.facets = {name: ctx.facet(fieldname).count(docs, FACET_LIMIT)
                              for name, fieldname in FACET_FIELDS}
            results.facets = {k: v for k, v in results.facets.items() if v}
        first = (page - 1) * per_page
        ranked: list[tuple[float, int]] = []
        if first < results.total:
            if browse or sort == "date":
                ranked = [(0.0, d) for d in ctx.newest(docs, first + per_page)[first:]]
            else:
                ranked = self._rank(ctx, compiled, docs, first, per_page)
        pattern = highlight_pattern(compiled.highlight, compiled.surface)
        results.hits = [self._hit(ctx.searcher, docnum, score, pattern) for score, docnum in ranked]
        if not browse and parsed.tree is not None:
            results.suggestions = self._suggestions(ctx, parsed, text, audiences, results.total)
        return results

    def _rank(self, ctx: _Request, compiled: _Compiled, docs: DocSet, first: int,
              per_page: int) -> list[tuple[float, int]]:
        """One page of (score, docnum): BM25F, whole-query phrase bonus, newer first on equal scores.

        Whoosh scores every posting it is given (~2 us each), so a word found in most documents
        would cost ~200 ms at 100,000 articles. As in Lucene's CommonTermsQuery, terms in more
        than FREQUENT_SHARE of the documents do not select candidates: the selective terms find
        the top candidates with full BM25F, and each frequent term then adds its idf to the
        candidates that contain it (a bit test). Their idf is small, so the order changes little.
        """
        published, _ = ctx.by_date()
        want = first + per_page
        depth = max(want, RERANK_DEPTH)
        cutoff = max(FREQUENT_MIN_DF, int(FREQUENT_SHARE * ctx.state.size))
        frequent: list[tuple[str, tuple[str, ...], float]] = []
        selective = _prune(compiled.score, ctx, cutoff, frequent, 1.0)
        if not frequent and selective is not None:
            scores = _top_scores(ctx, selective, docs, depth)
        else:
            scores = {}
            if selective is not None:
                scores = _top_scores(ctx, selective, docs, depth)
            if len(scores) < depth:  # documents with frequent words only: newest first, then by idf
                for docnum in ctx.newest(docs, depth - len(scores), skip=scores):
                    scores[docnum] = 0.0
            for fieldname, texts, boost in frequent:
                holders = [ctx.term_docs(fieldname, t) for t in texts]
                weight = boost * sum(ctx.searcher.idf(fieldname, t) for t in texts)
                for docnum in scores:
                    if all(docnum in h for h in holders):
                        scores[docnum] += weight
        if COORD_POWER and 1 < len(compiled.concepts) <= COORD_MAX_WORDS and scores:
            self._coordinate(ctx, compiled.concepts, scores)
        if compiled.phrase and scores:
            best = heapq.nlargest(PHRASE_RERANK, scores, key=scores.__getitem__)
            for fieldname, weight in PHRASE_BONUS:
                matched = _phrase_docs(ctx, fieldname, compiled.phrase, best)
                if matched:
                    bonus = weight * sum(_idf(ctx, fieldname, t) for t in compiled.phrase)
                    for docnum in matched:
                        scores[docnum] += bonus
        ranked = sorted(((score, d) for d, score in scores.items()),
                        key=lambda sd: (-round(sd[0], 6), -published[sd[1]], sd[1]))
        return ranked[first:first + per_page]

    def _coordinate(self, ctx: _Request, concepts: list[set[tuple[str, ...]]], scores: dict[int, float]) -> None:
        """Scale scores by the share of query words (or their expansions) a document contains."""
        fields = [f for f, _ in FIELD_WEIGHTS]
        holders: dict[str, list[DocSet]] = {}

        def has(docnum: int, tokens: tuple[str, ...]) -> bool:
            for token in tokens:
                sets = holders.get(token)
                if sets is None:
                    sets = holders[token] = [ctx.term_docs(f, token) for f in fields if ctx.has(f, token)]
                if not any(docnum in s for s in sets):
                    return False
            return True

        n = len(concepts)
        for docnum in scores:
            matched = sum(1 for alternatives in concepts if any(has(docnum, t) for t in alternatives))
            scores[docnum] *= (matched / n) ** COORD_POWER

    def _hit(self, searcher: Any, docnum: int, score: float, pattern: re.Pattern[str] | None) -> Hit:
        stored = searcher.stored_fields(docnum)
        body = zlib.decompress(stored["body_z"]).decode("utf-8", "surrogatepass") if stored.get("body_z") else ""
        sections = json.loads(stored.get("sections") or "[]")
        snippet, offset = make_snippet(body, pattern, sections)
        anchor, heading = section_at(sections, offset) if offset >= 0 else ("", "")
        return Hit(
            id=int(stored["id"]), url=stored.get("url", ""), title=stored.get("title", ""), snippet_html=snippet,
            score=float(score), site=stored.get("site", ""), published=stored.get("pubdate") or None,
            tags=[t for t in (stored.get("tags") or "").split(",") if t],
            categories=[c for c in (stored.get("categories") or "").split(",") if c],
            anchor=anchor, section=heading, audience=stored.get("audience", "public"),
            kind=stored.get("kind", "article"), sources=json.loads(stored.get("sources") or "[]"),
        )

    # suggestions -----------------------------------------------------------------------------
    def _visible_df(self, ctx: _Request, word: str, audience_docs: DocSet, cap: int = 50) -> int:
        """Documents this audience can see that contain `word` (counting stops at `cap`)."""
        if not ctx.has("spell", word):
            return 0
        seen = 0
        for docnum in ctx.reader.postings("spell", word).all_ids():
            if docnum in audience_docs:
                seen += 1
                if seen >= cap:
                    break
        return seen

    def _corrections(self, ctx: _Request, word: str, audience_docs: DocSet) -> list[str]:
        """Indexed or vocabulary words within a small edit distance that the audience can find."""
        maxdist = 1 if len(word) <= 5 else 2
        candidates = self._indexed_lookalikes(ctx, word, maxdist, audience_docs)
        for key, d in _vocabulary_lookalikes(word, maxdist):
            candidates.setdefault(key, d)
        ranked = []
        for term, dist in candidates.items():
            plain = ctx.analyze("spell", term)
            if not plain:
                continue
            df = self._visible_df(ctx, plain[0], audience_docs)
            if df:
                ranked.append((dist, -df, term))
        ranked.sort()
        return [t for _, _, t in ranked[:SUGGESTION_LIMIT]]

    def _indexed_lookalikes(self, ctx: _Request, word: str, maxdist: int, audience_docs: DocSet) -> dict[str, int]:
        """Visible indexed words near `word` -> edit distance; at most MAX_CORRECTION_CANDIDATES examined per pass."""
        candidates: dict[str, int] = {}
        for prefix in (2, 1):
            near = ctx.reader.terms_within("spell", word, maxdist, prefix=prefix)
            for term in islice(near, MAX_CORRECTION_CANDIDATES):
                # Only visible words may stop the search: a staff-only look-alike must not hide a public one.
                if term != word and self._visible_df(ctx, term, audience_docs):
                    candidates.setdefault(term, distance(term, word, limit=maxdist + 1))
            if candidates:
                break
        return candidates

    def _suggestions(self, ctx: _Request, parsed: Parsed, text: str, audiences: tuple[str, ...],
                     total: int) -> list[str]:
        """"Did you mean" queries for words this audience's documents do not contain; never applied."""
        audience_docs = ctx.audience_docs(audiences)
        fixes: list[tuple[str, list[str]]] = []
        looked_up = 0
        for word in parsed.words():
            for part in word.split():
                if looked_up >= MAX_CORRECTED_WORDS:
                    break  # bounded work per query, whatever is cached (see MAX_CORRECTED_WORDS)
                tokens = ctx.analyze("spell", part)
                if len(tokens) != 1:
                    continue
                token = tokens[0]
                if not 3 <= len(token) <= MAX_CORRECTION_CHARS or not token.isalpha():
                    continue
                df = self._visible_df(ctx, token, audience_docs, cap=RARE_DF + 1)
                rare = df <= RARE_DF and total < 3
                if df and not rare:
                    continue
                if _is_clinical(token):
                    continue  # a real clinical term: never offer a look-alike (melasma is not melanoma)
                looked_up += 1
                found = ctx.state.corrections(token, audiences,
                                              lambda t=token: self._corrections(ctx, t, audience_docs))
                if df:  # rare but present: only a much commoner look-alike is worth offering
                    found = [f for f in found
                             if self._visible_df(ctx, ctx.analyze("spell", f)[0], audience_docs, 10 * df) >= 10 * df]
                if found:
                    fixes.append((part, found))
        if not fixes:
            return []
        out: list[str] = []
        for rank in range(SUGGESTION_LIMIT):
            suggestion = text
            changed = False
            for i, (part, found) in enumerate(fixes):
                choice = found[min(rank, len(found) - 1)] if i == 0 else found[0]
                new = re.sub(r"(?<!\w)" + re.escape(part) + r"(?!\w)", lambda _m, c=choice: c, suggestion,
                             count=1, flags=re.IGNORECASE)
                changed |= new != suggestion
                suggestion = new
            if changed and suggestion not in out:
                out.append(suggestion)
            if rank + 1 >= len(fixes[0][1]):
                break
        return out

    # autocomplete ----------------------------------------------------------------------------
    def suggest(self, prefix: str, *, limit: int = 8, audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> list[str]:
        """Completions for the search box: visible titles, then vocabulary terms, then words."""
        cleaned, _ = querylang.clean(prefix if isinstance(prefix, str) else "")
        key = title_key(cleaned)
        limit = max(1, min(50, int(limit or 8)))
        if not key:
            return []
        audiences = tuple(audiences or DEFAULT_AUDIENCES)
        return self._with(lambda ctx: self._suggest(ctx, key, limit, audiences), audiences)

    def _suggest(self, ctx: _Request, key: str, limit: int, audiences: tuple[str, ...]) -> list[str]:
        audience_docs = ctx.audience_docs(audiences)
        out: dict[str, str] = {}
        examined = 0
        for raw in ctx.reader.expand_prefix("title_key", key):
            examined += 1
            if examined > 500 or len(out) >= limit:
                break
            term = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            docs = ctx.term_docs("title_key", term) & audience_docs
            if docs:
                title = ctx.searcher.stored_fields(docs.first()).get("title") or term
                out.setdefault(title.casefold(), title)
        terms = _vocab_terms()
        i = bisect_left(terms, (key,))
        while i < len(terms) and terms[i][0].startswith(key) and len(out) < limit:
            out.setdefault(terms[i][0], terms[i][1])
            i += 1
        if len(out) < limit:
            head, _, last = key.rpartition(" ")
            if len(last) >= 2:
                words = []
                for n, raw in enumerate(ctx.reader.expand_prefix("spell", last)):
                    if n >= 300:
                        break
                    word = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                    df = self._visible_df(ctx, word, audience_docs)
                    if df:
                        words.append((-df, word))
                for _, word in sorted(words)[:limit]:
                    completion = f"{head} {word}".strip()
                    out.setdefault(completion.casefold(), completion)
                    if len(out) >= limit:
                        break
        return list(out.values())[:limit]
