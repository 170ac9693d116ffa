"""PgSearcher: the SearchService on PostgreSQL, the same pipeline as the Whoosh searcher over the same kind of cache.

A search runs kb.search.engine's pipeline (match by bit algebra, count, facets, rank, correct) on a request
context whose data comes from the current PostgreSQL search generation instead of Whoosh files: posting arrays
(kb_search_posting_gG) become the same DocSets and per-term BM25F arrays, the documents' dates, audiences and
facet values are read once per generation revision and scope, and term statistics come from
kb_search_term_gG. Each web process keeps these in its own memory (`_PgState`), bounded as the Whoosh state's
caches are, so a search repeats no work another search already did, and an in-place `kb update` (a new
revision) or a swap (a new generation) starts a new state. PostgreSQL still matches phrases (tsvector
positions, `<->`), serves hits, completions and "Did you mean" candidates.

Why not a tsquery per search: the first version matched, counted and faceted in SQL. At 100,000 articles a word
in most documents cost 0.3-2 s per query (the count and facets visit every matching row; rank detoasts every
tsvector), against 12-120 ms on Whoosh. Posting arrays cached as bits make both backends cost the same per
query; the database then serves cold terms, phrases and stored fields only (see README, Performance).

Reads go to a replica of DATABASE_REPLICA_URLS in rotation and fall back to the next one or the primary, as the
store's reader reads do (kb.store.postgres_pool marks a failed replica down for all of them).

Audiences: an anonymous request reads the public partition, public postings and the 'public' statistics only,
so what it receives is what a kb without staff documents would answer (DESIGN.md, security rules).
"""

from __future__ import annotations

import json
import math
import threading
from array import array
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from whoosh.support.levenshtein import distance

from kb.errors import IndexUnavailable
from kb.models import Hit
from kb.querylang import Parsed, clean
from kb.schema import section_at, stored_hit, subindexes_for, title_key
from kb.search.compile import compile_query
from kb.search.engine import PostingSearch
from kb.search.interface import DEFAULT_AUDIENCES
from kb.search.pg_build import LENGTH_OF, WEIGHT
from kb.search.postings import EMPTY, DocSet
from kb.search.rank import FREQUENT_MIN_DF, FREQUENT_SHARE
from kb.search.snippets import Marker, make_snippet
from kb.search.state import BM25_B, BM25_K1, CorrectionCache, _FacetTable, _Request, _TermCaches
from kb.search.suggest import add_vocabulary_completions
from kb.store import postgres_search as pgs
from kb.store import replica_urls as configured_replicas
from kb.store.postgres_pool import replica_up
from kb.vocab import plain_analyzer, text_analyzer

STAT_FIELDS = ("title", "headings", "tagtext", "body", "lead", "title_key")
#: Fields whose terms are posting arrays in PostgreSQL (tsvector weight letters, 'L' for the lead).
POSTING_LETTER = {**WEIGHT, "lead": "L"}
#: Fields whose values' documents are read once per state: filters and facets.
VALUE_FIELDS = ("audience", "site", "year", "tags", "categories")
DF_CACHE = 200_000
PHRASE_CACHE = 4096  # (field, phrase) pairs whose checked candidates a state remembers
DOC_CACHE = 2000  # documents' hit fields and bodies a state keeps (~5 KB each)
PHRASE_BATCH = 100  # up to this many candidates are checked in every weighted field in one read
#: States (generation, revision, scope) a process keeps: replicas a moment behind the primary serve the
#: previous revision, and alternating between two must not reload either each time.
STATES_KEPT = 4


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


class _PgState(_TermCaches):
    """One generation revision of one scope ('public' or 'all'), shared by every search of this process.

    Holds what kb.search.state._State holds for Whoosh: term statistics, posting lists as DocSets and
    BM25F arrays (LRU, bounded in bytes), facet tables, the date order and spelling corrections. Document
    numbers are article ids, so a DocSet's bits are article ids and hits need no mapping.
    """

    def __init__(self, conn: Any, gen: int, scope: str) -> None:
        self.gen, self.scope = gen, scope
        self.subindexes = ["public"] if scope == "public" else ["public", "staff"]
        rows = pgs.field_stats(conn, gen, scope)
        self.size = max((int(r[1]) for r in rows), default=0)
        self.avg = {f: (tot / docs if docs else 1.0) or 1.0 for f, docs, tot in rows}
        self.lock = threading.RLock()
        self._df: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._word_df: dict[str, int] = {}
        self._analyzed: OrderedDict[tuple[str, str], tuple[str, ...]] = OrderedDict()
        self._corrections = CorrectionCache()
        self._init_caches()
        self._facets: dict[str, _FacetTable] = {}
        self._docs: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._phrases: OrderedDict[tuple[str, tuple[str, ...]], tuple[set[int], set[int]]] = OrderedDict()
        self._load_documents(conn)

    def _load_documents(self, conn: Any) -> None:
        """The date order and the filter and facet values of the scope's documents: two reads per state."""
        newest, published = pgs.date_order(conn, self.gen, self.scope)
        self._newest = newest
        self._published = [0.0] * (max(newest, default=-1) + 1)
        for aid, epoch in zip(newest, published):
            self._published[aid] = epoch
        self._values: dict[str, dict[str, list[int]]] = {f: {} for f in VALUE_FIELDS}
        for fieldname, value, ids in pgs.value_ids(conn, self.gen, self.scope):
            self._values[fieldname][value] = ids

    # -- what kb.search.state._Request asks its state, `reader` being this request's connection -------------
    def doc_frequency(self, conn: Any, fieldname: str, text: str) -> int:
        found = self.known_df(fieldname, text)
        if found is None:
            self.prefetch_df(conn, [text])
            found = self.known_df(fieldname, text) or 0
        return found

    def known_df(self, fieldname: str, text: str) -> int | None:
        """The cached df, 0 for fields without statistics, None when it must be read."""
        if fieldname not in STAT_FIELDS:
            return 0
        with self.lock:
            return self._df.get((fieldname, text))

    def prefetch_df(self, conn: Any, terms: Iterable[str]) -> None:
        """One round trip for every field's df of the terms not cached yet."""
        with self.lock:
            missing = sorted({t for t in terms if ("title", t) not in self._df})
        if not missing:
            return
        found = pgs.term_stats(conn, self.gen, self.scope, missing)
        with self.lock:
            for t in missing:
                for f in STAT_FIELDS:
                    self._df[(f, t)] = 0
            for term, f, df in found:
                self._df[(f, term)] = int(df)
            while len(self._df) > DF_CACHE:
                self._df.popitem(last=False)

    def term_docs(self, conn: Any, fieldname: str, text: str) -> DocSet:
        """Documents holding a term: a document field's value, or a posting array read once (all its fields)."""
        key = (fieldname, text)
        found = self.recall(key)
        if found is not None:
            return found
        if fieldname in VALUE_FIELDS:
            return self.remember(key, DocSet.from_ids(self._values[fieldname].get(text, ())))
        if fieldname == "title_key":
            return self.remember(key, DocSet.from_ids(self.title_ids(conn, text)))
        if fieldname not in POSTING_LETTER or not self.doc_frequency(conn, fieldname, text):
            return EMPTY
        self.prefetch_postings(conn, [text])
        return self.cached(key) or EMPTY

    def prefetch_postings(self, conn: Any, terms: Iterable[str]) -> None:
        """The document sets of every field of `terms` not cached yet, in one round trip; the BM25F arrays too
        where a field's list is short enough to be scored (kb.search.rank prunes longer ones from scoring), so a
        new selective word costs one read, not one more per field."""
        with self.lock:
            missing = sorted({t for t in terms if any(
                self.cached((f, t)) is None and self._df.get((f, t)) for f in POSTING_LETTER)})
        if not missing:
            return
        cutoff = max(FREQUENT_MIN_DF, int(FREQUENT_SHARE * self.size))
        rows: dict[tuple[str, str], list[tuple[list[int], list[int] | None, list[int] | None]]] = defaultdict(list)
        for term, letter, article_ids, tfs, lens in pgs.posting_ids(conn, self.gen, self.subindexes, missing, cutoff):
            rows[(LENGTH_OF[letter], term)].append((article_ids, tfs, lens))
        for term in missing:
            for fieldname in POSTING_LETTER:
                found = rows.get((fieldname, term), [])
                self.remember((fieldname, term), DocSet.from_ids([d for ids, _, _ in found for d in ids]))
                if found and all(tfs is not None for _, tfs, _ in found) and self.recall_scores((fieldname, term)) is None:
                    self.remember_scores((fieldname, term), self._scores_of(conn, fieldname, term, found))

    def _scores_of(self, conn: Any, fieldname: str, text: str, rows: Iterable[tuple[Any, Any, Any]]) -> tuple[array, array]:
        """(article ids, BM25F score at boost 1) of posting rows, as kb.search.state scores Whoosh's postings."""
        ids, scores = array("i"), array("d")
        c = self.idf(conn, fieldname, text) * (BM25_K1 + 1)
        avg = self.avg.get(fieldname, 1.0)
        for article_ids, tfs, lens in rows:
            ids.extend(article_ids)
            scores.extend([c * tf / (tf + BM25_K1 * (1 - BM25_B + BM25_B * n / avg)) for tf, n in zip(tfs, lens)])
        return ids, scores

    def leaf_scores(self, conn: Any, fieldname: str, text: str) -> tuple[array, array]:
        """(article ids, BM25F score at boost 1) of one term; cached."""
        key = (fieldname, text)
        found = self.recall_scores(key)
        if found is not None:
            return found
        if fieldname == "title_key":  # unscorable: the posting's weight, 1
            ids = array("i", self.title_ids(conn, text))
            return self.remember_scores(key, (ids, array("d", [1.0] * len(ids))))
        rows = []
        if fieldname in POSTING_LETTER and self.doc_frequency(conn, fieldname, text):
            rows = pgs.postings(conn, self.gen, self.subindexes, POSTING_LETTER[fieldname], text)
        return self.remember_scores(key, self._scores_of(conn, fieldname, text, rows))

    def title_ids(self, conn: Any, key: str) -> list[int]:
        return pgs.title_ids(conn, self.gen, self.scope, key) if self.doc_frequency(conn, "title_key", key) else []

    def idf(self, conn: Any, fieldname: str, text: str) -> float:
        """Whoosh's idf (its BM25F and the frequent-term weight): log(N / (df + 1)) + 1."""
        return math.log(self.size / (self.doc_frequency(conn, fieldname, text) + 1)) + 1

    def facet(self, conn: Any, name: str) -> _FacetTable:
        with self.lock:
            table = self._facets.get(name)
            if table is None:
                values = self._values[name]
                table = self._facets[name] = _FacetTable((v, DocSet.from_ids(values[v])) for v in sorted(values))
            return table

    def by_date(self, conn: Any) -> tuple[list[float], list[int]]:
        """(published sort key per article id, article ids newest first)."""
        return self._published, self._newest

    def analyze(self, fieldname: str, text: str) -> tuple[str, ...]:
        """kb's analyzers in query mode, as the generation was built with them; cached."""
        key = (fieldname, text)
        with self.lock:
            found = self._analyzed.get(key)
        if found is None:
            if fieldname in ("title_key", "site", "year", "audience"):
                found = (text,) if text else ()
            else:
                analyzer = plain_analyzer() if fieldname == "spell" else text_analyzer()
                found = tuple(t.text for t in analyzer(text, mode="query") if t.text)
            with self.lock:
                self._analyzed[key] = found
                if len(self._analyzed) > 4096:
                    self._analyzed.popitem(last=False)
        return found

    def phrase_matches(self, conn: Any, fieldname: str, words: tuple[str, ...], candidates: Iterable[int]) -> list[int]:
        """The candidates holding `words` consecutively in `fieldname`, in id order: tsvector positions, asked of
        the database once per document and phrase. The whole-query bonus asks again for every search and field
        in turn, so a few candidates are checked in every weighted field at once."""
        ids = sorted(set(candidates))
        if not words or not ids:
            return []
        with self.lock:
            known = self._phrases.get((fieldname, words))
        missing = [d for d in ids if known is None or d not in known[0]]
        if missing:
            fields = [f for f in WEIGHT if f != fieldname] if len(missing) <= PHRASE_BATCH else []
            fields.insert(0, fieldname)
            found = pgs.phrase_docs(conn, self.gen, self.scope, missing, [
                (" <-> ".join(_quote(t) if f == "lead" else _quote(t) + ":" + WEIGHT[f] for t in words), f == "lead")
                for f in fields])
            with self.lock:
                for f, matched in zip(fields, found):
                    checked, held = self._phrases.get((f, words)) or (set(), set())
                    self._phrases[(f, words)] = (checked | set(missing), held | set(matched))
                    self._phrases.move_to_end((f, words))  # an updated entry is the newest, never the one evicted
                known = self._phrases[(fieldname, words)]
                while len(self._phrases) > PHRASE_CACHE:
                    self._phrases.popitem(last=False)
        return [d for d in ids if d in known[1]]

    def documents(self, conn: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
        """What the hits `ids` show (kb.store.postgres_search.documents), the last DOC_CACHE kept: a generation
        revision's documents do not change, and the first pages of common searches are asked again and again."""
        with self.lock:
            found = {d: self._docs[d] for d in ids if d in self._docs}
            for d in found:
                self._docs.move_to_end(d)
        missing = [d for d in ids if d not in found]
        if missing:
            fetched = pgs.documents(conn, self.gen, self.scope, missing)
            with self.lock:
                self._docs.update(fetched)
                while len(self._docs) > DOC_CACHE:
                    self._docs.popitem(last=False)
            found.update(fetched)
        return found

    def word_df(self, conn: Any, word: str) -> int:
        """Documents of the scope holding the unstemmed `word`, cached."""
        with self.lock:
            found = self._word_df.get(word)
        if found is None:
            found = pgs.word_df(conn, self.gen, self.scope, [word]).get(word, 0)
            self._keep_word_df([(word, found)])
        return found

    def _keep_word_df(self, pairs: Iterable[tuple[str, int]]) -> None:
        with self.lock:
            if len(self._word_df) > DF_CACHE:
                self._word_df.clear()
            self._word_df.update(pairs)

    def words_within(self, conn: Any, word: str, maxdist: int, prefix: int) -> Iterator[str]:
        """Words within `maxdist` edits sharing the first `prefix` letters, in code-point order, read a page at a
        time as the caller consumes them: as Whoosh's automaton yields them, however many words share the prefix."""
        after = ""
        while True:
            page = pgs.words_near(conn, self.gen, self.scope, word[:prefix], max(1, len(word) - maxdist),
                                  len(word) + maxdist, after)
            near = [(w, df) for w, df in page if distance(w, word, limit=maxdist + 1) <= maxdist]
            self._keep_word_df(near)
            yield from (w for w, _df in near)
            if len(page) < pgs.WORDS_PAGE:
                return
            after = page[-1][0]

    def corrections(self, word: str, audiences: tuple[str, ...], compute: Callable[[], list[Any]]) -> list[Any]:
        """Spelling candidates of `word`, once per state (its scope is the audience)."""
        return self._corrections.get((word, (self.scope,)), compute)


class _PgRequest(_Request):
    """What one search borrows: the scope's state and a database session (the `reader` of kb.search.state)."""

    def __init__(self, state: _PgState, conn: Any) -> None:  # noqa: D107 -- no Whoosh searcher here
        self.state = state  # type: ignore[assignment]
        self.reader = conn
        self.searcher = None
        self.recording: set[str] | None = None

    def doc_frequency(self, fieldname: str, text: str) -> int:
        if self.recording is not None:  # compile_query naming the terms not cached yet (PgSearcher._compile)
            known = self.state.known_df(fieldname, text)  # type: ignore[attr-defined]
            if known is None:
                self.recording.add(text)
                return 1
            return known
        return self.state.doc_frequency(self.reader, fieldname, text)

    def idf(self, fieldname: str, text: str) -> float:
        return self.state.idf(self.reader, fieldname, text)  # type: ignore[attr-defined]

    def leaf_scores(self, fieldname: str, text: str) -> tuple[array, array]:
        return self.state.leaf_scores(self.reader, fieldname, text)

    def phrase_matches(self, fieldname: str, words: Iterable[str], candidates: Iterable[int]) -> list[int]:
        return self.state.phrase_matches(self.reader, fieldname, tuple(words), candidates)  # type: ignore[attr-defined]

    def visible_df(self, word: str, audience_docs: Any, cap: int = 50) -> int:
        """Documents of the scope holding the unstemmed `word` (the scope is the audience)."""
        return min(self.state.word_df(self.reader, word), cap)  # type: ignore[attr-defined]

    def words_within(self, word: str, maxdist: int, prefix: int) -> Iterator[str]:
        return self.state.words_within(self.reader, word, maxdist, prefix)  # type: ignore[attr-defined]


def _query_terms(q: Any) -> set[str]:
    """Every term text a compiled query names (its posting arrays are fetched together)."""
    exclude = getattr(q, "exclude", None)  # kb.search.compile._NegativeOnly
    q = exclude if exclude is not None else q
    try:
        return {text for _field, text in q.iter_all_terms()}
    except (AttributeError, TypeError):
        return set()


class PgSearcher(PostingSearch):
    """Thread-safe search over the current PostgreSQL search generation (a SearchService)."""

    def __init__(self, url: str, replica_urls: Iterable[str] = ()) -> None:
        self.url = url
        self.replica_urls = tuple(u.strip() for u in replica_urls if u and u.strip())
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[int, str, str], _PgState] = OrderedDict()  # (generation, revision, scope)

    def close(self) -> None:
        with self._lock:
            self._states.clear()
        for url in (self.url, *self.replica_urls):
            pgs.close_search_pool(url)

    def _with(self, fn: Callable[[Any], Any], audiences: tuple[str, ...]) -> Any:
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

    def _on(self, conn: Any, fn: Callable[[Any], Any], scope: str) -> Any:
        """Run `fn` on `conn` with the state of the generation revision that database serves."""
        current = pgs.current_revision(conn)
        if current is None:
            raise IndexUnavailable("There is no search index in the PostgreSQL database yet.",
                                   "Run `kb reindex` to build it.")
        key = (*current, scope)
        with self._lock:  # an in-place update keeps the generation number and changes its revision
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = _PgState(conn, current[0], scope)
                while len(self._states) > STATES_KEPT:
                    self._states.popitem(last=False)
            self._states.move_to_end(key)
        return fn(_PgRequest(state, conn))

    def _compile(self, ctx: Any, parsed: Parsed, text: str) -> Any:
        """compile_query fed from PostgreSQL: when it meets terms whose df is not cached, one statement fetches
        them all and it compiles again; then one more fetches the posting arrays of the terms the match needs."""
        ctx.recording = set()
        try:
            compiled = compile_query(ctx, parsed, text)
            missing = ctx.recording
        finally:
            ctx.recording = None
        if missing:
            ctx.state.prefetch_df(ctx.reader, missing)
            compiled = compile_query(ctx, parsed, text)
        ctx.state.prefetch_postings(ctx.reader, _query_terms(compiled.match))
        return compiled

    def _hits(self, ctx: Any, ranked: list[tuple[float, int]], pattern: Marker | None) -> list[Hit]:
        docs = ctx.state.documents(ctx.reader, [d for _, d in ranked])
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


def _completions(ctx: _PgRequest, key: str, limit: int) -> list[str]:
    """kb.search.suggest.completions over the generation: visible titles, vocabulary terms, visible words."""
    conn, gen, scope = ctx.reader, ctx.state.gen, ctx.state.scope  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for title in pgs.titles_with_prefix(conn, gen, scope, key, limit):
        out.setdefault(title.casefold(), title)
    add_vocabulary_completions(out, key, limit)
    if len(out) < limit:
        head, _, last = key.rpartition(" ")
        if len(last) >= 2:
            for word, _df in pgs.words_with_prefix(conn, gen, scope, last, limit):
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
