"""Search: query parsing, ranking, snippets, deep links, facets and suggestions; the only index reader.

The web app and the CLI use one thing from here: a `SearchService` (kb.search.interface: `search`,
`suggest`, `close`, and what each guarantees about audiences), implemented over Whoosh by
`Searcher` and over PostgreSQL by `kb.search.pg.PgSearcher`. The modules behind them follow the
layers of one search, and import one way only, each from those listed before it (kb.schema,
shared with the writer kb.index, sits under them all):

    postings    DocSet and Whoosh's posting blocks, lengths, positions: the only module on Whoosh internals
    check       reads a generation as searches do; `current_generation` (also used by the writer)
    state       one opened generation per audience scope: pooled Whoosh searchers, per-state caches
    vocabulary  kb.vocab's expansions, clinical terms and term list, failing soft
    compile     query tree -> Whoosh queries: vocabulary expansion, field weights, ranking-only clauses
    rank        matching by bit algebra over cached postings; BM25F, pruning, coordination, phrase bonus
    snippets    the best fragment of a stored body, query words marked (pure text)
    suggest     "Did you mean" and search-box completions, per audience
    interface   the SearchService Protocol and DEFAULT_AUDIENCES
    engine      the pipeline both backends run: parse -> compile -> match -> facets -> rank -> suggest
    searcher    Searcher: Whoosh state management and stored fields under that pipeline
    pg_build    PostgreSQL search generations: kb's analysis into posting arrays and tsvectors
    pg          PgSearcher: the same pipeline over per-process caches of a PostgreSQL generation

Audiences are separate indexes, not a filter over one (see kb/schema.py): each generation holds a
public and a staff sub-index, and the searcher keeps one state per set of sub-indexes a request
may read (`kb.schema.subindexes_for`). An anonymous request opens the public sub-index alone, so
its BM25 statistics, facet labels and counts, suggestions, "Did you mean" and its timing are
exactly those of a kb that never held staff material. A staff request reads both through one
Whoosh MultiReader over the leaf (segment) readers of the two, which gives one document
numbering and combined statistics; everything works per leaf reader with its docnum offset,
as it does for a multi-segment index. The two states share nothing: each has its own caches.

Per-request work is kept small: the matching document set is computed with set algebra over
cached posting lists (Python ints as bit sets, in C), facets are counted from per-document value
tables built once per index state, and snippets come from one regular expression over the stored
(compressed) body instead of re-analysing it. Posting lists are read a whole Whoosh block at a
time (`postings._term_blocks`), ranking sums cached per-term BM25F arrays instead of walking
Whoosh's matcher tree (`rank._score`, equal scores), phrases decode positions only where
candidates are (`_Request.phrase_matches`), and spelling corrections are cached per index state and
audience and bounded per query (`suggest.MAX_CORRECTED_WORDS` words, `MAX_CORRECTION_CANDIDATES`
candidates each).
"""

from __future__ import annotations

from kb.search.interface import DEFAULT_AUDIENCES, SearchService
from kb.search.searcher import Searcher

__all__ = ["DEFAULT_AUDIENCES", "SearchService", "Searcher"]
