"""Read an index the way searches do, so a damaged index is told apart from a good one.

Opening a Whoosh index reads only its table of contents; a truncated or overwritten segment file
shows up later, when a search reads the damaged part. `problems()` opens every segment of every
index directory and reads what searches read: posting lists of each field, stored fields of
documents, the sortable columns and the field lengths. It returns what it could not read, one
plain sentence each, and never raises, so callers decide: the searcher and the rebuild treat a
damaged generation as no index, `kb check` reports it and `kb check --repair` rebuilds it.

Two depths. The quick check (`current_generation`, so the searcher, /healthz, update and the
rebuild's loss guard) reads the first and last posting of the first lists of every field, the
last list written (the end of the postings file), the stored fields and columns of a few documents
spread over each segment: ~15 ms for 10,000 articles, then a directory scan while no file changes.
The thorough check (`kb check`, verifying a new generation before the swap) decodes up to
THOROUGH_TERMS whole posting lists spread over every field's term list, THOROUGH_DOCS documents
per segment and every field length: ~0.8 s for 10,000 articles. Measured on 2 cores.

`current_generation` (the generation CURRENT names, when it reads) lives here too: the searcher, the
writer (kb.index, before an update or a swap) and `kb check` ask the same question the same way,
and the reader never imports the writer. The table of contents is a pickle: call this only on
generations kb wrote itself (DESIGN.md).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import threading
import zlib
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

from whoosh.filedb.filestore import FileStorage
from whoosh.index import TOC, EmptyIndexError
from whoosh.reading import CorruptIndexError, SegmentReader

from kb.schema import META, is_legacy, named_generation, read_meta, subindex_dirs

log = logging.getLogger(__name__)

INDEX_NAME = "MAIN"  # Whoosh's default index name inside a directory
QUICK_TERMS = 2  # first posting lists read per field in a quick check
QUICK_DOCS = 4  # documents whose stored fields a quick check reads, per segment
THOROUGH_TERMS = 200  # posting lists read per field and segment in a thorough check
THOROUGH_DOCS = 200  # documents read per segment in a thorough check
LENGTH_SLACK = 0.15  # one-byte lengths are at most 9.1% off each, so their sum too
CACHE_SIZE = 32  # quick results kept: a few generations times their sub-indexes
RETRIES = 3  # an update in place may replace segments while we read: read the new commit again
_TOC_NAME = re.compile(rf"_{INDEX_NAME}_(\d+)\.toc")
#: What reading index bytes that do not decode raises (a file cut short, overwritten or gone): a search
#: failing with one of these met damage, even where the quick check did not look.
READ_ERRORS: tuple[type[Exception], ...] = (CorruptIndexError, EOFError, OSError, UnicodeError,
                                            pickle.UnpicklingError, struct.error, zlib.error)
_quick_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], tuple[str, ...]] = {}
_cache_lock = threading.Lock()


def problems(dirs: Iterable[Path], *, thorough: bool = False) -> list[str]:
    """What could not be read in these index directories, one sentence each; empty when all is readable.

    Quick results are remembered per directory listing (names, sizes, modification times), so
    health probes and every `current_generation` call cost a directory scan until a file changes.
    """
    found: list[str] = []
    for path in map(Path, dirs):
        if thorough:
            found += _stable_problems(path, thorough=True)
            continue
        key = (str(path), _fingerprint(path))
        with _cache_lock:
            cached = _quick_cache.get(key)
        if cached is None:
            cached = tuple(_stable_problems(path, thorough=False))
            if not key[1]:  # the directory could not be listed: nothing to key a result on
                found += cached
                continue
            with _cache_lock:
                _quick_cache[key] = cached
                while len(_quick_cache) > CACHE_SIZE:
                    _quick_cache.pop(next(iter(_quick_cache)))
        found += cached
    return found


def generation_problems(generation: Path, *, thorough: bool = False) -> list[str]:
    """What cannot be read in the sub-indexes of `generation`, as searches read them."""
    return problems(subindex_dirs(generation).values(), thorough=thorough)


def current_generation(index_root: Path) -> Path | None:
    """The generation directory CURRENT points at, or None when no usable index exists.

    A generation that cannot be read as searches read it counts as none, with a warning: searches
    answer "unavailable" and the next update or rebuild replaces it (DESIGN: never a traceback).
    """
    path = named_generation(index_root)
    if path is None or not path.is_dir() or is_legacy(path):
        return None  # an older single-index generation counts as none: see kb.index `_note_legacy`
    damage = generation_problems(path)
    if not read_meta(path):  # written last when a generation is made: without it the build never finished
        damage.append(f"{META} is missing or is not what kb writes (a store sequence and a schema version)")
    if damage:
        _warn_damaged(str(path), tuple(damage))
        return None
    return path


@lru_cache(maxsize=64)
def _warn_damaged(generation: str, damage: tuple[str, ...]) -> None:
    """Log a damaged generation once per distinct damage, not on every health probe or search."""
    log.warning("index generation %s cannot be read and counts as no index: %s; `kb reindex` rebuilds it",
                Path(generation).name, "; ".join(damage[:3]))


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file of the directory is written, truncated, replaced or removed."""
    try:
        with os.scandir(path) as entries:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()))
    except OSError:
        return ()


def _stable_problems(path: Path, thorough: bool) -> list[str]:
    """Problems of one directory, read again when a writer committed meanwhile (files replaced under us)."""
    found: list[str] = []
    for _ in range(RETRIES):
        before = _latest_toc(path)
        found = _dir_problems(path, thorough)
        if not found or _latest_toc(path) == before:
            return found
        log.debug("index %s changed while being checked; checking the new commit", path)
    return found


def _latest_toc(path: Path) -> int:
    """Number of the newest commit (the highest _MAIN_<n>.toc), -1 when there is none."""
    try:
        names = [p.name for p in path.iterdir()]
    except OSError:
        return -1
    found = [_TOC_NAME.fullmatch(n) for n in names]
    return max((int(m[1]) for m in found if m), default=-1)


class _ClosingStorage(FileStorage):
    """A read-only FileStorage that remembers the files it opens: Whoosh leaves them open when a read fails."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), supports_mmap=False, readonly=True)
        self.opened: list[Any] = []

    def open_file(self, name: str, **kwargs: Any) -> Any:
        handle = super().open_file(name, **kwargs)
        self.opened.append(handle)
        return handle

    def close_all(self) -> None:
        for handle in self.opened:
            if not handle.is_closed:
                handle.close()
        self.opened.clear()


def _dir_problems(path: Path, thorough: bool) -> list[str]:
    if not path.is_dir():
        return [f"{path.name}: the index directory is missing."]
    storage = _ClosingStorage(path)
    try:
        try:
            toc = TOC.read(storage, INDEX_NAME)
        except EmptyIndexError:
            return [f"{path.name}: the table of contents (_{INDEX_NAME}_*.toc) is missing."]
        except Exception as exc:  # any failure to decode it: the directory is no index
            return [f"{path.name}: the table of contents cannot be read ({_describe(exc)})."]
        found: list[str] = []
        for segment in toc.segments:
            found += _segment_problems(storage, toc.schema, segment, toc.generation, thorough, path.name)
        return found
    finally:
        storage.close_all()


def _segment_problems(storage: Any, schema: Any, segment: Any, generation: int, thorough: bool,
                      where: str) -> list[str]:
    name = f"{where}/{segment.segment_id()}"
    try:
        reader = SegmentReader(storage, schema, segment, generation=generation)
    except Exception as exc:  # the terms file, compound file or per-document files do not open
        return [f"{name}: the segment cannot be opened ({_describe(exc)})."]
    try:
        found = _postings_problems(reader, thorough, name)
        found += _document_problems(reader, thorough, name)
        return found
    finally:
        try:
            reader.close()
        except Exception:  # closing half-opened files is best effort
            log.debug("closing segment reader %s failed", name, exc_info=True)


def _postings_problems(reader: SegmentReader, thorough: bool, name: str) -> list[str]:
    """Read posting lists of every field; the last field's last term ends the postings file."""
    try:
        fields = list(reader.indexed_field_names())
    except Exception as exc:
        return [f"{name}: its list of fields cannot be read ({_describe(exc)})."]
    found: list[str] = []
    for n, fieldname in enumerate(fields):
        if fieldname not in reader.schema:
            found.append(f"{name}: field {fieldname!r} is not in the schema.")
            continue
        try:
            terms = _sample_terms(reader, fieldname, thorough, last=n == len(fields) - 1)
        except Exception as exc:
            found.append(f"{name}: the terms of field {fieldname!r} cannot be read ({_describe(exc)}).")
            continue
        for term in terms:
            try:
                _read_postings(reader, fieldname, term, full=thorough)
            except Exception as exc:
                found.append(f"{name}: the postings of {fieldname}:{term!r} cannot be read ({_describe(exc)}).")
                break  # one per field says enough
    return found


def _sample_terms(reader: SegmentReader, fieldname: str, thorough: bool, last: bool) -> list[bytes]:
    """Terms whose postings to read: the first ones, a spread over the field when thorough, the last."""
    if not thorough and not last:
        return list(islice(reader.lexicon(fieldname), QUICK_TERMS))
    terms = list(reader.lexicon(fieldname))
    if not thorough:
        return terms[:QUICK_TERMS] + terms[-1:]
    step = max(1, len(terms) // THOROUGH_TERMS)
    return terms[::step] + terms[-1:]


def _read_postings(reader: SegmentReader, fieldname: str, term: bytes, *, full: bool) -> None:
    """Decode a posting list as ranking and phrases do: every block when `full`, else the first and last.

    The quick read still walks every block header on its way to the last block, so a posting list
    cut short fails either way. Whoosh hides deleted documents (an update replaced them) from the
    list, so a list may legitimately come out shorter than the term list says, never longer.
    """
    info = reader.term_info(fieldname, term)
    matcher = reader.postings(fieldname, term)
    count = reader.doc_count_all()
    deleted = reader.doc_count_all() - reader.doc_count()
    if not full:
        _read_ends(reader, matcher, info.max_id(), deleted)
        return
    previous, seen = -1, 0
    while matcher.is_active():
        previous = _read_posting(matcher, count, previous)
        seen += 1
        matcher.next()
    if not info.doc_frequency() - deleted <= seen <= info.doc_frequency():
        raise ValueError(f"{seen} postings where the term list says {info.doc_frequency()}")


def _read_ends(reader: SegmentReader, matcher: Any, last: int, deleted: int) -> None:
    """The first posting, then a skip (block header by block header) to the last one."""
    if not matcher.is_active():
        if not deleted:
            raise ValueError("the posting list is empty")
        return  # every posting is of a deleted document: Whoosh read them all to find that out
    count = reader.doc_count_all()
    if _read_posting(matcher, count, -1) < last:
        matcher.skip_to(last)
    if matcher.is_active():
        if _read_posting(matcher, count, -1) != last:
            raise ValueError(f"the last posting is not document {last}")
    elif not reader.is_deleted(last):
        raise ValueError("the posting list ends early")


def _read_posting(matcher: Any, count: int, previous: int) -> int:
    """The current posting's document number, after decoding its weight and value."""
    if not matcher.is_active():
        raise ValueError("the posting list ends early")
    docnum = matcher.id()
    if not previous < docnum < count:
        raise ValueError(f"document number {docnum} out of order or range")
    matcher.weight()
    matcher.value()
    return docnum


def _document_problems(reader: SegmentReader, thorough: bool, name: str) -> list[str]:
    """Stored fields, sortable columns and field lengths of documents spread over the segment."""
    count = reader.doc_count_all()
    if count == 0:
        return []
    wanted = THOROUGH_DOCS if thorough else QUICK_DOCS
    step = max(1, count // wanted)
    docnums = sorted(set(range(0, count, step)) | {count - 1})
    found: list[str] = []
    for docnum in docnums:
        try:
            _read_document(reader, docnum)
        except Exception as exc:
            found.append(f"{name}: the stored fields of document {docnum} cannot be read ({_describe(exc)}).")
            break
    found += _column_problems(reader, docnums, thorough, name)
    return found


def _read_document(reader: SegmentReader, docnum: int) -> None:
    """Stored fields as a result needs them: the compressed body and the JSON lists decode."""
    stored = reader.stored_fields(docnum)
    if not isinstance(stored, dict):
        raise ValueError(f"stored fields are {type(stored).__name__}, not a mapping")
    if stored.get("body_z"):
        zlib.decompress(stored["body_z"])
    for key in ("sections", "sources"):
        if stored.get(key):
            json.loads(stored[key])


def _column_problems(reader: SegmentReader, docnums: list[int], thorough: bool, name: str) -> list[str]:
    """Sortable columns (id, hash, dates) and the lengths of every scored field."""
    found: list[str] = []
    indexed = set(reader.indexed_field_names())
    for fieldname, fieldobj in reader.schema.items():
        try:
            if fieldobj.column_type is not None and fieldname in indexed:
                _check_column(reader, fieldname, docnums)
        except Exception as exc:
            found.append(f"{name}: the column of field {fieldname!r} cannot be read ({_describe(exc)}).")
        try:
            if fieldobj.scorable:
                _check_lengths(reader, fieldname, docnums, full=thorough)
        except Exception as exc:
            found.append(f"{name}: the lengths of field {fieldname!r} cannot be read ({_describe(exc)}).")
    return found


def _check_column(reader: SegmentReader, fieldname: str, docnums: list[int]) -> None:
    """A sortable field's column exists and its values read (kb check reads `id` and `hash` from them)."""
    if not reader.has_column(fieldname):
        raise ValueError("its column file is missing")
    column = reader.column_reader(fieldname, translate=False)
    for docnum in docnums:
        column[docnum]


def _check_lengths(reader: SegmentReader, fieldname: str, docnums: list[int], *, full: bool) -> None:
    """Field lengths (BM25's document lengths) read, and, read in full, add up to the recorded total.

    Whoosh stores each length in one byte (at most 9.1% off) and reads a short or missing length
    file as zeros, so only the sum against the total in the table of contents shows the loss.
    """
    for docnum in docnums:
        reader.doc_field_length(docnum, fieldname)
    total = reader.field_length(fieldname)
    if full and total:
        added = sum(reader.doc_field_length(docnum, fieldname) or 0 for docnum in range(reader.doc_count_all()))
        if not added:
            raise ValueError("its length column is missing or empty")
        if not 1 - LENGTH_SLACK <= added / total <= 1 + LENGTH_SLACK:
            raise ValueError(f"its lengths add up to {added}, not {total}")


def _describe(exc: BaseException) -> str:
    """Exception type and message, short: Whoosh's own messages can be long or empty."""
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
