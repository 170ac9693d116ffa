"""Searcher: the Whoosh implementation of the search interface; it orchestrates, the modules beside it work.

One `Searcher` per process serves every thread. It opens the generation CURRENT points at and,
per request, borrows a Whoosh searcher from a small pool tied to that generation and commit
(kb.search.state). When CURRENT or the commit changes it opens the new state and lets the old one
drain; it never calls `searcher.refresh()` (wrong results in every Whoosh fork, see DESIGN.md).
A search parses the query (kb.querylang), compiles it (kb.search.compile), matches and ranks it
(kb.search.rank), cuts snippets (kb.search.snippets) and offers corrections (kb.search.suggest);
a read that fails on a damaged index becomes IndexDamaged (kb.search.check), never a 500.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

from kb.errors import IndexDamaged, IndexUnavailable
from kb.models import Hit
from kb.querylang import clean
from kb.schema import (
    POINTER,
    is_legacy,
    named_generation,
    section_at,
    stored_body,
    stored_hit,
    stored_sections,
    subindexes_for,
    title_key,
)
from kb.search.check import READ_ERRORS, current_generation
from kb.search.check import problems as index_problems
from kb.search.engine import PostingSearch
from kb.search.interface import DEFAULT_AUDIENCES
from kb.search.snippets import Marker, make_snippet
from kb.search.state import _Request, _Retired, _State
from kb.search.suggest import completions

log = logging.getLogger(__name__)



def _no_index(index_root: Path) -> IndexUnavailable:
    """Why there is nothing to search: no index yet, or one of an older layout that must be rebuilt."""
    named = named_generation(index_root)
    if named is not None and named.is_dir() and is_legacy(named):
        return IndexUnavailable(f"The search index in {index_root} was built by an older kb (one index for every "
                                "audience) and must be rebuilt.", "Run `kb reindex` (or `kb update`) to rebuild it.")
    if named is not None:  # CURRENT names a generation that is gone or does not read: kb.search.check logged why
        return IndexDamaged(f"The search index in {index_root} cannot be read: generation {named.name} is damaged "
                            "or missing (`kb check` says what is wrong).")
    return IndexUnavailable(f"There is no search index in {index_root} yet.", "Run `kb reindex` to build it.")


class Searcher(PostingSearch):
    """Thread-safe search over the current index generation; reopens after a swap or update (a SearchService)."""

    def __init__(self, index_root: Path) -> None:
        self.index_root = Path(index_root)
        self._lock = threading.Lock()
        #: one state per set of sub-indexes read (kb.schema.subindexes_for): public alone, or all
        self._states: dict[tuple[str, ...], _State] = {}
        self._pointer_stats: dict[tuple[str, ...], tuple[int, int, int] | None] = {}
        self._closed = False

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
                except Exception as exc:  # vanished mid-swap or unreadable
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

    def _hits(self, ctx: _Request, ranked: list[tuple[float, int]], pattern: Marker | None) -> list[Hit]:
        return [self._hit(ctx.searcher, docnum, score, pattern) for score, docnum in ranked]

    def _hit(self, searcher: Any, docnum: int, score: float, pattern: Marker | None) -> Hit:
        stored = searcher.stored_fields(docnum)
        body = stored_body(stored)
        sections = stored_sections(stored)
        snippet, offset = make_snippet(body, pattern, sections)
        anchor, heading = section_at(sections, offset) if offset >= 0 else ("", "")
        return stored_hit(stored, score=score, snippet_html=snippet, anchor=anchor, section=heading)

    def suggest(self, prefix: str, *, limit: int = 8, audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> list[str]:
        """Completions for the search box: visible titles, then vocabulary terms, then words."""
        cleaned, _ = clean(prefix if isinstance(prefix, str) else "")
        key = title_key(cleaned)
        limit = max(1, min(50, int(limit or 8)))
        if not key:
            return []
        audiences = tuple(audiences or DEFAULT_AUDIENCES)
        return self._with(lambda ctx: completions(ctx, key, limit, audiences), audiences)
