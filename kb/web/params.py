"""Search parameters: validation with fix-it messages, their limits, and URLs that change one thing.

The pages and the API read the same parameters under the same limits (the OpenAPI document quotes them), so
they are parsed here once; a bad value raises BadParam (400) naming the parameter and what it accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import url_for
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter, Map

FILTERS: tuple[str, ...] = ("category", "tag", "site", "year")
FILTER_LABELS = {"category": "Topic", "tag": "Tag", "site": "Source site", "year": "Year"}
SORTS: tuple[str, ...] = ("relevance", "date")
MAX_PER_PAGE = 100
MAX_PAGE = 1000  # deep pages cost Whoosh page*per_page scored documents
MAX_QUERY_LENGTH = 500
MAX_FILTER_VALUES = 20
MAX_SUGGEST = 20
MAX_ARTICLE_ID = 2**63 - 1  # SQLite's largest INTEGER: a larger id in a URL is simply no article


class ArticleIdConverter(IntegerConverter):
    """Article ids in URLs: 0 to SQLite's largest INTEGER; a larger number is no article (404), not an overflow."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, max=MAX_ARTICLE_ID)


class BadParam(BadRequest):
    """A request parameter is out of range or malformed; the description says which and how to fix it."""


@dataclass
class SearchParams:
    """Validated search parameters; builds URLs that change one thing and keep the rest."""

    q: str = ""
    page: int = 1
    per_page: int = 10
    filters: dict[str, list[str]] = field(default_factory=dict)
    sort: str = "relevance"
    audience: str = ""  # one audience a staff reader narrowed results to; "" is everything they may see
    exact: bool = False  # search the typed words as they are: no spelling correction ("Search instead for")

    def pairs(self, *, q: str | None = None, page: int | None = None, filters: dict[str, list[str]] | None = None,
              sort: str | None = None, audience: str | None = None,
              exact: bool | None = None) -> list[tuple[str, str]]:
        exact = (self.exact and q is None) if exact is None else exact  # a new query is corrected again
        q = self.q if q is None else q
        filters = self.filters if filters is None else filters
        sort = self.sort if sort is None else sort
        audience = self.audience if audience is None else audience
        out: list[tuple[str, str]] = [("q", q)] if q else []
        for name in FILTERS:
            out += [(name, v) for v in filters.get(name, [])]
        if audience:
            out.append(("audience", audience))
        if exact:
            out.append(("exact", "1"))
        if sort != "relevance":
            out.append(("sort", sort))
        if page and page > 1:
            out.append(("page", str(page)))
        return out

    def url(self, **changes: Any) -> str:
        """URL of the HTML search page with `changes` applied; filter or query changes go back to page 1."""
        base = self.__dict__.get("_base")
        if base is None:  # a results page builds ~60 facet and chip links: resolve the route once
            base = self.__dict__["_base"] = url_for("pages.search")
        return base + "?" + urlencode(self.pairs(**changes))

    def page_url(self, page: int) -> str:
        return self.url(page=page)

    def sort_url(self, sort: str) -> str:
        return self.url(sort=sort)

    def query_url(self, q: str) -> str:
        return self.url(q=q)

    def exact_url(self) -> str:
        """This search with the typed words as they are ("Search instead for …")."""
        return self.url(exact=True)

    def has(self, name: str, value: str) -> bool:
        return value in self.filters.get(name, [])

    def with_filter(self, name: str, value: str) -> str:
        filters = {k: list(v) for k, v in self.filters.items()}
        if value not in filters.setdefault(name, []):
            filters[name].append(value)
        return self.url(filters=filters)

    def without_filter(self, name: str, value: str) -> str:
        filters = {k: [x for x in v if not (k == name and x == value)] for k, v in self.filters.items()}
        return self.url(filters={k: v for k, v in filters.items() if v})

    def toggle_filter(self, name: str, value: str) -> str:
        return self.without_filter(name, value) if self.has(name, value) else self.with_filter(name, value)

    @property
    def narrowed(self) -> bool:
        """Whether any filter (audience included) narrows the results, for "search without filters" links."""
        return bool(self.filters or self.audience)

    def scope(self, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """The audiences to search: the chosen one when the reader may see it, else all they may see."""
        return (self.audience,) if self.audience in allowed else allowed


def int_arg(args: MultiDict, name: str, default: int, minimum: int, maximum: int) -> int:
    """A whole-number parameter within [minimum, maximum]; absent or blank is `default`."""
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadParam(f"Parameter {name} must be a whole number, not {raw[:40]!r}.") from None
    if not minimum <= value <= maximum:
        raise BadParam(f"Parameter {name} must be between {minimum} and {maximum} (got {value}).")
    return value


def parse_search_args(args: MultiDict, *, default_per_page: int = 10, allow_per_page: bool = False) -> SearchParams:
    """Validate query-string parameters of a search; raises BadParam (400) with a fix-it message."""
    q = " ".join((args.get("q") or "").split())
    if len(q) > MAX_QUERY_LENGTH:
        raise BadParam(f"The query is too long ({len(q)} characters); use at most {MAX_QUERY_LENGTH}.")
    page = int_arg(args, "page", 1, 1, MAX_PAGE)
    per_page = default_per_page
    if allow_per_page:
        per_page = int_arg(args, "per_page", default_per_page, 1, MAX_PER_PAGE)
    sort = (args.get("sort") or "relevance").strip().lower()
    if sort not in SORTS:
        raise BadParam(f"Parameter sort must be one of {', '.join(SORTS)}.")
    filters: dict[str, list[str]] = {}
    for name in FILTERS:
        values: list[str] = []
        for raw in args.getlist(name):
            value = " ".join(raw.split())
            if not value or value in values:
                continue
            if len(value) > 200:
                raise BadParam(f"Filter {name} value is too long; use at most 200 characters.")
            if name == "year" and not re.fullmatch(r"\d{4}", value):
                raise BadParam(f"Filter year must be a four-digit year, not {value[:40]!r}.")
            values.append(value)
        if len(values) > MAX_FILTER_VALUES:
            raise BadParam(f"Use at most {MAX_FILTER_VALUES} values for filter {name}.")
        if values:
            filters[name] = values
    return SearchParams(q=q, page=page, per_page=per_page, filters=filters, sort=sort, exact=_flag(args, "exact"))


def _flag(args: MultiDict, name: str) -> bool:
    """A yes/no parameter: absent, "", "0" or "false" is no; "1" or "true" is yes; anything else is a 400."""
    raw = (args.get(name) or "").strip().lower()
    if raw in ("", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise BadParam(f"Parameter {name} must be 1 or 0, not {raw[:40]!r}.")


def audience_choice(args: MultiDict, allowed: tuple[str, ...]) -> str:
    """The one audience a reader who sees several narrowed results to, or "" for all they may see.

    A reader with one audience (every anonymous visitor) has nothing to choose: the parameter is
    ignored outright, so their page cannot depend on it (DESIGN: anonymous responses never vary
    with staff material). Staff sending an unknown value get a 400 that names the choices.
    """
    if len(allowed) < 2:
        return ""
    value = " ".join((args.get("audience") or "").split()).lower()
    if value and value not in allowed:
        raise BadParam(f"Parameter audience must be one of {', '.join(allowed)}, not {value[:40]!r}.")
    return value

