"""Rank: which documents a compiled query matches, and one page of them in BM25F order.

`_docs` evaluates a compiled query as bit algebra over cached posting lists (the result set,
counted and faceted in full). `rank` orders one page of it: terms frequent enough to cost more than
they tell (Lucene's CommonTermsQuery) are pruned from candidate selection and only add their idf;
`_score` sums each term's cached BM25F array, equal to Whoosh's own scores (tested); short keyword
queries are scaled by how many of their words a document holds (coordination); the best candidates
get a bonus when they hold the whole query as a phrase, whose positions are decoded only there.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Iterable

from whoosh import query as wq

from kb.search.compile import FIELD_WEIGHTS, _Compiled, _or
from kb.search.postings import EMPTY, DocSet, _union
from kb.search.state import _Request

#: The whole query as a phrase, per field: bonus = weight x sum of the terms' idf, added when re-ranking.
PHRASE_BONUS = (("title", 3.0), ("headings", 1.5), ("body", 1.0))
#: Short keyword queries mean "all of these": score x (share of query words matched) ** COORD_POWER.
#: Longer (question-like) queries are left alone: measured on MedQuAD, coordination over every word
#: of a question costs 0.02-0.04 nDCG@10.
COORD_POWER = 1.0
COORD_MAX_WORDS = 3
PHRASE_RERANK = 30  # best candidates checked for the whole-query phrase
RERANK_DEPTH = 100  # candidates scored exactly / re-ranked with the phrase bonus
FREQUENT_SHARE = 0.02  # terms in more than this share of documents only score candidates ...
FREQUENT_MIN_DF = 500  # ... and in more than this many documents


def _phrase_docs(ctx: _Request, fieldname: str, tokens: tuple[str, ...], candidates: Iterable[int]) -> set[int]:
    """Which candidates hold `tokens` as a phrase in `fieldname` (the whole-query phrase bonus)."""
    if len(tokens) < 2 or not all(ctx.has(fieldname, t) for t in tokens):
        return set()
    known = [ctx.state.cached((fieldname, t)) for t in tokens]
    docs = [d for d in candidates if all(k is None or d in k for k in known)]
    return set(ctx.phrase_matches(fieldname, tokens, docs))


def _prune(q: Any, ctx: _Request, cutoff: int, frequent: list[tuple[str, tuple[str, ...], float]],
           scale: float) -> Any | None:
    """`q` without leaves whose terms are all in more than `cutoff` documents.

    Those leaves go to `frequent` as (field, terms, boost): they only add their weight later.
    """
    if isinstance(q, wq.Term):
        if ctx.doc_frequency(q.fieldname, q.text) > cutoff:
            frequent.append((q.fieldname, (q.text,), scale * q.boost))
            return None
        return q
    if isinstance(q, wq.Phrase):  # ranking only: the filter already holds just the phrase's documents
        q = wq.And([wq.Term(q.fieldname, w) for w in q.words], boost=q.boost)
    if isinstance(q, wq.And) and all(isinstance(s, wq.Term) for s in q.subqueries):
        if min(ctx.doc_frequency(s.fieldname, s.text) for s in q.subqueries) > cutoff:
            frequent.append((q.subqueries[0].fieldname, tuple(s.text for s in q.subqueries), scale * q.boost))
            return None
        return q
    if isinstance(q, wq.Or):
        return _or([_prune(s, ctx, cutoff, frequent, scale * q.boost) for s in q.subqueries])
    if isinstance(q, wq.AndMaybe):
        a = _prune(q.a, ctx, cutoff, frequent, scale)
        b = _prune(q.b, ctx, cutoff, frequent, scale)
        if a is None:
            return None
        return wq.AndMaybe(a, b) if b is not None else a
    if isinstance(q, wq.AndNot):
        a = _prune(q.a, ctx, cutoff, frequent, scale)
        return wq.AndNot(a, q.b) if a is not None else None
    return q


def _score(ctx: _Request, q: Any, factor: float = 1.0, acc: dict[int, float] | None = None) -> dict[int, float]:
    """Document -> score of a pruned query, the sum Whoosh's BM25F matchers would compute.

    Replaces `searcher.search()` for ranking: Whoosh walks a tree of matchers per posting
    (~2 us each, x5 fields per word); here each term is one cached array pass (see
    `_State.leaf_scores`) added into one dict. Scores are equal to Whoosh's (tested), but every
    matching document is scored exactly instead of top-k with block skipping (Whoosh's block
    skipping barely applied: the candidate depth is 100). Measured at 100,000 articles, with the
    block reads: question queries' p95 from 182 ms to 88 ms, two-term queries' from 49 to 21 ms.
    """
    acc = {} if acc is None else acc
    if isinstance(q, wq.Term):
        ids, scores = ctx.leaf_scores(q.fieldname, q.text)
        f = factor * q.boost
        get = acc.get
        for d, x in zip(ids, scores):
            acc[d] = get(d, 0.0) + f * x
        return acc
    if isinstance(q, wq.Or):
        f = factor * (q.boost if len(q.subqueries) > 1 else 1.0)
        for sub in q.subqueries:
            _score(ctx, sub, f, acc)
        return acc
    if isinstance(q, (wq.And, wq.Phrase)):
        subs = [wq.Term(q.fieldname, w) for w in q.words] if isinstance(q, wq.Phrase) else list(q.subqueries)
        if not subs:
            return acc
        f = factor * (q.boost if len(subs) > 1 else 1.0)
        # Rarest term first; a frequent term then only looks its postings up in the survivors
        # (a dict probe per posting) instead of becoming a dict of its own.
        subs.sort(key=lambda sub: ctx.doc_frequency(sub.fieldname, sub.text) if isinstance(sub, wq.Term) else 0)
        found = _score(ctx, subs[0])
        for sub in subs[1:]:
            if not found:
                break
            narrowed: dict[int, float] = {}
            if isinstance(sub, wq.Term):
                ids, scores = ctx.leaf_scores(sub.fieldname, sub.text)
                b = sub.boost
                get = found.get
                for d, x in zip(ids, scores):
                    y = get(d)
                    if y is not None:
                        narrowed[d] = y + b * x
            else:
                other = _score(ctx, sub)
                narrowed = {d: y + other[d] for d, y in found.items() if d in other}
            found = narrowed
        get = acc.get
        for d, x in found.items():
            acc[d] = get(d, 0.0) + f * x
        return acc
    if isinstance(q, wq.AndMaybe):
        base = _score(ctx, q.a, factor)
        extra = _score(ctx, q.b, factor)
        for d, x in extra.items():
            if d in base:
                base[d] += x
        if acc:
            for d, x in base.items():
                acc[d] = acc.get(d, 0.0) + x
            return acc
        return base
    if isinstance(q, wq.AndNot):
        base = _score(ctx, q.a, factor)
        excluded = _docs(ctx, q.b)
        for d, x in base.items():
            if d not in excluded:
                acc[d] = acc.get(d, 0.0) + x
        return acc
    if q is wq.NullQuery or q is None:
        return acc
    for hit in ctx.searcher.search(q, limit=None):  # anything else: Whoosh itself
        acc[hit.docnum] = acc.get(hit.docnum, 0.0) + factor * hit.score
    return acc


def _top_scores(ctx: _Request, q: Any, docs: DocSet, limit: int) -> dict[int, float]:
    """The `limit` best documents of `docs` by `_score` (ties: lower document number first)."""
    raw = docs.as_bytes()
    n = len(raw)
    scored = [(x, d) for d, x in _score(ctx, q).items() if (d >> 3) < n and raw[d >> 3] >> (d & 7) & 1]
    best = heapq.nlargest(limit, scored, key=lambda xd: (xd[0], -xd[1]))
    return {d: x for x, d in best}


def _idf(ctx: _Request, fieldname: str, token: str) -> float:
    n = ctx.state.size or 1
    df = ctx.doc_frequency(fieldname, token)
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _docs(ctx: _Request, q: Any) -> DocSet:
    """The documents a compiled query matches, by bit algebra over cached posting lists."""
    if isinstance(q, wq.Term):
        return ctx.term_docs(q.fieldname, q.text)
    if isinstance(q, wq.Or):
        return _union(_docs(ctx, s) for s in q.subqueries)
    if isinstance(q, wq.And):
        mask = -1
        for s in q.subqueries:
            mask &= _docs(ctx, s).mask
        return DocSet(mask) if q.subqueries else EMPTY
    if isinstance(q, wq.AndNot):
        return _docs(ctx, q.a) - _docs(ctx, q.b)
    if isinstance(q, wq.AndMaybe):
        return _docs(ctx, q.a)
    if isinstance(q, wq.Phrase):
        key = (q.fieldname, "\x00".join(q.words))
        found = ctx.state.cached(key)
        if found is None:
            possible = EMPTY
            if q.words:
                mask = -1
                for word in q.words:
                    mask &= ctx.term_docs(q.fieldname, word).mask
                possible = DocSet(mask)
            if not possible:
                found = EMPTY
            else:  # positions of the co-occurrences only, see _phrase_matches
                found = DocSet.from_ids(ctx.phrase_matches(q.fieldname, q.words, possible.ids()), ctx.state.size)
            ctx.state.remember(key, found)
        return found
    if q is wq.NullQuery:
        return EMPTY
    return DocSet.from_ids(q.docs(ctx.searcher), ctx.state.size)


def rank(ctx: _Request, compiled: _Compiled, docs: DocSet, first: int, per_page: int) -> list[tuple[float, int]]:
    """One page of (score, docnum): BM25F, whole-query phrase bonus, newer first on equal scores.

    Whoosh scores every posting it is given (~2 us each), so a word found in most documents
    would cost ~200 ms at 100,000 articles. As in Lucene's CommonTermsQuery, terms in more
    than FREQUENT_SHARE of the documents do not select candidates: the selective terms find
    the top candidates with full BM25F, and each frequent term then adds its idf to the
    candidates that contain it (a bit test). Their idf is small, so the order changes little.
    """
    published, _ = ctx.by_date()
    want = first + per_page
    depth = max(want, RERANK_DEPTH)
    cutoff = max(FREQUENT_MIN_DF, int(FREQUENT_SHARE * ctx.state.size))
    frequent: list[tuple[str, tuple[str, ...], float]] = []
    selective = _prune(compiled.score, ctx, cutoff, frequent, 1.0)
    if not frequent and selective is not None:
        scores = _top_scores(ctx, selective, docs, depth)
    else:
        scores = {}
        if selective is not None:
            scores = _top_scores(ctx, selective, docs, depth)
        if len(scores) < depth:  # documents with frequent words only: newest first, then by idf
            for docnum in ctx.newest(docs, depth - len(scores), skip=scores):
                scores[docnum] = 0.0
        for fieldname, texts, boost in frequent:
            holders = [ctx.term_docs(fieldname, t) for t in texts]
            weight = boost * sum(ctx.idf(fieldname, t) for t in texts)
            for docnum in scores:
                if all(docnum in h for h in holders):
                    scores[docnum] += weight
    if COORD_POWER and 1 < len(compiled.concepts) <= COORD_MAX_WORDS and scores:
        _coordinate(ctx, compiled.concepts, scores)
    if compiled.phrase and scores:
        best = heapq.nlargest(PHRASE_RERANK, scores, key=scores.__getitem__)
        for fieldname, weight in PHRASE_BONUS:
            matched = _phrase_docs(ctx, fieldname, compiled.phrase, best)
            if matched:
                bonus = weight * sum(_idf(ctx, fieldname, t) for t in compiled.phrase)
                for docnum in matched:
                    scores[docnum] += bonus
    ranked = sorted(((score, d) for d, score in scores.items()),
                    key=lambda sd: (-round(sd[0], 6), -published[sd[1]], sd[1]))
    return ranked[first:first + per_page]


def _coordinate(ctx: _Request, concepts: list[set[tuple[str, ...]]], scores: dict[int, float]) -> None:
    """Scale scores by the share of query words (or their expansions) a document contains."""
    fields = [f for f, _ in FIELD_WEIGHTS]
    holders: dict[str, list[DocSet]] = {}

    def has(docnum: int, tokens: tuple[str, ...]) -> bool:
        for token in tokens:
            sets = holders.get(token)
            if sets is None:
                sets = holders[token] = [ctx.term_docs(f, token) for f in fields if ctx.has(f, token)]
            if not any(docnum in s for s in sets):
                return False
        return True

    n = len(concepts)
    for docnum in scores:
        matched = sum(1 for alternatives in concepts if any(has(docnum, t) for t in alternatives))
        scores[docnum] *= (matched / n) ** COORD_POWER
