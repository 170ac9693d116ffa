"""PgSearcher: the SearchService on PostgreSQL, ranking as the Whoosh searcher does.

kb's own query compilation (kb.search.compile) runs against term statistics kept per generation and scope
in PostgreSQL (`_Context`, the TermStatistics interface); the compiled tree becomes a tsquery for matching
(total, facets, filters, exclusions) and BM25F leaves scored from posting arrays in one statement
(kb.store.postgres_search). Frequent terms, coordination and the whole-query phrase bonus are applied in
Python in kb.search.rank's order, from per-candidate tsquery checks the same statement returns. "Did you
mean" is kb.search.suggest's logic over the generation's word table.

Reads go to a replica of DATABASE_REPLICA_URLS in rotation and fall back to the next one or the primary, as the
store's reader reads do (kb.store.postgres_pool marks a failed replica down for all of them).

Audiences: an anonymous request reads the public partition and the 'public' statistics only, so what it
receives is what a kb without staff documents would answer. Totals and facets are exact over every match
(as on Whoosh); on broad words at 100,000 articles that costs 100-400 ms (measured by the prototype).
"""

from __future__ import annotations

import heapq
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from whoosh import query as wq
from whoosh.support.levenshtein import distance

from kb.errors import IndexUnavailable
from kb.models import Hit, Results
from kb.querylang import Parsed, clean, parse
from kb.schema import section_at, stored_hit, subindexes_for, title_key
from kb.search.compile import FIELD_WEIGHTS, _Compiled, _NegativeOnly, compile_query
from kb.search.interface import DEFAULT_AUDIENCES
from kb.search.pg_build import WEIGHT
from kb.search.rank import (
    COORD_MAX_WORDS,
    COORD_POWER,
    FREQUENT_MIN_DF,
    FREQUENT_SHARE,
    PHRASE_BONUS,
    PHRASE_RERANK,
    RERANK_DEPTH,
    _prune,
)
from kb.search.searcher import FACET_FIELDS, FACET_LIMIT, search_request
from kb.search.snippets import Marker, highlight_pattern, make_snippet
from kb.search.state import BM25_B, BM25_K1, CorrectionCache
from kb.search.suggest import add_vocabulary_completions, check_spelling
from kb.store import postgres_search as pgs
from kb.store import replica_urls as configured_replicas
from kb.store.postgres_pool import replica_up
from kb.vocab import plain_analyzer, text_analyzer

STAT_FIELDS = ("title", "headings", "tagtext", "body", "lead", "title_key")
DF_CACHE = 200_000


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


class _Stats:
    """One generation's statistics for one scope, shared by every request: sizes, df and word caches."""

    def __init__(self, conn: Any, gen: int, scope: str) -> None:
        self.gen, self.scope = gen, scope
        rows = pgs.field_stats(conn, gen, scope)
        self.size = max((int(r[1]) for r in rows), default=0)
        self.avg = {f: (tot / docs if docs else 1.0) or 1.0 for f, docs, tot in rows}
        self.lock = threading.Lock()
        self.df: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.word_df: dict[str, int] = {}
        self.analyzed: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
        self._corrections = CorrectionCache()

    def corrections(self, word: str, audiences: tuple[str, ...], compute: Callable[[], list[Any]]) -> list[Any]:
        """Spelling candidates of `word`, once per generation and scope (the scope is the audience here)."""
        return self._corrections.get((word, (self.scope,)), compute)


class _Context:
    """What one search borrows: a session and the scope's statistics (kb.search.compile's TermStatistics)."""

    def __init__(self, conn: Any, stats: _Stats) -> None:
        self.conn, self.stats, self.state = conn, stats, stats
        self.recording: set[str] | None = None

    def analyze(self, fieldname: str, text: str) -> tuple[str, ...]:
        key = (fieldname, text)
        with self.stats.lock:
            found = self.stats.analyzed.get(key)
        if found is None:
            if fieldname in ("title_key", "site", "year", "audience"):
                found = (text,) if text else ()
            else:
                analyzer = plain_analyzer() if fieldname == "spell" else text_analyzer()
                found = tuple(t.text for t in analyzer(text, mode="query") if t.text)
            with self.stats.lock:
                self.stats.analyzed[key] = found
                if len(self.stats.analyzed) > 4096:
                    self.stats.analyzed.popitem(last=False)
        return found

    def prefetch(self, terms: Iterable[str]) -> None:
        """One round trip for every field's df of the terms not cached yet."""
        with self.stats.lock:
            missing = sorted({t for t in terms if ("title", t) not in self.stats.df})
        if not missing:
            return
        found = pgs.term_stats(self.conn, self.stats.gen, self.stats.scope, missing)
        with self.stats.lock:
            for t in missing:
                for f in STAT_FIELDS:
                    self.stats.df[(f, t)] = 0
            for term, f, df in found:
                self.stats.df[(f, term)] = int(df)
            while len(self.stats.df) > DF_CACHE:
                self.stats.df.popitem(last=False)

    def doc_frequency(self, fieldname: str, text: str) -> int:
        if self.recording is not None:
            self.recording.add(text)
            return 1
        if fieldname not in STAT_FIELDS:
            return 0
        key = (fieldname, text)
        with self.stats.lock:
            found = self.stats.df.get(key)
        if found is None:
            self.prefetch([text])
            with self.stats.lock:
                found = self.stats.df.get(key, 0)
        return found

    def has(self, fieldname: str, text: str) -> bool:
        return self.doc_frequency(fieldname, text) > 0

    def whoosh_idf(self, fieldname: str, text: str) -> float:
        """Whoosh's idf (its BM25F and the frequent-term weight): log(N / (df + 1)) + 1."""
        return math.log(self.stats.size / (self.doc_frequency(fieldname, text) + 1)) + 1

    def bm25_idf(self, fieldname: str, text: str) -> float:
        """kb.search.rank._idf: the phrase bonus."""
        n = self.stats.size or 1
        df = self.doc_frequency(fieldname, text)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    # -- what kb.search.suggest asks --------------------------------------------------------------------
    def audience_docs(self, audiences: tuple[str, ...]) -> None:
        """The audience is the scope this context reads (public partition or all)."""
        return None

    def visible_df(self, word: str, audience_docs: Any, cap: int = 50) -> int:
        with self.stats.lock:
            found = self.stats.word_df.get(word)
        if found is None:
            found = pgs.word_df(self.conn, self.stats.gen, self.stats.scope, [word]).get(word, 0)
            with self.stats.lock:
                if len(self.stats.word_df) > DF_CACHE:
                    self.stats.word_df.clear()
                self.stats.word_df[word] = found
        return min(found, cap)

    def words_within(self, word: str, maxdist: int, prefix: int) -> list[str]:
        """Words within `maxdist` edits sharing the first `prefix` letters, in code-point order (as Whoosh's)."""
        near = pgs.words_near(self.conn, self.stats.gen, self.stats.scope, word[:prefix],
                              max(1, len(word) - maxdist), len(word) + maxdist)
        out = [w for w in near if distance(w, word, limit=maxdist + 1) <= maxdist]
        with self.stats.lock:
            for w in out:
                self.stats.word_df.pop(w, None)
        return out


def _compile(ctx: _Context, parsed: Parsed, text: str) -> _Compiled:
    """kb's compile_query fed from PostgreSQL: a dry run names the terms, one statement fetches their df."""
    ctx.recording = set()
    try:
        compile_query(ctx, parsed, text)
        seen = ctx.recording
    finally:
        ctx.recording = None
    ctx.prefetch(seen)
    return compile_query(ctx, parsed, text)


# -- the compiled Whoosh tree as a tsquery and as scored leaves ---------------------------------------------

def _weight_of(fieldname: str) -> str:
    return WEIGHT[fieldname]


def _item(ctx: _Context, term: str, weights: set[str]) -> str:
    """One lexeme, restricted to `weights` unless those cover every field holding it (then no recheck)."""
    if all(w in weights for w, f in ((w, f) for f, w in WEIGHT.items()) if ctx.doc_frequency(f, term) > 0):
        return _quote(term)
    return _quote(term) + ":" + "".join(sorted(weights))


def to_tsquery(ctx: _Context, q: Any) -> str | None:
    """The documents a compiled query matches, as a tsquery (weights restrict fields)."""
    if q is None or q is wq.NullQuery:
        return None
    if isinstance(q, wq.Term):
        return _item(ctx, q.text, {_weight_of(q.fieldname)}) if q.fieldname in WEIGHT else None
    if isinstance(q, wq.Or):
        singles: dict[str, set[str]] = {}
        others: list[str] = []
        for s in q.subqueries:
            if isinstance(s, wq.Term) and s.fieldname in WEIGHT:
                singles.setdefault(s.text, set()).add(_weight_of(s.fieldname))
            else:
                sub = to_tsquery(ctx, s)
                if sub:
                    others.append(sub)
        parts = [_item(ctx, t, ws) for t, ws in singles.items()] + others
        return "(" + " | ".join(parts) + ")" if parts else None
    if isinstance(q, wq.Phrase):
        w = _weight_of(q.fieldname)
        return "(" + " <-> ".join(_quote(t) + ":" + w for t in q.words) + ")"
    if isinstance(q, wq.And):
        items = [to_tsquery(ctx, s) for s in q.subqueries]
        return "(" + " & ".join(i for i in items if i) + ")" if all(items) else None
    if isinstance(q, wq.AndNot):
        a, b = to_tsquery(ctx, q.a), to_tsquery(ctx, q.b)
        return a if not b or not a else f"({a} & !{b})"
    if isinstance(q, wq.AndMaybe):
        return to_tsquery(ctx, q.a)
    raise TypeError(q)


@dataclass
class _Leaf:
    clause: int
    fieldname: str
    terms: tuple[str, ...]
    weight: float


def _leaves(q: Any, factor: float = 1.0, out: list[_Leaf] | None = None) -> list[_Leaf]:
    """Scored clauses of a pruned query with the boosts kb.search.rank._score multiplies in."""
    out = [] if out is None else out
    if q is None or q is wq.NullQuery:
        return out
    if isinstance(q, wq.Term):
        out.append(_Leaf(len(out), q.fieldname, (q.text,), factor * q.boost))
    elif isinstance(q, wq.Or):
        f = factor * (q.boost if len(q.subqueries) > 1 else 1.0)
        for s in q.subqueries:
            _leaves(s, f, out)
    elif isinstance(q, (wq.And, wq.Phrase)):
        words = tuple(q.words) if isinstance(q, wq.Phrase) else tuple(s.text for s in q.subqueries)
        fieldname = q.fieldname if isinstance(q, wq.Phrase) else q.subqueries[0].fieldname
        out.append(_Leaf(len(out), fieldname, words, factor * (q.boost if len(words) > 1 else 1.0)))
    elif isinstance(q, wq.AndMaybe):
        _leaves(q.a, factor, out)
        _leaves(q.b, factor, out)
    elif isinstance(q, wq.AndNot):
        _leaves(q.a, factor, out)
    else:
        raise TypeError(q)
    return out


def _leaf_params(ctx: _Context, q: Any) -> dict[str, Any]:
    """The leaves as parallel arrays for the scoring statement (coefficient = boost x idf x (k1 + 1))."""
    cols: dict[str, list[Any]] = {k: [] for k in ("l_clause", "l_term", "l_w", "l_coef", "l_avg", "l_n", "l_req")}
    tk, tk_boost = "\x01none", 0.0
    required = len(_leaves(q.a)) if isinstance(q, wq.AndMaybe) else None
    for leaf in _leaves(q):
        if leaf.fieldname == "title_key":
            tk, tk_boost = leaf.terms[0], leaf.weight
            continue
        w = "L" if leaf.fieldname == "lead" else _weight_of(leaf.fieldname)
        for t in leaf.terms:
            cols["l_clause"].append(leaf.clause)
            cols["l_term"].append(t)
            cols["l_w"].append(w)
            cols["l_coef"].append(leaf.weight * ctx.whoosh_idf(leaf.fieldname, t) * (BM25_K1 + 1))
            cols["l_avg"].append(ctx.stats.avg.get(leaf.fieldname, 1.0))
            cols["l_n"].append(len(leaf.terms))
            cols["l_req"].append(required is None or leaf.clause < required)
    return {**cols, "tk": tk, "tk_boost": tk_boost}


@dataclass
class _Checks:
    """Per-candidate tsquery checks: frequent terms (weight), coordination concepts, phrase bonuses (weight)."""

    queries: list[str]
    lead: list[bool]
    frequent: list[tuple[int, float]]
    concepts: list[int]
    phrases: list[tuple[int, float]]

    def add(self, query: str, lead: bool = False) -> int:
        self.queries.append(query)
        self.lead.append(lead)
        return len(self.queries) - 1


def _checks(ctx: _Context, compiled: _Compiled, frequent: list[tuple[str, tuple[str, ...], float]]) -> _Checks:
    """What kb.search.rank tests per candidate after scoring, as tsqueries evaluated on the candidates."""
    c = _Checks([], [], [], [], [])
    for fieldname, texts, boost in frequent:
        w = "" if fieldname == "lead" else ":" + WEIGHT[fieldname]
        i = c.add("(" + " & ".join(_quote(t) + w for t in texts) + ")", fieldname == "lead")
        c.frequent.append((i, boost * sum(ctx.whoosh_idf(fieldname, t) for t in texts)))
    fields = [f for f, _ in FIELD_WEIGHTS]
    if COORD_POWER and 1 < len(compiled.concepts) <= COORD_MAX_WORDS:
        for alternatives in compiled.concepts:
            alts = ["(" + " & ".join(_quote(t) for t in toks) + ")" for toks in sorted(alternatives)
                    if all(any(ctx.has(f, t) for f in fields) for t in toks)]
            c.concepts.append(c.add(" | ".join(alts) if alts else "'\x01never'"))
    if compiled.phrase and len(compiled.phrase) > 1:
        for fieldname, weight in PHRASE_BONUS:
            toks = compiled.phrase
            if all(ctx.has(fieldname, t) for t in toks):
                i = c.add(" <-> ".join(_quote(t) + ":" + WEIGHT[fieldname] for t in toks))
                c.phrases.append((i, weight * sum(ctx.bm25_idf(fieldname, t) for t in toks)))
    return c


def _rerank(rows: list[tuple[Any, ...]], checks: _Checks) -> list[tuple[float, int]]:
    """kb.search.rank's order: frequent terms' idf, coordination, phrase bonus, newer first on equal scores."""
    scores = {int(r[0]): float(r[1]) for r in rows}
    published = {int(r[0]): r[2] for r in rows}
    found = {int(r[0]): r[3] for r in rows}
    for i, weight in checks.frequent:
        for d in scores:
            if found[d][i]:
                scores[d] += weight
    if checks.concepts:
        n = len(checks.concepts)
        for d in scores:
            scores[d] *= (sum(1 for i in checks.concepts if found[d][i]) / n) ** COORD_POWER
    if checks.phrases and scores:
        best = heapq.nlargest(PHRASE_RERANK, scores, key=scores.__getitem__)
        for i, bonus in checks.phrases:
            for d in best:
                if found[d][i]:
                    scores[d] += bonus
    return sorted(((s, d) for d, s in scores.items()), key=lambda sd: (-round(sd[0], 6), -published[sd[1]], sd[1]))


class PgSearcher:
    """Thread-safe search over the current PostgreSQL search generation (a SearchService)."""

    def __init__(self, url: str, replica_urls: Iterable[str] = ()) -> None:
        self.url = url
        self.replica_urls = tuple(u.strip() for u in replica_urls if u and u.strip())
        self._lock = threading.Lock()
        self._stats: dict[tuple[int, str, str], _Stats] = {}  # (generation, revision, scope)

    def close(self) -> None:
        with self._lock:
            self._stats.clear()
        for url in (self.url, *self.replica_urls):
            pgs.close_search_pool(url)

    def _with(self, fn: Callable[[_Context], Any], audiences: tuple[str, ...]) -> Any:
        """Run `fn` on a replica in rotation, else on the primary, as the store's reader reads do: a replica
        that fails (or has not replayed the first build yet) costs this search a retry, not an error."""
        scope = "public" if subindexes_for(audiences) == ("public",) else "all"
        for url in self.replica_urls:
            if not replica_up(url):
                continue
            try:
                with pgs.replica_session(url) as conn:
                    return self._on(conn, fn, scope)
            except (pgs.ReplicaFailed, IndexUnavailable):
                continue
        with pgs.session(self.url) as conn:
            return self._on(conn, fn, scope)

    def _on(self, conn: Any, fn: Callable[[_Context], Any], scope: str) -> Any:
        """Run `fn` on `conn` with the statistics of the generation that database serves."""
        current = pgs.current_revision(conn)
        if current is None:
            raise IndexUnavailable("There is no search index in the PostgreSQL database yet.",
                                   "Run `kb reindex` to build it.")
        gen, _revision = current
        with self._lock:  # an in-place update keeps the generation number and changes its revision
            stats = self._stats.get((*current, scope))
            if stats is None:
                self._stats = {k: v for k, v in self._stats.items() if k[:2] == current}
                stats = self._stats[(*current, scope)] = _Stats(conn, gen, scope)
        return fn(_Context(conn, stats))

    def search(self, query: str, *, page: int = 1, per_page: int = 10, filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
               exact: bool = False) -> Results:
        """One page of results; malformed queries degrade to their words with a notice, never an error."""
        r = search_request(query, page, per_page, filters, audiences)
        return self._with(lambda ctx: self._corrected_search(
            ctx, r.parsed, r.text, r.page, r.per_page, r.filters, sort, r.audiences, exact), r.audiences)

    def _corrected_search(self, ctx: _Context, parsed: Parsed, text: str, page: int, per_page: int,
                          filters: dict[str, list[str]], sort: str, audiences: tuple[str, ...],
                          exact: bool) -> Results:
        """As kb.search.Searcher: search; a confident correction of misspelt words is searched openly."""
        results, browse = self._search(ctx, parsed, text, page, per_page, filters, sort)
        if browse or parsed.tree is None:
            return results
        spelling = check_spelling(ctx, parsed, text, audiences, results.total)  # type: ignore[arg-type]
        if spelling.corrected and not exact:
            fixed_parsed = parse(spelling.corrected)
            if fixed_parsed.tree is not None:
                fixed, _ = self._search(ctx, fixed_parsed, spelling.corrected, page, per_page, filters, sort)
                if fixed.total:
                    fixed.query, fixed.corrected_query, fixed.notice = text, spelling.corrected, results.notice
                    fixed.suggestions = spelling.suggestions
                    return fixed
        results.suggestions = ([spelling.corrected] if spelling.corrected else []) + spelling.suggestions
        return results

    def _search(self, ctx: _Context, parsed: Parsed, text: str, page: int, per_page: int,
                filters: dict[str, list[str]], sort: str) -> tuple[Results, bool]:
        """(one page of results for `parsed`, whether it was a browse of filters alone)."""
        results = Results(query=text, total=0, page=page, per_page=per_page, notice=parsed.notice)
        compiled = _compile(ctx, parsed, text)
        browse = False
        match: str | None = None
        exclude: str | None = None
        if isinstance(compiled.match, _NegativeOnly):
            if not filters:
                results.notice = results.notice or "Add a word to search for: a query of exclusions only matches nothing."
                return results, True
            exclude = to_tsquery(ctx, compiled.match.exclude)
            browse = True
        elif compiled.match is None:
            if not filters:
                if text and not results.notice:
                    results.notice = "There are no searchable words in your query."
                return results, True
            browse = True
        else:
            match = to_tsquery(ctx, compiled.match)
            if match is None:
                return results, False
        params = _filter_params(filters, match, exclude)
        gen, scope = ctx.stats.gen, ctx.stats.scope
        first = (page - 1) * per_page
        ranked: list[tuple[float, int]] = []
        if browse or sort == "date":
            results.total = pgs.count(ctx.conn, gen, scope, params)
            if first < results.total:
                ranked = [(0.0, int(r[0])) for r in pgs.newest(ctx.conn, gen, scope, {**params, "checks": [],
                          "check_lead": []}, [], per_page, first)]
        else:
            results.total, ranked = self._rank(ctx, compiled, params, first + per_page)
            ranked = ranked[first:first + per_page]
        if results.total:
            found = pgs.facets(ctx.conn, gen, scope, params, FACET_LIMIT)
            results.facets = {name: found[name] for name, _ in FACET_FIELDS if found.get(name)}
        pattern = highlight_pattern(compiled.highlight, compiled.surface, _matched_word(ctx, compiled.highlight))
        results.hits = self._hits(ctx, ranked, pattern)
        return results, browse

    def _rank(self, ctx: _Context, compiled: _Compiled, params: dict[str, Any],
              want: int) -> tuple[int, list[tuple[float, int]]]:
        """(total matches, the best `want` or more (score, article id)) as kb.search.rank orders them."""
        depth = max(want, RERANK_DEPTH)
        cutoff = max(FREQUENT_MIN_DF, int(FREQUENT_SHARE * ctx.stats.size))
        frequent: list[tuple[str, tuple[str, ...], float]] = []
        selective = _prune(compiled.score, ctx, cutoff, frequent, 1.0)  # type: ignore[arg-type]
        checks = _checks(ctx, compiled, frequent)
        params = {**params, "checks": checks.queries, "check_lead": checks.lead, "depth": depth, "k1": BM25_K1,
                  "b": BM25_B}
        gen, scope = ctx.stats.gen, ctx.stats.scope
        rows: list[tuple[Any, ...]] = []
        if selective is not None:
            rows = pgs.rank(ctx.conn, gen, scope, {**params, **_leaf_params(ctx, selective)})
        total = int(rows[0][4]) if rows else pgs.count(ctx.conn, gen, scope, params)
        if len(rows) < depth and len(rows) < total:  # documents with frequent words only: newest first
            rows += pgs.newest(ctx.conn, gen, scope, params, [int(r[0]) for r in rows], depth - len(rows))
        return total, _rerank(rows, checks)

    def _hits(self, ctx: _Context, ranked: list[tuple[float, int]], pattern: Marker | None) -> list[Hit]:
        docs = pgs.documents(ctx.conn, ctx.stats.gen, ctx.stats.scope, [d for _, d in ranked])
        hits = []
        for score, d in ranked:
            doc = docs.get(d)
            if doc is None:
                continue
            sections = json.loads(doc["sections"] or "[]")
            snippet, offset = make_snippet(doc["body"], pattern, sections)
            anchor, heading = section_at(sections, offset) if offset >= 0 else ("", "")
            stored = {**doc, "tags": ",".join(doc["tags"]), "categories": ",".join(doc["categories"])}
            hits.append(stored_hit(stored, score=score, snippet_html=snippet, anchor=anchor, section=heading))
        return hits

    def suggest(self, prefix: str, *, limit: int = 8, audiences: tuple[str, ...] = DEFAULT_AUDIENCES) -> list[str]:
        """Completions for the search box: visible titles, then vocabulary terms, then words."""
        cleaned, _ = clean(prefix if isinstance(prefix, str) else "")
        key = title_key(cleaned)
        limit = max(1, min(50, int(limit or 8)))
        if not key:
            return []
        audiences = tuple(audiences or DEFAULT_AUDIENCES)
        return self._with(lambda ctx: _completions(ctx, key, limit), audiences)


def _filter_params(filters: dict[str, list[str]], match: str | None, exclude: str | None) -> dict[str, Any]:
    """The filters as statement parameters, values holding NUL left out: PostgreSQL text cannot hold one, so such
    a value names no stored facet and sending it would fail the statement (DataError, a 500 page). It was one of
    its filter's alternatives; a filter left with none matches nothing (an empty array), as on Whoosh."""
    kept = {name: [v for v in values if "\x00" not in v] for name, values in filters.items()}
    params = pgs.filter_params({name: values for name, values in kept.items() if values}, match, exclude)
    for name, values in kept.items():
        if not values and filters[name] and f"f_{name}" in params:
            params[f"f_{name}"] = []
    return params


def _matched_word(ctx: _Context, terms: list[str]) -> Callable[[str], bool]:
    """Whether a word in a result is one the query matched: it analyses to a searched term."""
    wanted = set(terms)
    return lambda word: any(t in wanted for t in ctx.analyze("body", word))


def _completions(ctx: _Context, key: str, limit: int) -> list[str]:
    """kb.search.suggest.completions over the generation: visible titles, vocabulary terms, visible words."""
    out: dict[str, str] = {}
    for title in pgs.titles_with_prefix(ctx.conn, ctx.stats.gen, ctx.stats.scope, key, limit):
        out.setdefault(title.casefold(), title)
    add_vocabulary_completions(out, key, limit)
    if len(out) < limit:
        head, _, last = key.rpartition(" ")
        if len(last) >= 2:
            for word, _df in pgs.words_with_prefix(ctx.conn, ctx.stats.gen, ctx.stats.scope, last, limit):
                completion = f"{head} {word}".strip()
                out.setdefault(completion.casefold(), completion)
                if len(out) >= limit:
                    break
    return list(out.values())[:limit]


def database_url(settings: Mapping[str, Any]) -> str | None:
    """The DATABASE_URL setting when set: the store and the search index are then that database's."""
    return str(settings.get("DATABASE_URL") or "").strip() or None


def open_searcher(settings: Mapping[str, Any], index_root: Path) -> Any:
    """The SearchService the settings select: PgSearcher (reading DATABASE_REPLICA_URLS with fallback) when
    DATABASE_URL is set, else Whoosh at `index_root`."""
    url = database_url(settings)
    if url is not None:
        return PgSearcher(url, configured_replicas(settings))
    from kb.search.searcher import Searcher

    return Searcher(index_root)
