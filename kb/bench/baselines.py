"""The competitors kb is measured against: SQLite FTS5 and plain Whoosh, set up once for `kb bench` and `kb eval`.

Each baseline is what a user would build without kb: FTS5 with the porter tokenizer ranked by `bm25()`,
and Whoosh with its StemmingAnalyzer and BM25F defaults. Both index the same documents (`Doc`), take the
same engine-neutral `Query` and answer with document ids (`search`, for kb eval's scores) or a rendered
results page (`page`, for kb bench's timings), so the benchmarks only time and score them. Where the two
benchmarks want different behaviour, a named parameter says which and why (`Query`, `Fts5Baseline`).

This module is the one documented exception to "only the store writes SQL" and "only kb.index writes a
Whoosh index" (tests/test_architecture.py allows exactly this module): these indexes are the yardstick,
never kb's data, and live in the benchmarks' temporary work directories.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, NamedTuple, Protocol, Self

log = logging.getLogger(__name__)

#: Fields (Whoosh) and columns (FTS5) a query searches; tags only filter.
TEXT_FIELDS = ("title", "body")
#: FTS5 tokens: unicode61 keeps every Unicode letter and digit in a token, and so does `\w`.
_FTS5_WORD = re.compile(r"\w+")
#: Column order matters below: snippet() takes the body's column number (2), and bm25() one weight per
#: column, 0 for the UNINDEXED docid and for tags, which only filter.
_FTS5_SCHEMA = "CREATE VIRTUAL TABLE docs USING fts5(docid UNINDEXED, title, body, tags, tokenize='porter unicode61')"


class Doc(NamedTuple):
    """One document as both baselines index it."""

    docid: str
    title: str
    body: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    """What to look for, engine-neutral; each baseline turns it into its own query language.

    The defaults are `kb eval`'s bag of words: any of the words, no query syntax, every word kept.
    """

    text: str
    #: Every word must match (AND; kb bench's keyword queries) instead of any word (OR; questions).
    match_all: bool = False
    #: Read the text as typed in a search box: a leading quote makes FTS5 search a phrase and Whoosh
    #: parses its full query language (phrases, AND/OR/NOT, wildcards such as a trailing "?"). kb bench
    #: times that path; kb eval keeps plain words, because the parser turns "rosacea?" into a wildcard
    #: and its figures (nDCG, MRR, recall) have always come from plain words.
    syntax: bool = False
    #: FTS5 only: leave out Whoosh's stop words, as the plain-Whoosh analyzer does, so kb bench's question
    #: queries do the same work on both baselines. kb eval keeps them: dropping them moves FTS5's figures
    #: (nDCG@10 0.643 -> 0.647 on dev/skin/notitle, 0.765 -> 0.762 on dev/skin/titled).
    drop_stop_words: bool = False
    tag: str | None = None


class Baseline(Protocol):
    """An opened baseline index: ranked ids for scoring, a rendered results page for timing."""

    def search(self, query: Query, k: int = 10) -> list[str]: ...

    def page(self, query: Query, page: int = 1, pagelen: int = 10) -> tuple[list[str], int]: ...

    def close(self) -> None: ...


def _quoted(word: str) -> str:
    """An FTS5 string: operators (AND, NEAR), brackets and stars inside it are plain text."""
    return '"' + word.replace('"', '""') + '"'


def fts5_query(query: Query) -> str:
    """The FTS5 MATCH expression meaning what `query` means to plain Whoosh; "" when nothing is left to match."""
    words = [w.lower() for w in _FTS5_WORD.findall(query.text)]
    if query.syntax and query.text.startswith('"'):
        expr = _quoted(" ".join(words)) if words else ""
    else:
        if query.drop_stop_words:
            from whoosh.analysis import STOP_WORDS

            words = [w for w in words if w not in STOP_WORDS]
        quoted = [_quoted(w) for w in dict.fromkeys(words)]
        expr = (" " if query.match_all else " OR ").join(quoted)
    if query.tag is not None:
        tag = f"tags:{_quoted(query.tag)}"
        expr = f"({expr}) AND {tag}" if expr else tag
    return expr


class _Closing:
    """Context-manager support for the baselines: `with Fts5Baseline(path) as engine: ...`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Fts5Baseline(_Closing):
    """SQLite FTS5 with the porter tokenizer, ranked by bm25() over title and body (tags only filter)."""

    @staticmethod
    def build(path: Path, docs: Iterable[Doc]) -> int:
        """Write a fresh FTS5 database at `path` (replacing one already there); returns the documents indexed."""
        path = Path(path)
        path.unlink(missing_ok=True)
        count = 0

        def rows() -> Iterator[tuple[str, str, str, str]]:
            nonlocal count
            for doc in docs:
                count += 1
                yield doc.docid, doc.title, doc.body, ", ".join(doc.tags)

        db = sqlite3.connect(str(path))
        try:
            db.execute(_FTS5_SCHEMA)
            with db:
                db.executemany("INSERT INTO docs (docid, title, body, tags) VALUES (?, ?, ?, ?)", rows())
        finally:
            db.close()
        return count

    def __init__(self, path: Path, title_weight: float = 1.0) -> None:
        """Open the database at `path`; `title_weight` is bm25()'s weight of a title hit against a body hit.

        kb eval keeps bm25's equal weights, the plain FTS5 its figures have always measured (a weight of 10
        moves FTS5's nDCG@10 on dev/skin/titled from 0.765 to 0.858). kb bench ranks titles 10x, as kb
        ranks title matches first, so the pages whose snippets it times are comparable pages: equal weights
        pick other documents and shift FTS5's latencies by a few per cent.
        """
        self.db = sqlite3.connect(str(path))
        self.title_weight = float(title_weight)

    def search(self, query: Query, k: int = 10) -> list[str]:
        """The ids of the `k` best documents."""
        expr = fts5_query(query)
        if not expr:
            return []
        rows = self.db.execute("SELECT docid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs, 0.0, ?, 1.0, 0.0) "
                               "LIMIT ?", (expr, self.title_weight, k))
        return [row[0] for row in rows]

    def page(self, query: Query, page: int = 1, pagelen: int = 10) -> tuple[list[str], int]:
        """One results page as a search box shows it (titles, snippets, the total): what kb bench times."""
        expr = fts5_query(query)
        if not expr:
            return [], 0
        rows = self.db.execute(
            "SELECT docid, title, snippet(docs, 2, '<mark>', '</mark>', '…', 24) FROM docs WHERE docs MATCH ? "
            "ORDER BY bm25(docs, 0.0, ?, 1.0, 0.0) LIMIT ? OFFSET ?",
            (expr, self.title_weight, pagelen, (page - 1) * pagelen)).fetchall()
        total = self.db.execute("SELECT count(*) FROM docs WHERE docs MATCH ?", (expr,)).fetchone()[0]
        return [row[0] for row in rows], max(total, len(rows))

    def close(self) -> None:
        self.db.close()


def whoosh_schema(store_text: bool = True) -> Any:
    """Plain Whoosh: StemmingAnalyzer on title and body, comma-separated tags, the id always stored."""
    from whoosh.analysis import StemmingAnalyzer
    from whoosh.fields import ID, KEYWORD, TEXT, Schema

    return Schema(id=ID(stored=True, unique=True), title=TEXT(analyzer=StemmingAnalyzer(), stored=store_text),
                  body=TEXT(analyzer=StemmingAnalyzer(), stored=store_text),
                  tags=KEYWORD(stored=store_text, commas=True, lowercase=True))


class WhooshBaseline(_Closing):
    """Plain Whoosh with BM25F defaults, over a `whoosh_schema()` index; one searcher for its lifetime."""

    @staticmethod
    def build(path: Path, docs: Iterable[Doc], store_text: bool = True) -> int:
        """Write a fresh index in directory `path` (replacing one already there); returns the documents indexed.

        `store_text` keeps title, body and tags in the index, which `page()` needs to highlight hits as kb
        bench times it. kb eval only ranks and leaves it off, as it always has: every hit's id would otherwise
        come with its stored text, ~0.15 ms more per query (+5% on dev/skin/notitle) in the latency it prints.
        """
        from whoosh import index

        path = Path(path)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        ix = index.create_in(str(path), whoosh_schema(store_text))
        count = 0
        try:
            with ix.writer() as writer:  # defaults on purpose: this is the "before tuning" reference
                for doc in docs:
                    writer.add_document(id=doc.docid, title=doc.title, body=doc.body, tags=",".join(doc.tags))
                    count += 1
        finally:
            ix.close()
        return count

    def __init__(self, path: Path) -> None:
        from whoosh import index

        self.ix = index.open_dir(str(path))
        self.searcher = self.ix.searcher()
        self.schema = self.ix.schema  # read once: every `ix.schema` re-reads the table of contents from disk
        self._analyzer = self.schema["body"].analyzer
        self._parsers: dict[bool, Any] = {}

    def query(self, query: Query) -> Any:
        """The Whoosh query for `query`, or None when no word is left after analysis."""
        from whoosh import query as wq

        if query.syntax:
            return self._parser(query.match_all).parse(query.text)
        terms = list(dict.fromkeys(token.text for token in self._analyzer(query.text)))
        if not terms:
            return None
        if query.match_all:
            return wq.And([wq.Or([wq.Term(f, t) for f in TEXT_FIELDS]) for t in terms])
        return wq.Or([wq.Term(f, t) for t in terms for f in TEXT_FIELDS])

    def _parser(self, match_all: bool) -> Any:
        """Whoosh's query parser over title and body, built once per grouping (AND or OR)."""
        if match_all not in self._parsers:
            from whoosh.qparser import AndGroup, MultifieldParser, OrGroup

            group = AndGroup if match_all else OrGroup
            self._parsers[match_all] = MultifieldParser(list(TEXT_FIELDS), self.schema, group=group)
        return self._parsers[match_all]

    def _filter(self, query: Query) -> dict[str, Any]:
        from whoosh.query import Term

        return {"filter": Term("tags", query.tag)} if query.tag is not None else {}

    def search(self, query: Query, k: int = 10) -> list[str]:
        """The ids of the `k` best documents."""
        q = self.query(query)
        if q is None:
            return []
        return [hit["id"] for hit in self.searcher.search(q, limit=k, **self._filter(query))]

    def page(self, query: Query, page: int = 1, pagelen: int = 10) -> tuple[list[str], int]:
        """One results page as a search box shows it (highlighted hits, the total): what kb bench times.

        Needs an index built with `store_text` (the default): highlighting reads the stored body.
        """
        q = self.query(query)
        if q is None:
            return [], 0
        results = self.searcher.search_page(q, page, pagelen=pagelen, **self._filter(query))
        ids = []
        for hit in results:
            hit.highlights("body")
            ids.append(hit["id"])
        return ids, results.total

    def close(self) -> None:
        self.searcher.close()
        self.ix.close()


BASELINES: dict[str, type[Fts5Baseline] | type[WhooshBaseline]] = {"fts5": Fts5Baseline, "whoosh": WhooshBaseline}


def versions() -> dict[str, str]:
    """The versions of both engines, recorded next to every benchmark figure."""
    import whoosh

    return {"whoosh": whoosh.versionstring(), "sqlite": sqlite3.sqlite_version}
