"""Whoosh index: schema, full rebuild into a new generation, atomic swap, incremental update.

The only module that writes the index. Layout under `index_root`:

    CURRENT                  name of the generation readers use (replaced atomically)
    WRITELOCK                one writer at a time across rebuild and update
    gen-<UTC timestamp>/     one complete Whoosh index each, plus kb-meta.json (store seq, doc count)

A rebuild never touches the generation readers are using: it builds a new directory from the
store, verifies it, then flips CURRENT with write-temp + fsync + os.replace + fsync(dir), so a
crash at any point leaves either the old or the new index in service, never half of one.

Measured at 100,000 synthetic 600-word articles on 2 cores: ~300 articles/s, index 2.3x the
text. A full build commits one segment per SEGMENT_TEXT_MB of text (see `_build`), and updates
only merge their own small segments (see `_merge_small`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zlib
from bisect import bisect_right
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from whoosh import formats
from whoosh import index as whoosh_index
from whoosh.fields import DATETIME, ID, KEYWORD, STORED, TEXT, Schema
from whoosh.filedb.filestore import FileStorage
from whoosh.index import LockError
from whoosh.query import Term
from whoosh.reading import SegmentReader
from whoosh.util.filelock import FileLock, try_for
from whoosh.writing import NO_MERGE

from kb.analysis import plain_analyzer, text_analyzer
from kb.errors import KBError, LockHeld
from kb.faults import checkpoint
from kb.models import Article
from kb.store import Store

log = logging.getLogger(__name__)

#: Bump when the schema or the document mapping changes: `update()` then rebuilds instead of mixing.
SCHEMA_VERSION = 2  # 2: one document per near-duplicate group, with its sources
POINTER = "CURRENT"
WRITE_LOCK = "WRITELOCK"
META = "kb-meta.json"
GEN_PREFIX = "gen-"
#: Words of the body indexed again as the "lead": pages state their subject up front.
LEAD_WORDS = 15
#: Old generations younger than this survive a swap, so searchers still reading them finish.
GRACE_SECONDS = 600.0
WRITER_TIMEOUT = 5.0
#: Memory for the posting pool; above this Whoosh spills sorted runs to disk (slow, see _build).
LIMIT_MB = 768
#: Text per segment in a full build: the pool holds ~25 bytes per byte of text, so this fits LIMIT_MB.
SEGMENT_TEXT_MB = 27
SMALL_SEGMENT_DOCS = 2000  # updates merge segments smaller than this ...
MERGE_SMALL_COUNT = 4  # ... once there are this many
COMPRESS_LEVEL = 1  # level 6 is ~10% smaller but costs 7% of the build time

Progress = Callable[[int, int], None]


def _spell_field() -> TEXT:
    """Unstemmed words for "Did you mean": presence only (no frequencies, no lengths), it is never scored.

    About a third of all postings are spelling postings, so dropping what scoring needs
    speeds the build up by ~10%.
    """
    spell = TEXT(analyzer=plain_analyzer(), phrase=False)
    spell.format = formats.Existence()
    spell.scorable = False
    return spell


def build_schema() -> Schema:
    """The fields of one article; stored fields are kept small (body compressed, no duplicates)."""
    text = text_analyzer()
    return Schema(
        id=ID(unique=True, stored=True, sortable=True),
        url=ID(stored=True),
        title=TEXT(analyzer=text, stored=True),
        title_key=ID(),  # whole normalised title: exact-title ranking and title autocomplete
        headings=TEXT(analyzer=text),
        tagtext=TEXT(analyzer=text),  # tags and categories as words, so query words can rank them
        tags=KEYWORD(commas=True, scorable=True, stored=True),  # exact values for filters and facets
        categories=KEYWORD(commas=True, stored=True),
        lead=TEXT(analyzer=text),
        body=TEXT(analyzer=text),
        spell=_spell_field(),
        site=ID(stored=True),
        audience=ID(stored=True),
        kind=ID(stored=True),
        published=DATETIME(sortable=True),
        pubdate=STORED(),  # the published string as the store has it
        year=ID(),
        sections=STORED(),  # compact JSON [[anchor, heading, start offset in body], ...]
        body_z=STORED(),  # zlib-compressed body for snippets; 3-4x smaller than the text
        hash=ID(sortable=True),  # content hash: `kb check` compares it with the store
        sources=STORED(),  # JSON [{"url", "site", "title"}, ...] of a near-duplicate group, primary first
    )


# -- document mapping ---------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[\W_]+")


def title_key(text: str) -> str:
    """Normalised whole title (lower case, punctuation folded to single spaces) for exact matching."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


def _clean_values(values: Iterable[str]) -> list[str]:
    """Facet values without the comma separator and blank entries, first spelling of each kept."""
    out: dict[str, str] = {}
    for value in values:
        value = _SPACE.sub(" ", str(value).replace(",", " ")).strip()
        if value and value.casefold() not in out:
            out[value.casefold()] = value
    return list(out.values())


def _parse_date(value: str | None) -> datetime | None:
    """ISO date or datetime (any offset) as naive UTC, or None when it cannot be read."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        match = re.match(r"(\d{4})-(\d{2})-(\d{2})", text)
        if not match:
            return None
        try:
            parsed = datetime(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def section_offsets(article: Article) -> list[list[Any]]:
    """[anchor, heading, start] per section, start being where its text begins in `article.text`.

    Found by searching each section's opening text after the previous one, so a hit's snippet
    position maps back to the section it came from for a `url#anchor` deep link.
    """
    body = article.text
    out: list[list[Any]] = []
    pos = 0
    for section in article.sections:
        start = -1
        for probe in (section.text.strip()[:60], section.heading.strip()):
            if probe:
                start = body.find(probe, pos)
                if start >= 0:
                    break
        if start < 0:
            start = pos
        out.append([section.anchor or "", section.heading or "", start])
        pos = start
    return out


def section_at(sections: list[list[Any]], offset: int) -> tuple[str, str]:
    """(anchor, heading) of the section containing character `offset` of the body."""
    if not sections:
        return "", ""
    starts = [s[2] for s in sections]
    i = bisect_right(starts, offset) - 1
    if i < 0:
        return "", ""
    return sections[i][0], sections[i][1]


def _spell_text(*parts: str) -> str:
    """Each distinct word once: the spelling field needs vocabulary, not frequencies."""
    return " ".join(dict.fromkeys(" ".join(parts).split()))


def lead_text(article: Article) -> str:
    return " ".join(filter(None, [article.description, " ".join(article.text.split()[:LEAD_WORDS])]))


def document_hash(content_hash: str, sources: list[dict[str, str]]) -> str:
    """The article's content hash, extended by its copies' links when it heads a near-duplicate group.

    So `kb check` also sees a document whose list of sources is out of date.
    """
    if not sources:
        return content_hash
    listed = json.dumps(sources, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{content_hash}\x00{listed}".encode("utf-8", "surrogatepass")).hexdigest()


def article_document(article: Article) -> dict[str, Any]:
    """The Whoosh document for one stored article (the store assigned `article.id`)."""
    if article.id is None:
        raise ValueError("article has no id: save it in the store first")
    headings = "\n".join(s.heading for s in article.sections if s.heading)
    tags = _clean_values(article.tags)
    categories = _clean_values(article.categories)
    published = _parse_date(article.published)
    doc: dict[str, Any] = {
        "id": str(article.id),
        "url": article.url,
        "title": article.title,
        "title_key": title_key(article.title),
        "headings": headings,
        "tagtext": " ".join(tags + categories),
        "tags": ",".join(tags),
        "categories": ",".join(categories),
        "lead": lead_text(article),
        "body": article.text,
        "spell": _spell_text(article.title, headings, article.text),
        "site": article.site or "",
        "audience": article.audience or "public",
        "kind": article.kind or "article",
        "pubdate": article.published or "",
        "sections": json.dumps(section_offsets(article), separators=(",", ":"), ensure_ascii=False),
        "body_z": zlib.compress(article.text.encode("utf-8", "surrogatepass"), COMPRESS_LEVEL),
        "hash": document_hash(article.content_hash, article.sources),
    }
    if article.sources:
        doc["sources"] = json.dumps(article.sources, separators=(",", ":"), ensure_ascii=False)
    if published is not None:
        doc["published"] = published
        doc["year"] = str(published.year)
    if not doc["title_key"]:
        del doc["title_key"]
    return doc


# -- generations ---------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def current_generation(index_root: Path) -> Path | None:
    """The generation directory CURRENT points at, or None when no usable index exists."""
    root = Path(index_root)
    try:
        name = (root / POINTER).read_text("utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        return None
    path = root / name
    if not path.is_dir() or not whoosh_index.exists_in(str(path)):
        return None
    return path


def read_meta(generation: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(generation) / META).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_meta(generation: Path, meta: dict[str, Any]) -> None:
    _write_atomic(Path(generation) / META, json.dumps(meta, indent=1, sort_keys=True))


def _new_generation_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    for n in range(1000):
        path = root / f"{GEN_PREFIX}{stamp}{'-' + str(n) if n else ''}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise KBError(f"Could not create a new index generation under {root}.", "Check the directory's permissions.")


@contextmanager
def _write_lock(root: Path, timeout: float = WRITER_TIMEOUT) -> Iterator[None]:
    """Serialise rebuild and update across processes (Whoosh's own lock is per directory)."""
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / WRITE_LOCK))
    if not try_for(lock.acquire, timeout=timeout, delay=0.05):
        raise LockHeld(f"Another process is writing the search index in {root}.",
                       "Wait for the running reindex or update to finish, then try again.")
    try:
        yield
    finally:
        lock.release()


def _open(generation: Path) -> Any:
    """Open one generation without mmap: Whoosh copies mmapped compound segments into memory."""
    return FileStorage(str(generation), supports_mmap=False).open_index()


def _doc_count(generation: Path) -> int:
    ix = _open(generation)
    try:
        return ix.doc_count()
    finally:
        ix.close()


def _cleanup(root: Path, keep: set[str], grace: float) -> None:
    """Remove generations other than `keep` once older than `grace` seconds (readers may linger)."""
    now = time.time()
    for path in root.iterdir():
        if not path.name.startswith(GEN_PREFIX) or path.name in keep or not path.is_dir():
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age >= grace:
            log.info("removing old index generation %s", path.name)
            shutil.rmtree(path, ignore_errors=True)


def _open_writer(ix: Any, **kwargs: Any) -> Any:
    try:
        return ix.writer(timeout=WRITER_TIMEOUT, **kwargs)
    except LockError:
        raise LockHeld("The search index is locked by another writer.",
                       "Wait for the running reindex or update to finish, then try again.") from None


def _verify(generation: Path, expected: int, sample_id: str | None) -> None:
    """Refuse to swap in an index that does not open, count right and answer a query."""
    ix = _open(generation)
    try:
        count = ix.doc_count()
        if count != expected:
            raise KBError(f"The new index has {count} documents but {expected} articles were read.",
                          "Run `kb reindex` again; if it persists, run `kb check`.")
        if sample_id is not None:
            with ix.searcher() as searcher:
                if not searcher.search(Term("id", sample_id), limit=1):
                    raise KBError("The new index does not find an article it just indexed.",
                                  "Run `kb reindex` again.")
    finally:
        ix.close()


def rebuild(store: Store, index_root: Path, *, progress: Progress | None = None, max_loss: float = 0.10,
            force: bool = False, grace: float = GRACE_SECONDS) -> int:
    """Build a new generation from every stored article, verify it, swap it in; returns its doc count.

    Refuses (KBError) to replace an index that would lose more than `max_loss` of its documents
    unless `force`: an emptied or half-crawled store should not silently empty the search.
    """
    root = Path(index_root)
    with _write_lock(root):
        return _rebuild_locked(store, root, progress=progress, max_loss=max_loss, force=force, grace=grace)


def _rebuild_locked(store: Store, root: Path, *, progress: Progress | None, max_loss: float, force: bool,
                    grace: float) -> int:
    seq = store.last_change()  # changes after this are replayed by the next update()
    total = store.count_primaries()  # one document per near-duplicate group
    generation = _new_generation_dir(root)
    started = time.perf_counter()
    try:
        count, sample = _build(store, generation, total, progress)
        _verify(generation, count, sample)
        if store.last_change() == seq and count != store.count_primaries():
            raise KBError(f"The new index has {count} documents but the store has "
                          f"{store.count_primaries()} articles (near-duplicates counted once).",
                          "Run `kb reindex` again.")
        old = current_generation(root)
        old_count = _doc_count(old) if old is not None else 0
        if old_count and count < (1.0 - max_loss) * old_count and not force:
            raise KBError(
                f"The new index would have {count} documents instead of {old_count} "
                f"(more than {max_loss:.0%} fewer); keeping the current index.",
                "Check the store (`kb stats`); if the loss is intended, use --force.")
        _write_meta(generation, {"seq": seq, "schema": SCHEMA_VERSION, "docs": count,
                                 "built": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        checkpoint("reindex:before-swap")  # crash tests: new generation committed and verified, not live
        _write_atomic(root / POINTER, generation.name + "\n")
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - started
    log.info("index rebuilt: %d documents in %.1fs (%.0f/s) into %s", count, elapsed,
             count / elapsed if elapsed else 0.0, generation.name)
    _cleanup(root, {generation.name} | ({old.name} if old is not None else set()), grace)
    return count


def _iter_store(store: Store, chunk: int = 1000) -> Iterator[Article]:
    """Every primary article (near-duplicates are listed in their primary's `sources`) in id order, by chunks."""
    ids = store.primary_ids()
    for i in range(0, len(ids), chunk):
        yield from _with_sources(store, ids[i:i + chunk])


def _with_sources(store: Store, ids: list[int]) -> Iterator[Article]:
    sources = store.group_sources(ids)
    for article in store.iter_articles(ids):
        article.sources = sources.get(int(article.id or 0), [])
        yield article


def _build(store: Store, generation: Path, total: int, progress: Progress | None) -> tuple[int, str | None]:
    """Write every article, committing one segment per SEGMENT_TEXT_MB of text.

    Whoosh sorts postings in memory up to `limitmb` and otherwise spills sorted runs to disk
    and merges them in Python at commit, which made a 100,000-article build 3x slower. Segments
    that fit in memory avoid the spill; they are not merged afterwards (a merge re-sorts every
    posting the same way), so a large index has a few segments, which searches handle well.
    """
    ix = whoosh_index.create_in(str(generation), build_schema())
    try:
        # Separate files per segment (not one compound file): read through Python's C file objects,
        # searches are ~30% faster than through Whoosh's compound sub-file wrapper.
        writer = _open_writer(ix, limitmb=LIMIT_MB, compound=False)
        count = 0
        text_bytes = 0
        sample: str | None = None
        try:
            for article in _iter_store(store):
                doc = article_document(article)
                writer.add_document(**doc)
                sample = sample or doc["id"]
                count += 1
                text_bytes += len(article.text) + len(article.title) + 200
                if text_bytes > SEGMENT_TEXT_MB * 1024 * 1024:
                    writer.commit(mergetype=NO_MERGE)
                    writer = _open_writer(ix, limitmb=LIMIT_MB, compound=False)
                    text_bytes = 0
                if progress and count % 200 == 0:
                    progress(count, max(total, count))
        except BaseException:
            writer.cancel()
            raise
        checkpoint("reindex:before-commit")  # crash tests: every document added, nothing committed
        writer.commit(mergetype=NO_MERGE)
        if progress:
            progress(count, max(total, count))
        return count, sample
    finally:
        ix.close()


def update(store: Store, index_root: Path) -> tuple[int, int]:
    """Apply the store's changes since the last build or update; (documents indexed, deleted).

    Builds the first generation when there is none, and rebuilds when the schema changed.
    The store sequence is saved only after the commit, so a crash replays, never skips.
    """
    root = Path(index_root)
    with _write_lock(root):
        generation = current_generation(root)
        meta = read_meta(generation) if generation is not None else {}
        if generation is None or meta.get("schema") != SCHEMA_VERSION:
            count = _rebuild_locked(store, root, progress=None, max_loss=1.0, force=True, grace=GRACE_SECONDS)
            return count, 0
        upserts, deletes, newest = store.changes_since(int(meta.get("seq", 0)))
        if not upserts and not deletes:
            return 0, 0
        indexed, deleted = _reindex_locked(store, generation, upserts, deletes)
        meta = read_meta(generation)
        meta["seq"] = max(int(meta.get("seq", 0)), newest)
        _write_meta(generation, meta)
        return indexed, deleted


def reindex_ids(store: Store, index_root: Path, *, upsert: set[int], delete: set[int]) -> tuple[int, int]:
    """(Re)index exactly these article ids in the current generation; ids gone from the store are deleted."""
    root = Path(index_root)
    with _write_lock(root):
        generation = current_generation(root)
        if generation is None:
            raise KBError("There is no search index to update.", "Run `kb reindex` first.")
        return _reindex_locked(store, generation, upsert, delete)


def _merge_small(writer: Any, segments: list[Any]) -> list[Any]:
    """Merge policy for updates: fold only small segments (left by earlier updates) together.

    Whoosh's default policy would, on the first update after a full build, merge nearly all of
    its equal-sized segments, re-sorting every posting (minutes at 100,000 articles).
    """
    small = [seg for seg in segments if seg.doc_count_all() < SMALL_SEGMENT_DOCS]
    if len(small) < MERGE_SMALL_COUNT:
        return list(segments)
    for seg in small:
        reader = SegmentReader(writer.storage, writer.schema, seg)
        try:
            writer.add_reader(reader)
        finally:
            reader.close()
    return [seg for seg in segments if seg not in small]


def _reindex_locked(store: Store, generation: Path, upsert: set[int], delete: set[int]) -> tuple[int, int]:
    ix = _open(generation)
    try:
        writer = _open_writer(ix, limitmb=LIMIT_MB)
        indexed = deleted = 0
        try:
            found: set[int] = set()
            live = sorted(set(upsert) - store.duplicate_ids(upsert))  # a duplicate's document is deleted below
            for article in _with_sources(store, live):
                writer.update_document(**article_document(article))
                found.add(int(article.id or 0))
                indexed += 1
            for article_id in sorted(set(delete) | (set(upsert) - found)):
                deleted += writer.delete_by_term("id", str(article_id))
        except BaseException:
            writer.cancel()
            raise
        checkpoint("update:before-commit")  # crash tests: changes written, not committed
        writer.commit(mergetype=_merge_small)
        docs = ix.doc_count()
    finally:
        ix.close()
    meta = read_meta(generation)
    meta["docs"] = docs
    _write_meta(generation, meta)
    log.info("index updated: %d indexed, %d deleted in %s", indexed, deleted, generation.name)
    return indexed, deleted


def indexed_hashes(index_root: Path) -> dict[int, str]:
    """Article id -> content hash of every live document in the current generation (for `kb check`)."""
    generation = current_generation(Path(index_root))
    if generation is None:
        return {}
    ix = _open(generation)
    try:
        with ix.reader() as reader:
            ids = reader.column_reader("id", translate=True)
            hashes = reader.column_reader("hash", translate=True)
            return {int(ids[n]): hashes[n] for n in reader.all_doc_ids()}
    finally:
        ix.close()
