"""Postings: document-id sets and Whoosh's posting lists read a block at a time; the one module on Whoosh internals.

Everything else in kb.search reads the index through Whoosh's public 2.7 API or through this module:
`DocSet` (document numbers as the bits of one int), `_term_blocks` (a term's postings, a whole W3
block at a time), `_length_bytes` (a field's one-byte lengths) and `_positions_decoder` (Whoosh's
pickled positions, decoded in C). They read `_read_data`, `seg._terms`, `column._dbfile` and
`whoosh.codec`, so this is the one file to diff when upgrading whoosh3 (DESIGN.md); each keeps a
portable fallback through the public API, which `tests/test_search.py` compares with the fast path.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from itertools import accumulate
from pickle import loads  # Whoosh's own posting format; the index is trusted (DESIGN.md)
from typing import Any, Callable, Iterable, Iterator

from whoosh import formats
from whoosh.codec.whoosh3 import LENGTHS_COLUMN
from whoosh.idsets import DocIdSet
from whoosh.reading import TermNotFound
from whoosh.util.numeric import length_to_byte

log = logging.getLogger(__name__)


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
        """The set of `ids`, sized once for the largest (a PostgreSQL posting array is 50,000 ids or more)."""
        ids = ids if isinstance(ids, (list, tuple, range)) else list(ids)
        buf = bytearray((max(size, max(ids, default=0)) >> 3) + 1)
        bit = _BIT
        for docnum in ids:
            buf[docnum >> 3] |= bit[docnum & 7]
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

    def as_bytes(self) -> bytes:
        """The bits as little-endian bytes (document d is bit d & 7 of byte d >> 3), built once."""
        if self._bytes is None:
            self._bytes = self.mask.to_bytes((self.mask.bit_length() + 7) >> 3, "little")
        return self._bytes

    def __len__(self) -> int:
        return self.mask.bit_count()

    def __bool__(self) -> bool:
        return self.mask != 0

    def __contains__(self, docnum: object) -> bool:
        raw = self.as_bytes()
        i = int(docnum) >> 3  # type: ignore[call-overload]
        return i < len(raw) and (raw[i] >> (int(docnum) & 7)) & 1 == 1  # type: ignore[call-overload]

    def __iter__(self):
        return iter(self.ids())

    def ids(self) -> list[int]:
        return [i << 3 | bit for i, byte in enumerate(self.as_bytes()) if byte for bit in _BITS[byte]]

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
    except Exception:  # another codec or fork: the public per-document call
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


def _positions_decoder(fmt: Any) -> Callable[[bytes], Iterable[int]]:
    """Positions of one posting value; Whoosh's Positions format (count + pickled deltas) in C."""
    if type(fmt) is not formats.Positions:
        return fmt.decode_positions

    def decode(value: bytes) -> Iterable[int]:
        body = value[4:]
        return accumulate(loads(body if body.endswith(b".") else body + b"."))

    return decode
