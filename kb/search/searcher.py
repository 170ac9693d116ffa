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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kb.errors import IndexDamaged, IndexUnavailable
from kb.models import Hit, Results
from kb.querylang import Parsed, clean, parse
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
from kb.search.compile import _NegativeOnly, compile_query
from kb.search.interface import DEFAULT_AUDIENCES
from kb.search.postings import DocSet, _union
from kb.search.rank import _docs, rank
from kb.search.snippets import Marker, highlight_pattern, make_snippet
from kb.search.state import _Request, _Retired, _State
from kb.search.suggest import check_spelling, completions

log = logging.getLogger(__name__)

MAX_PER_PAGE = 100
FACET_FIELDS = (("category", "categories"), ("tag", "tags"), ("site", "site"), ("year", "year"))
FACET_LIMIT = 10
FILTER_FIELDS = {"tag": "tags", "category": "categories", "site": "site", "year": "year"}


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


def _matched_word(ctx: _Request, terms: list[str]) -> Callable[[str], bool]:
    """Whether a word in a result is one the query matched: it analyses to a searched term."""
    wanted = set(terms)
    return lambda word: any(t in wanted for t in ctx.analyze("body", word))


@dataclass(frozen=True)
class SearchRequest:
    """A search's arguments as every backend reads them: parsed query, bounded paging, merged filters."""

    parsed: Parsed
    text: str
    page: int
    per_page: int
    filters: dict[str, list[str]]
    audiences: tuple[str, ...]


def search_request(query: Any, page: Any, per_page: Any, filters: dict[str, list[str]] | None,
                   audiences: tuple[str, ...] | None) -> SearchRequest:
    """Normalise `SearchService.search` arguments: malformed queries parse to their words, paging is bounded."""
    parsed = parse(query if isinstance(query, str) else str(query or ""))
    text, _ = clean(query if isinstance(query, str) else "")
    return SearchRequest(parsed=parsed, text=text, page=max(1, int(page or 1)),
                         per_page=max(1, min(MAX_PER_PAGE, int(per_page or 10))),
                         filters=merge_filters(parsed, filters), audiences=tuple(audiences or DEFAULT_AUDIENCES))


def merge_filters(parsed: Parsed, filters: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The request's filters and the query's own (`tag:acne`), known names only, spaces folded, no repeats."""
    merged: dict[str, list[str]] = {}
    for source in (filters or {}, parsed.filters):
        for name, values in source.items():
            if name in FILTER_FIELDS:
                for value in values if isinstance(values, (list, tuple)) else [values]:
                    value = " ".join(str(value).split())
                    if value and value not in merged.setdefault(name, []):
                        merged[name].append(value)
    return merged


class Searcher:
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

    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
               exact: bool = False) -> Results:
        """One page of results; malformed queries degrade to their words with a notice, never an error."""
        r = search_request(query, page, per_page, filters, audiences)
        return self._with(lambda ctx: self._corrected_search(
            ctx, r.parsed, r.text, r.page, r.per_page, r.filters, sort, r.audiences, exact), r.audiences)

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

    def _corrected_search(self, ctx: _Request, parsed: Parsed, text: str, page: int, per_page: int,
                          filters: dict[str, list[str]], sort: str, audiences: tuple[str, ...],
                          exact: bool) -> Results:
        """Search; when words are misspelt and a confident correction exists, search that, openly.

        Unless `exact`, the corrected query is searched when it finds anything: `query` stays what
        was typed and `corrected_query` says what was searched (the page offers the typed words
        back). Ambiguous words (two equally near clinical terms) are offered, never applied.
        """
        results, browse = self._search(ctx, parsed, text, page, per_page, filters, sort, audiences)
        if browse or parsed.tree is None:
            return results
        spelling = check_spelling(ctx, parsed, text, audiences, results.total)
        if spelling.corrected and not exact:
            fixed_parsed = parse(spelling.corrected)
            if fixed_parsed.tree is not None:
                fixed, _ = self._search(ctx, fixed_parsed, spelling.corrected, page, per_page, filters, sort,
                                        audiences)
                if fixed.total:
                    fixed.query, fixed.corrected_query, fixed.notice = text, spelling.corrected, results.notice
                    fixed.suggestions = spelling.suggestions
                    return fixed
        results.suggestions = ([spelling.corrected] if spelling.corrected else []) + spelling.suggestions
        return results

    def _search(self, ctx: _Request, parsed: Parsed, text: str, page: int, per_page: int,
                filters: dict[str, list[str]], sort: str, audiences: tuple[str, ...]) -> tuple[Results, bool]:
        """(one page of results for `parsed`, whether it was a browse of filters alone)."""
        results = Results(query=text, total=0, page=page, per_page=per_page, notice=parsed.notice)
        allowed = self._allowed(ctx, audiences, filters)
        compiled = compile_query(ctx, parsed, text)
        browse = False
        if isinstance(compiled.match, _NegativeOnly):
            if not filters:
                results.notice = results.notice or "Add a word to search for: a query of exclusions only matches nothing."
                return results, True
            docs = allowed - _docs(ctx, compiled.match.exclude)
            browse = True
        elif compiled.match is None:
            if not filters:
                if text and not results.notice:
                    results.notice = "There are no searchable words in your query."
                return results, True
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
                ranked = rank(ctx, compiled, docs, first, per_page)
        pattern = highlight_pattern(compiled.highlight, compiled.surface, _matched_word(ctx, compiled.highlight))
        results.hits = [self._hit(ctx.searcher, docnum, score, pattern) for score, docnum in ranked]
        return results, browse

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
