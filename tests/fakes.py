"""Test doubles shared by test modules: a recording search backend and the results it hands out.

Test modules import these (never each other). `FakeSearcher` implements kb.search's `SearchService`
with the interface's own signatures, checked by tests/test_search.py, so a change to the interface
fails there instead of passing unnoticed through a fake that accepts any keyword.
"""

from __future__ import annotations

from typing import Any

from kb.models import Hit, Results
from kb.search import DEFAULT_AUDIENCES


class FakeSearcher:
    """Stands in for kb.search.Searcher: records calls, returns prepared Results or raises."""

    def __init__(self, results: Results | None = None, suggestions: list[str] | None = None,
                 error: BaseException | None = None) -> None:
        self.results = results
        self.suggestions_list = suggestions or []
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
               exact: bool = False) -> Results:
        call = {"page": page, "per_page": per_page, "filters": filters, "sort": sort, "audiences": audiences}
        self.calls.append((query, call | ({"exact": True} if exact else {})))  # recorded only when asked
        if self.error is not None:
            raise self.error
        if self.results is not None:
            return self.results
        return Results(query=query, total=0, page=page, per_page=per_page)

    def suggest(self, prefix: str, *, limit: int = 8, audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> list[str]:
        self.calls.append((prefix, {"limit": limit, "audiences": audiences}))
        if self.error is not None:
            raise self.error
        return self.suggestions_list[:limit]

    def close(self) -> None:
        self.closed = True


def make_hit(n: int = 1, **changes: Any) -> Hit:
    values: dict[str, Any] = dict(
        id=n, url=f"https://derm.example.org/conditions/acne-{n}", title=f"Acne treatment {n}",
        snippet_html="Topical <mark>retinoids</mark> help &amp; work", score=3.25, site="derm.example.org",
        published="2024-03-02T10:00:00+00:00", tags=["retinoids"], categories=["Acne"], anchor="treatment",
        section="Treatment",
    )
    values.update(changes)
    return Hit(**values)


def make_results(query: str = "acne", total: int = 1, hits: list[Hit] | None = None, **changes: Any) -> Results:
    return Results(query=query, total=total, hits=[make_hit()] if hits is None else hits, **changes)
