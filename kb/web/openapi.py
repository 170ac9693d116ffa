"""The OpenAPI 3.1 document of /api/*, built from the same limits the views enforce (kb.web.params).

It is data, not a view: kept apart so the API module reads as its four endpoints, and so a test can validate
the document without a request.
"""

from __future__ import annotations

from typing import Any

from kb import __version__
from kb.web.params import (
    FILTERS,
    MAX_ARTICLE_ID,
    MAX_FILTER_VALUES,
    MAX_PAGE,
    MAX_PER_PAGE,
    MAX_QUERY_LENGTH,
    MAX_SUGGEST,
    SORTS,
)


def _param(name: str, description: str, schema: dict[str, Any], *, required: bool = False,
           explode: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "description": description,
                             "schema": schema}
    if explode:
        param.update(style="form", explode=True)
    return param


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of /api/*, built from the same limits the views enforce."""
    error = {"description": "Error",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    filters = [
        _param(name, f"Only results with this {name}; repeat to allow several values.",
               {"type": "array", "items": {"type": "string", "pattern": r"^\d{4}$"} if name == "year"
                else {"type": "string", "maxLength": 200}, "maxItems": MAX_FILTER_VALUES}, explode=True)
        for name in FILTERS
    ]
    string_list = {"type": "array", "items": {"type": "string"}}
    source_list = {"type": "array", "description": "Every site publishing this text (near-duplicates merged), "
                   "the first copy first; empty when there is only one", "items": {
                       "type": "object", "properties": {"url": {"type": "string"}, "site": {"type": "string"},
                                                        "title": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kb dermatology knowledge base API",
            "version": __version__,
            "description": "Full-text search over crawled dermatology articles. Errors are JSON "
                           "{\"error\": {\"status\", \"message\"}}. 503 means the index is not built yet "
                           "(run `kb reindex`).",
        },
        "servers": [{"url": "/"}],
        # Anonymous requests get the public view; a staff token adds staff-only records.
        "security": [{}, {"bearerAuth": []}],
        "paths": {
            "/api/search": {"get": {
                "operationId": "search",
                "summary": "Search articles (same JSON as `kb search --json`)",
                "parameters": [
                    _param("q", "Query: words, \"phrases\", AND/OR/NOT. Optional when a filter is given.",
                           {"type": "string", "maxLength": MAX_QUERY_LENGTH}),
                    _param("page", "Page number, from 1.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                                            "default": 1}),
                    _param("per_page", "Results per page.", {"type": "integer", "minimum": 1,
                                                              "maximum": MAX_PER_PAGE, "default": 10}),
                    _param("sort", "Ranking order.", {"type": "string", "enum": list(SORTS), "default": "relevance"}),
                    _param("exact", "1: search the words as typed, with no spelling correction.",
                           {"type": "string", "enum": ["0", "1", "true", "false"], "default": "0"}),
                    *filters,
                ],
                "responses": {
                    "200": {"description": "A page of results",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}},
                    "400": error, "401": error, "503": error,
                },
            }},
            "/api/suggest": {"get": {
                "operationId": "suggest",
                "summary": "Completions for a partly typed query",
                "parameters": [
                    _param("q", "What has been typed so far.", {"type": "string", "maxLength": MAX_QUERY_LENGTH},
                           required=True),
                    _param("limit", "Most suggestions returned.", {"type": "integer", "minimum": 1,
                                                                    "maximum": MAX_SUGGEST, "default": 8}),
                ],
                "responses": {
                    "200": {"description": "Suggestions", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["query", "suggestions"],
                        "properties": {"query": {"type": "string"}, "suggestions": string_list}}}}},
                    "400": error, "401": error, "503": error,
                },
            }},
            "/api/articles/{id}": {"get": {
                "operationId": "getArticle",
                "summary": "One stored article with its sections",
                "parameters": [{"name": "id", "in": "path", "required": True,
                                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ARTICLE_ID}}],
                "responses": {
                    "200": {"description": "The article",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Article"}}}},
                    "401": error, "404": error,
                },
            }},
            "/api/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {"securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "Staff API token (`kb token create USER`). Without one the public view is returned; "
                           "a wrong or revoked token gets 401."}}, "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["status", "message"],
                "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}}}},
            "Hit": {"type": "object", "required": ["id", "url", "link", "title", "snippet", "score"], "properties": {
                "id": {"type": "integer"},
                "url": {"type": "string", "description": "The original page"},
                "link": {"type": "string", "description": "url#anchor of the best-matching section"},
                "title": {"type": "string"},
                "snippet": {"type": "string", "description": "Escaped text with <mark> around matches (HTML)"},
                "score": {"type": "number"},
                "site": {"type": "string"},
                "published": {"type": ["string", "null"]},
                "tags": string_list, "categories": string_list,
                "anchor": {"type": "string"}, "section": {"type": "string"},
                "audience": {"type": "string"}, "kind": {"type": "string"},
                "sources": source_list}},
            "Results": {"type": "object", "required": ["query", "total", "results"], "properties": {
                "query": {"type": "string"}, "total": {"type": "integer"}, "page": {"type": "integer"},
                "per_page": {"type": "integer"}, "pages": {"type": "integer"},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                "suggestions": {**string_list, "description": "\"Did you mean …?\" alternatives (offered, "
                                "not searched), or the choices when two corrections are equally near"},
                "corrected_query": {"type": ["string", "null"], "description": "The words actually searched "
                                    "when misspelt words were corrected (`query` is what was typed); null "
                                    "when nothing was corrected or `exact=1`"},
                "facets": {"type": "object", "additionalProperties": {"type": "array", "items": {
                    "type": "object", "properties": {"value": {"type": "string"}, "count": {"type": "integer"}}}}},
                "notice": {"type": "string"}}},
            "Section": {"type": "object", "properties": {
                "heading": {"type": "string"}, "anchor": {"type": "string"}, "text": {"type": "string"},
                "level": {"type": "integer"},
                "html": {"type": "string", "description": "The section body as sanitised HTML (p, ul, ol, li, "
                         "h3-h6, strong, em, b, i, blockquote, table parts, br, and a with an absolute http(s) "
                         "href and rel=\"nofollow noopener\"), or empty when only the text is known"}}},
            "Article": {"type": "object", "required": ["id", "url", "title", "text"], "properties": {
                "id": {"type": "integer"}, "url": {"type": "string"}, "title": {"type": "string"},
                "text": {"type": "string"},
                "sections": {"type": "array", "items": {"$ref": "#/components/schemas/Section"}},
                "canonical": {"type": "string", "description": "The page's canonical http(s) URL, or empty"},
                "description": {"type": "string"}, "author": {"type": "string"},
                "published": {"type": ["string", "null"]}, "modified": {"type": ["string", "null"]},
                "categories": string_list, "tags": string_list, "site": {"type": "string"},
                "audience": {"type": "string"}, "kind": {"type": "string"},
                "lang": {"type": "string", "description": "The page's BCP 47 language tag (en-GB), or empty"},
                "disclaimer": {"type": "boolean", "description": "The source page carries a medical disclaimer"},
                "sources": source_list}},
        }},
    }

