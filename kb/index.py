"""Whoosh index writer: full rebuild into a new generation, atomic swap, incremental update.

The only module that writes the index. The fields, the document mapping and the layout of
generations and sub-indexes under `index_root` are kb.schema's, shared with the reader (kb.search);
whether a generation reads as searches read it is kb.search.check's (`current_generation`).
Each document goes to its audience's sub-index (`subindex_for`): `public/` holds the public
documents only and `staff/` every other one, so the two are disjoint and no document is indexed
twice. Generations of the older single-index layout (SCHEMA_VERSION 2) are not read: the next
`kb update` or `kb reindex` rebuilds them, saying so in the log.

A rebuild never touches the generation readers are using: it builds a new directory from the
store, verifies it, then flips CURRENT with write-temp + fsync + os.replace + fsync(dir), so a
crash at any point leaves either the old or the new index in service, never half of one.
An update commits the public sub-index before the staff one, so a record moving from public to
staff leaves the public index first; the store sequence advances only after both commits.
An update that only adds segments and marks deletions (a new TOC; no file a reader holds is
removed) commits in place. One that must rewrite segments (a moved record's purge, the fold of small
segments) would delete files that searches opened before it still read lazily, so it is made in a
copy-on-write generation of hard links, verified and swapped in like a rebuild (`_reindex_locked`).

Measured at 100,000 synthetic 600-word articles on 2 cores: ~300 articles/s, index 2.3x the
text. A full build commits one segment per SEGMENT_TEXT_MB of text (see `_build`), and updates
only merge their own small segments, plus the public segments still holding a record that has just
become staff, so its words leave the anonymous statistics at once (see `_merge_policy`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from whoosh import index as whoosh_index
from whoosh.filedb.filestore import FileStorage
from whoosh.index import LockError
from whoosh.query import Term
from whoosh.reading import SegmentReader
from whoosh.util.filelock import FileLock, try_for
from whoosh.writing import NO_MERGE

from kb.clock import utc_iso
from kb.errors import KBError, LockHeld
from kb.faults import checkpoint
from kb.models import Article
from kb.schema import (
    META,
    POINTER,
    PUBLIC_INDEX,
    SCHEMA_VERSION,
    article_document,
    build_schema,
    is_legacy,
    named_generation,
    read_meta,
    subindex_dirs,
    subindex_for,
)
from kb.search.check import current_generation, generation_problems
from kb.store import Store

log = logging.getLogger(__name__)

WRITE_LOCK = "WRITELOCK"
GEN_PREFIX = "gen-"
#: Old generations younger than this survive a swap, so searchers still reading them finish.
GRACE_SECONDS = 600.0
WRITER_TIMEOUT = 5.0
#: Memory for the posting pool; above this Whoosh spills sorted runs to disk (slow, see _build).
LIMIT_MB = 768
#: Text per segment in a full build: the pool holds ~25 bytes per byte of text, so this fits LIMIT_MB.
SEGMENT_TEXT_MB = 27
SMALL_SEGMENT_DOCS = 2000  # updates merge segments smaller than this ...
MERGE_SMALL_COUNT = 4  # ... once there are this many

Progress = Callable[[int, int], None]
#: A Whoosh merge policy: (writer, its segments) -> the segments kept as they are.
MergePolicy = Callable[[Any, list[Any]], list[Any]]


def _search_database(store: Store) -> str | None:
    """The database URL when `store` is a PostgresStore (its search index is a generation there), else None."""
    if store.path is not None:
        return None
    from kb.store.postgres import PostgresStore

    return store.url if isinstance(store, PostgresStore) else None


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
    if path.is_dir() and not path.is_symlink():  # a damaged pointer: a rename cannot replace a directory
        shutil.rmtree(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _note_legacy(root: Path) -> None:
    """Say why an index that exists is rebuilt: it has the layout of an older kb."""
    named = named_generation(root)
    if named is not None and named.is_dir() and is_legacy(named):
        log.warning("index generation %s is one index for every audience (built by an older kb): "
                    "rebuilding it as separate public and staff indexes", named.name)


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
def _write_lock(root: Path, timeout: float | None = None) -> Iterator[None]:
    """Serialise rebuild and update across processes (Whoosh's own lock is per directory)."""
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / WRITE_LOCK))
    if not try_for(lock.acquire, timeout=WRITER_TIMEOUT if timeout is None else timeout, delay=0.05):
        raise LockHeld(f"Another process is writing the search index in {root}.",
                       "Wait for the running reindex or update to finish, then try again.")
    try:
        yield
    finally:
        lock.release()


def _open(path: Path) -> Any:
    """Open one sub-index without mmap: Whoosh copies mmapped compound segments into memory."""
    return FileStorage(str(path), supports_mmap=False).open_index()


def _doc_count(generation: Path) -> int:
    """Live documents of a generation, every sub-index counted; 0 when it cannot be read (nothing to keep)."""
    total = 0
    try:
        for path in subindex_dirs(generation).values():
            ix = _open(path)
            try:
                total += ix.doc_count()
            finally:
                ix.close()
    except Exception as exc:  # a damaged index counts as no index: the rebuild replaces it
        log.warning("index generation %s cannot be counted (%s); replacing it", generation.name, exc)
        return 0
    return total


def _swap(root: Path, generation: Path, old: Path | None) -> None:
    """Point CURRENT at `generation`; `old` is touched so its grace period counts from now, not its last write."""
    _write_atomic(root / POINTER, generation.name + "\n")
    if old is not None:
        try:
            os.utime(old)  # _cleanup ages a generation by its mtime: a reader may have opened it a moment ago
        except OSError:
            pass


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


def _cancel(writers: Iterable[Any]) -> None:
    """Drop what these writers added and release their locks (a writer that committed is left alone)."""
    for writer in writers:
        if not getattr(writer, "is_closed", False):
            writer.cancel()


def _verify(generation: Path, expected: int, samples: dict[str, str]) -> None:
    """Refuse to swap in an index whose sub-indexes do not read back, count right and answer a query."""
    damage = generation_problems(generation, thorough=True)
    if damage:
        raise KBError(f"The new index cannot be read back: {damage[0]}",
                      "Check the disk (free space, errors), then run `kb reindex` again.")
    count = 0
    for name, path in subindex_dirs(generation).items():
        ix = _open(path)
        try:
            count += ix.doc_count()
            if name in samples:
                with ix.searcher() as searcher:
                    if not searcher.search(Term("id", samples[name]), limit=1):
                        raise KBError("The new index does not find an article it just indexed.",
                                      "Run `kb reindex` again.")
        finally:
            ix.close()
    if count != expected:
        raise KBError(f"The new index has {count} documents but {expected} articles were read.",
                      "Run `kb reindex` again; if it persists, run `kb check`.")


def rebuild(store: Store, index_root: Path, *, progress: Progress | None = None, max_loss: float = 0.10,
            force: bool = False, grace: float = GRACE_SECONDS) -> int:
    """Build a new generation from every stored article, verify it, swap it in; returns its doc count.

    Refuses (KBError) to replace an index that would lose more than `max_loss` of its documents
    unless `force`: an emptied or half-crawled store should not silently empty the search.
    A PostgresStore's index is its database's search generation (kb.search.pg_build); no Whoosh directory is made.
    """
    url = _search_database(store)
    if url is not None:
        from kb.search import pg_build

        return pg_build.rebuild(store, url, progress=progress, max_loss=max_loss, force=force)
    root = Path(index_root)
    with _write_lock(root):
        return _rebuild_locked(store, root, progress=progress, max_loss=max_loss, force=force, grace=grace)


def _rebuild_locked(store: Store, root: Path, *, progress: Progress | None, max_loss: float, force: bool,
                    grace: float) -> int:
    _note_legacy(root)
    seq = store.last_change()  # changes after this are replayed by the next update()
    total = store.count_primaries()  # one document per near-duplicate group
    generation = _new_generation_dir(root)
    started = time.perf_counter()
    try:
        counts, samples = _build(store, generation, total, progress)
        count = sum(counts.values())
        _verify(generation, count, samples)
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
        _write_meta(generation, {"seq": seq, "schema": SCHEMA_VERSION, "docs": count, "subindexes": counts,
                                 "built": utc_iso()})
        checkpoint("reindex:before-swap")  # crash tests: new generation committed and verified, not live
        _swap(root, generation, old)
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


def _build(store: Store, generation: Path, total: int,
           progress: Progress | None) -> tuple[dict[str, int], dict[str, str]]:
    """Write every article into its audience's sub-index; (documents per sub-index, one id of each).

    Whoosh sorts postings in memory up to `limitmb` and otherwise spills sorted runs to disk
    and merges them in Python at commit, which made a 100,000-article build 3x slower. Segments
    that fit in memory avoid the spill; they are not merged afterwards (a merge re-sorts every
    posting the same way), so a large index has a few segments, which searches handle well.
    Both sub-indexes are written in one pass over the store; once their uncommitted text together
    passes SEGMENT_TEXT_MB the larger one commits a segment, so memory stays what one index needed.
    """
    indexes: dict[str, Any] = {}
    writers: dict[str, Any] = {}
    try:
        for name, path in subindex_dirs(generation).items():
            path.mkdir()
            indexes[name] = whoosh_index.create_in(str(path), build_schema())
        counts = dict.fromkeys(indexes, 0)
        pending = dict.fromkeys(indexes, 0)  # text bytes added since the sub-index's last commit
        samples: dict[str, str] = {}
        try:
            # Separate files per segment (not one compound file): read through Python's C file objects,
            # searches are ~30% faster than through Whoosh's compound sub-file wrapper.
            for name, ix in indexes.items():
                writers[name] = _open_writer(ix, limitmb=LIMIT_MB, compound=False)
            for article in _iter_store(store):
                doc = article_document(article)
                name = subindex_for(doc["audience"])
                writers[name].add_document(**doc)
                samples.setdefault(name, doc["id"])
                counts[name] += 1
                pending[name] += len(article.text) + len(article.title) + 200
                if sum(pending.values()) > SEGMENT_TEXT_MB * 1024 * 1024:
                    fullest = max(pending, key=pending.__getitem__)
                    writers[fullest].commit(mergetype=NO_MERGE)
                    writers[fullest] = _open_writer(indexes[fullest], limitmb=LIMIT_MB, compound=False)
                    pending[fullest] = 0
                done = sum(counts.values())
                if progress and done % 200 == 0:
                    progress(done, max(total, done))
        except BaseException:
            _cancel(writers.values())
            raise
        checkpoint("reindex:before-commit")  # crash tests: every document added, nothing committed
        for writer in writers.values():
            writer.commit(mergetype=NO_MERGE)
        if progress:
            done = sum(counts.values())
            progress(done, max(total, done))
        return counts, samples
    finally:
        for ix in indexes.values():
            ix.close()


def update(store: Store, index_root: Path) -> tuple[int, int]:
    """Apply the store's changes since the last build or update; (documents indexed, deleted).

    Builds the first generation when there is none, and rebuilds when the schema changed.
    The store sequence is saved only after the commit, so a crash replays, never skips.
    On a PostgresStore the database's current search generation is changed in place, in one transaction
    (kb.search.pg_build.update: the same semantics as `_apply`, a rebuild for large change sets).
    """
    url = _search_database(store)
    if url is not None:
        from kb.search import pg_build

        return pg_build.update(store, url)
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
        return _reindex_locked(store, root, generation, upserts, deletes, seq=newest)


def reindex_ids(store: Store, index_root: Path, *, upsert: set[int], delete: set[int]) -> tuple[int, int]:
    """(Re)index exactly these article ids in the current generation; ids gone from the store are deleted.

    On a PostgresStore the database's current search generation is changed in place (kb.search.pg_build).
    """
    url = _search_database(store)
    if url is not None:
        from kb.search import pg_build

        return pg_build.reindex_ids(store, url, upsert=upsert, delete=delete)
    root = Path(index_root)
    with _write_lock(root):
        generation = current_generation(root)
        if generation is None:
            raise KBError("There is no search index to update.", "Run `kb reindex` first.")
        return _reindex_locked(store, root, generation, upsert, delete)


def _small_segments(segments: list[Any]) -> list[Any]:
    """Small segments (left by earlier updates) to fold together, once there are enough of them.

    Whoosh's default policy would, on the first update after a full build, merge nearly all of
    its equal-sized segments, re-sorting every posting (minutes at 100,000 articles).
    """
    small = [seg for seg in segments if seg.doc_count_all() < SMALL_SEGMENT_DOCS]
    return small if len(small) >= MERGE_SMALL_COUNT else []


def _holds_deleted(writer: Any, segment: Any, ids: frozenset[str]) -> bool:
    """Whether `segment` still holds a (deleted) document of one of `ids`: postings keep deleted ones."""
    if not ids or not segment.has_deletions():
        return False
    reader = SegmentReader(writer.storage, writer.schema, segment)
    try:
        return any(reader.doc_frequency("id", article_id) for article_id in ids)
    finally:
        reader.close()


def _merge_policy(purge: frozenset[str] = frozenset()) -> MergePolicy:
    """Merge policy for updates: fold small segments together, and rewrite the segments holding `purge` ids.

    Whoosh counts a deleted document in document counts, field lengths, term frequencies and the
    word lists until its segment is rewritten. A record that left `public/` for staff must leave
    those anonymous statistics at once (README "Security"), so the segments holding its deleted
    copy are rewritten without it: only those, so the cost is the size of the segments it was in.
    """
    def policy(writer: Any, segments: list[Any]) -> list[Any]:
        merged = _small_segments(segments)
        purged = [seg for seg in segments if seg not in merged and _holds_deleted(writer, seg, purge)]
        if any(not seg.is_compound() for seg in purged):
            writer.compound = False  # keep a full build's layout: separate files search ~30% faster
        for seg in merged + purged:
            if seg.doc_count():  # a segment whose documents are all deleted is just dropped
                reader = SegmentReader(writer.storage, writer.schema, seg)
                try:
                    writer.add_reader(reader)
                finally:
                    reader.close()
        if purged:
            log.info("rewriting %d segment(s) of %d documents to drop records that left the public index",
                     len(purged), sum(seg.doc_count_all() for seg in purged))
        return [seg for seg in segments if seg not in merged and seg not in purged]

    return policy


class _RewriteNeeded(Exception):
    """Raised before an in-place commit that would rewrite segments: the update is redone in a copy."""


def _reindex_locked(store: Store, root: Path, generation: Path, upsert: set[int], delete: set[int],
                    seq: int | None = None) -> tuple[int, int]:
    """Apply these changes in place, or in a copy of the generation swapped in when segments are rewritten.

    Whoosh deletes a rewritten segment's files at commit, and a searcher opened before it reads its
    columns lazily: it would answer with empty fields and wrong scores. In a hard-linked copy the old
    generation keeps every file until `_cleanup` removes it after the grace period. `seq`, when given,
    is saved with the changes (the store sequence they bring the index up to).
    """
    try:
        return _apply(store, generation, upsert, delete, seq, rewrite=False)
    except _RewriteNeeded:
        pass
    started = time.perf_counter()
    copy = _copy_generation(root, generation)
    try:
        indexed, deleted = _apply(store, copy, upsert, delete, seq, rewrite=True)
        meta = read_meta(copy)
        _verify(copy, int(meta["docs"]), _samples(copy))
        checkpoint("update:before-swap")  # crash tests: the copy committed and verified, not live
        _swap(root, copy, generation)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    log.info("index update rewrote segments in a new generation %s in %.1fs", copy.name,
             time.perf_counter() - started)
    _cleanup(root, {copy.name, generation.name}, GRACE_SECONDS)
    return indexed, deleted


def _copy_generation(root: Path, generation: Path) -> Path:
    """A new generation directory of hard links to `generation`'s files (copies where linking fails).

    Safe to write into: Whoosh never reopens an existing file for writing (segments get new random
    names, a TOC is written to a temporary name and renamed, kb's meta is replaced), it only
    deletes names, which removes the copy's link and leaves the old generation's. Lock files are
    not carried over: an flock on a shared inode would lock both generations.
    """
    target = _new_generation_dir(root)
    try:
        _link_tree(generation, target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _link_tree(source: Path, target: Path) -> None:
    """Mirror `source` into the existing directory `target` with hard links, falling back to copies."""
    for entry in sorted(source.iterdir()):
        dest = target / entry.name
        if entry.is_dir():
            dest.mkdir()
            _link_tree(entry, dest)
        elif not entry.name.endswith("LOCK"):
            try:
                os.link(entry, dest)
            except OSError as exc:  # another filesystem, or links not supported
                log.debug("copying %s instead of linking it (%s)", entry, exc)
                shutil.copy2(entry, dest)
    _fsync_dir(target)


def _samples(generation: Path) -> dict[str, str]:
    """One live document id of each non-empty sub-index, for `_verify` to search for."""
    out: dict[str, str] = {}
    for name, path in subindex_dirs(generation).items():
        ix = _open(path)
        try:
            with ix.reader() as reader:
                for docnum in reader.all_doc_ids():
                    out[name] = str(reader.stored_fields(docnum)["id"])
                    break
        finally:
            ix.close()
    return out


def _apply(store: Store, generation: Path, upsert: set[int], delete: set[int], seq: int | None, *,
           rewrite: bool) -> tuple[int, int]:
    """Each id leaves every sub-index and is written again into its audience's one (when still stored).

    Sub-indexes nothing changed in are not committed (no new commit: their readers keep their caches),
    unless `rewrite` and their small segments are due to be folded.
    A record that leaves the public one for another audience is purged from its public segments
    (`_merge_policy`): anonymous statistics then equal those of a build that never had it public.
    Without `rewrite`, raises _RewriteNeeded (having committed nothing) when a commit would rewrite segments.
    The public one commits first, so a crash between the commits never leaves a record that became
    staff in the public index; the store sequence is not advanced, and the next update replays both.
    """
    indexes: dict[str, Any] = {}
    writers: dict[str, Any] = {}
    try:
        indexed = deleted = 0
        changed: set[str] = set()
        left_public: set[str] = set()  # ids of records whose audience is no longer public
        try:
            for name, path in subindex_dirs(generation).items():
                indexes[name] = _open(path)
                writers[name] = _open_writer(indexes[name], limitmb=LIMIT_MB)
            due = {name for name, writer in writers.items() if _small_segments(writer.segments)}
            if due and not rewrite:
                raise _RewriteNeeded
            found: set[int] = set()
            live = sorted(set(upsert) - store.duplicate_ids(upsert))  # a duplicate's document is deleted below
            for article in _with_sources(store, live):
                doc = article_document(article)
                home = subindex_for(doc["audience"])
                for name, writer in writers.items():
                    if name == home:
                        writer.update_document(**doc)
                        changed.add(name)
                    elif writer.delete_by_term("id", doc["id"]):  # its audience changed
                        changed.add(name)
                        if name == PUBLIC_INDEX:
                            left_public.add(doc["id"])
                found.add(int(article.id or 0))
                indexed += 1
            for article_id in sorted(set(delete) | (set(upsert) - found)):
                for name, writer in writers.items():
                    removed = writer.delete_by_term("id", str(article_id))
                    if removed:
                        changed.add(name)
                        deleted += removed
            if left_public and not rewrite:
                raise _RewriteNeeded
        except BaseException:
            _cancel(writers.values())
            raise
        checkpoint("update:before-commit")  # crash tests: changes written, not committed
        try:
            for name, writer in writers.items():  # SUBINDEXES order: public first
                if name in changed or name in due:
                    writer.commit(mergetype=_merge_policy(frozenset(left_public) if name == PUBLIC_INDEX
                                                          else frozenset()))
                else:
                    writer.cancel()
        except BaseException:
            _cancel(writers.values())
            raise
        counts = {name: ix.doc_count() for name, ix in indexes.items()}
    finally:
        for ix in indexes.values():
            ix.close()
    meta = read_meta(generation)
    meta["docs"] = sum(counts.values())
    meta["subindexes"] = counts
    if seq is not None:
        meta["seq"] = max(int(meta.get("seq", 0)), seq)
    _write_meta(generation, meta)
    log.info("index updated: %d indexed, %d deleted in %s", indexed, deleted, generation.name)
    return indexed, deleted


def indexed_hashes(index_root: Path) -> dict[int, str]:
    """Article id -> content hash of every live document in the current generation (for `kb check`).

    Every sub-index is read. A document in the wrong sub-index for its audience, or in both, is
    reported with an empty hash: `kb check` then counts it stale and `--repair` re-files it.
    """
    generation = current_generation(Path(index_root))
    if generation is None:
        return {}
    out: dict[int, str] = {}
    for name, path in subindex_dirs(generation).items():
        ix = _open(path)
        try:
            with ix.reader() as reader:
                if not reader.doc_count_all():
                    continue  # an empty sub-index (no segments) has no columns
                misplaced = _misplaced(reader, name)
                ids = reader.column_reader("id", translate=True)
                hashes = reader.column_reader("hash", translate=True)
                for n in reader.all_doc_ids():
                    article_id = int(ids[n])
                    out[article_id] = "" if article_id in out or n in misplaced else hashes[n]
        finally:
            ix.close()
    return out


def _misplaced(reader: Any, name: str) -> set[int]:
    """Live documents of sub-index `name` whose audience belongs in another sub-index."""
    out: set[int] = set()
    for raw in reader.lexicon("audience"):
        audience = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if subindex_for(audience) != name:
            out.update(reader.postings("audience", audience).all_ids())
    return out
