"""The JSON API under /api: search, suggest, articles, and the OpenAPI document that describes them.

Search answers are exactly Results.to_json(), the document `kb search --json` prints; errors are JSON
(kb.web.app.error_response); crawled links, language tags and section markup are made safe before they leave.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

from kb.extract.markup import clean as clean_markup
from kb.models import Article
from kb.web.app import get_searcher, get_store
from kb.web.format import http_url, language_tag
from kb.web.openapi import openapi_document
from kb.web.params import MAX_QUERY_LENGTH, MAX_SUGGEST, BadParam, int_arg, parse_search_args
from kb.web.reader import audiences, run_search, visible_article

bp = Blueprint("api", __name__, url_prefix="/api")


def public_article(article: Article) -> dict[str, Any]:
    """An article for API clients: crawled `canonical` and `lang` only when safe to use as a link and a tag."""
    data = article.to_dict()
    data["canonical"] = http_url(article.canonical) or ""
    data["lang"] = language_tag(article.lang)
    return data


@bp.get("/search")
def api_search() -> Response:
    """Exactly Results.to_json(), the same document `kb search --json` prints."""
    params = parse_search_args(request.args, default_per_page=int(current_app.config["PER_PAGE"]),
                               allow_per_page=True)
    if not params.q and not params.filters:
        raise BadParam("Parameter q is required (or at least one filter: tag, category, site, year).")
    results = run_search(params)
    return jsonify(results.to_json())


@bp.get("/suggest")
def suggest() -> Response:
    """Completions for the search box (suggest-as-you-type)."""
    q = " ".join((request.args.get("q") or "").split())
    if len(q) > MAX_QUERY_LENGTH:
        raise BadParam(f"The query is too long; use at most {MAX_QUERY_LENGTH} characters.")
    limit = int_arg(request.args, "limit", 8, 1, MAX_SUGGEST)
    suggestions = get_searcher().suggest(q, limit=limit, audiences=audiences()) if q else []
    return jsonify(query=q, suggestions=list(suggestions))


@bp.get("/articles/<article_id:article_id>")
def api_article(article_id: int) -> Response:
    found = visible_article(article_id)
    if found is None:
        abort(404)
    copies = get_store().copies(article_id, audiences())
    if len(copies) > 1:  # near-duplicates: every copy, the group's primary first
        found.sources = [{"url": c["url"], "site": c["site"], "title": c["title"]} for c in copies]
    for section in found.sections:  # clients may show it as HTML: the same allow-list as the article page
        section.html = clean_markup(section.html, found.url)
    return jsonify(public_article(found))


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())

