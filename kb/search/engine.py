"""Engine: the search pipeline both backends run, over a request context of cached posting sets.

Whoosh (kb.search.searcher) and PostgreSQL (kb.search.pg) answer a search the same way: the audience's
documents narrowed by the filters, the compiled query's matches by bit algebra over posting lists
(kb.search.rank._docs), totals and facets counted from those bits, one page ranked by kb.search.rank, and
a confident spelling correction searched openly (kb.search.suggest). Only where the postings, facet tables,
dates and stored fields come from differs: a backend supplies the request context (`_with`) and the hits
(`_hits`). One pipeline is what keeps the two backends' answers equal, which their tests compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kb.models import Hit, Results
from kb.querylang import Parsed, clean, parse
from kb.search.compile import _NegativeOnly, compile_query
from kb.search.interface import DEFAULT_AUDIENCES
from kb.search.postings import DocSet, _union
from kb.search.rank import _docs, rank
from kb.search.snippets import Marker, highlight_pattern
from kb.search.suggest import check_spelling

MAX_PER_PAGE = 100
FACET_FIELDS = (("category", "categories"), ("tag", "tags"), ("site", "site"), ("year", "year"))
FACET_LIMIT = 10
FILTER_FIELDS = {"tag": "tags", "category": "categories", "site": "site", "year": "year"}


def _matched_word(ctx: Any, terms: list[str]) -> Callable[[str], bool]:
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


class PostingSearch:
    """The search pipeline over a request context; a backend supplies `_with` and `_hits`."""

    def _with(self, fn: Callable[[Any], Any], audiences: tuple[str, ...]) -> Any:
        """Run `fn` with a request context for the documents `audiences` may read."""
        raise NotImplementedError

    def _hits(self, ctx: Any, ranked: list[tuple[float, int]], pattern: Marker | None) -> list[Hit]:
        """The result of each ranked (score, document), with its snippet and section anchor."""
        raise NotImplementedError

    def _compile(self, ctx: Any, parsed: Parsed, text: str) -> Any:
        """The query compiled against the context's term statistics (a backend may fetch them in one go)."""
        return compile_query(ctx, parsed, text)

    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
               exact: bool = False) -> Results:
        """One page of results; malformed queries degrade to their words with a notice, never an error."""
        r = search_request(query, page, per_page, filters, audiences)
        return self._with(lambda ctx: self._corrected_search(
            ctx, r.parsed, r.text, r.page, r.per_page, r.filters, sort, r.audiences, exact), r.audiences)

    def _allowed(self, ctx: Any, audiences: tuple[str, ...], filters: dict[str, list[str]]) -> DocSet:
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

    def _corrected_search(self, ctx: Any, parsed: Parsed, text: str, page: int, per_page: int,
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

    def _search(self, ctx: Any, parsed: Parsed, text: str, page: int, per_page: int,
                filters: dict[str, list[str]], sort: str, audiences: tuple[str, ...]) -> tuple[Results, bool]:
        """(one page of results for `parsed`, whether it was a browse of filters alone)."""
        results = Results(query=text, total=0, page=page, per_page=per_page, notice=parsed.notice)
        allowed = self._allowed(ctx, audiences, filters)
        compiled = self._compile(ctx, parsed, text)
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
        results.hits = self._hits(ctx, ranked, pattern)
        return results, browse
