"""What one reader may see, asked the same way by the pages and the API.

"Reader" is the person behind the request: their audiences (kb.web.auth decides), an article only if they may
see it, and a search in their view whose new queries go to the query log for `kb report queries`.
"""

from __future__ import annotations

import logging
import time

from kb.models import Article, Results
from kb.web.app import get_searcher, get_store, state
from kb.web.auth import current_audiences
from kb.web.params import SearchParams

log = logging.getLogger(__name__)


def audiences() -> tuple[str, ...]:
    """Whose view this request gets; kb.web.auth decides (public, or public + staff when signed in)."""
    return current_audiences()


def visible_article(article_id: int) -> Article | None:
    """The article if this request may see it; a hidden one is indistinguishable from a missing one."""
    return get_store().get_visible_article(article_id, audiences())


def run_search(params: SearchParams) -> Results:
    """Ask the process-wide Searcher; a new query (page 1) goes to the query log for `kb report queries`."""
    started = time.perf_counter()
    results = get_searcher().search(params.q, page=params.page, per_page=params.per_page,
                                    filters=params.filters or None, sort=params.sort,
                                    audiences=params.scope(audiences()), exact=params.exact)
    if params.q and params.page == 1:
        _log_search(params.q, results.total, (time.perf_counter() - started) * 1000)
    return results


def _log_search(query: str, total: int, elapsed_ms: float) -> None:
    """Record the search; logging is a by-product and must never break or slow a search noticeably."""
    try:
        audience = "staff" if "staff" in audiences() else "public"
        state().query_log.log(query, total, elapsed_ms, audience)
    except Exception:  # a broken log must not cost the reader their results
        log.warning("search not recorded in the query log", exc_info=True)

