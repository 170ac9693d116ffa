"""Interface: what the web app and the CLI ask of a search backend, written down as a Protocol.

`kb.search.Searcher` (Whoosh) implements it; a PostgreSQL searcher is to implement the same three
methods with the same arguments, results and audience guarantee, and test fakes are typed against
it (tests/fakes.py checks their signatures). Callers hold one object per process, share it between
threads, and call nothing else on it: whatever else a backend needs stays behind these methods.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from kb.models import Results

#: What a caller that says nothing may see: public records only (an anonymous reader).
DEFAULT_AUDIENCES: tuple[str, ...] = ("public",)


@runtime_checkable
class SearchService(Protocol):
    """A search backend over the current index: one per process, safe to call from many threads.

    Audiences: every method takes `audiences`, the record audiences the caller may see, decided by
    its sign-in (never by request parameters). Anonymous callers pass ("public",), the default, and
    receive nothing that depends on staff material: not the hits, their order or scores, totals,
    facet values or counts, "Did you mean", corrections, completions, nor timing that grows with staff volume.
    The answer is the one a kb that never held staff records would give (DESIGN.md, security
    rules). Staff callers pass ("public", "staff") and search both as one collection.

    Errors: `kb.errors.IndexUnavailable` when there is no index to search yet, and its subclass
    `IndexDamaged` when the current index cannot be read; both carry a remedy, and callers answer
    them with 503. Bad query text is never an error (see `search`).
    """

    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
               exact: bool = False) -> Results:
        """One page of the documents `audiences` may see that match `query`, in kb's query language.

        query: words, "phrases", OR, -exclusions, ( ) and field filters such as `tag:laser`; a
            malformed query degrades to its words with `Results.notice` saying so, never an error.
        page: 1-based, values below 1 count as 1. per_page: clamped to 1..100.
        filters: {"tag" | "category" | "site" | "year": [values]}; the values of one filter are
            alternatives, filters narrow each other and those typed in the query; other names are
            ignored and an unknown value matches nothing. Filters alone (empty query) browse newest first.
        sort: "relevance" (BM25F; exact title and phrase matches first, newer first on equal
            scores) or "date" (newest first).
        exact: search the words as typed; otherwise words unknown to the audience's documents, the
            medical vocabulary and the English dictionary are corrected when one correction is
            clearly nearest, and that query is searched (never one clinical term into another).
        Returns `Results`: `total` counts every match, `hits` holds this page (escaped
        `snippet_html` with <mark>s, `anchor`/`section` of the matching section), `facets` the top
        values per category, tag, site and year over every match, `suggestions` the "Did you mean"
        queries (offered, not applied; equally near corrections are offered here as choices),
        `corrected_query` the words searched when misspelt words were corrected (`query` stays as
        typed; None when nothing was corrected), `notice` what was changed or ignored in the query.
        """
        ...

    def suggest(self, prefix: str, *, limit: int = 8, audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> list[str]:
        """Completions of what is typed in the search box: visible titles, then vocabulary terms, then words.

        At most `limit` (clamped to 1..50) distinct strings, best first; [] when `prefix` holds no
        word characters. Only words and titles of documents `audiences` may see are offered.
        """
        ...

    def close(self) -> None:
        """Release index files and pooled readers; searches still running finish on what they hold."""
        ...
