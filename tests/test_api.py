"""JSON API of kb.web: /api/search, /api/suggest, /api/articles/<id>, /api/openapi.json and JSON errors.

Tests that read a store or an index run on both backends (`web_site`, `real_app` of tests/webapp.py); those drawn
from an injected searcher (tests/fakes.py) touch no backend and run once.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from kb.errors import IndexUnavailable
from kb.models import Results
from tests.fakes import FakeSearcher, make_hit, make_results
from tests.webapp import SCRIPT_TITLE, article, get


def error_of(response, status: int) -> str:
    """Assert the JSON error envelope and return its message."""
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "message"}
    assert body["error"]["status"] == status and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]["message"]


# -- /api/search ----------------------------------------------------------------------------------------------------

def test_search_returns_exactly_results_to_json(make_app):
    results = make_results(total=42, hits=[make_hit(1), make_hit(2, anchor="")], page=2, per_page=2,
                           suggestions=["acne"], facets={"category": [("Acne", 40)]}, notice="n")
    searcher = FakeSearcher(results)
    response = get(make_app(searcher), "/api/search?q=acne&page=2&per_page=2&tag=a&tag=b&site=x.org&sort=date")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == results.to_json()
    assert list(response.get_json()) == list(results.to_json())  # same key order as `kb search --json`
    assert response.get_json()["results"][0]["link"].endswith("#treatment")
    assert searcher.calls == [("acne", {"page": 2, "per_page": 2, "filters": {"tag": ["a", "b"], "site": ["x.org"]},
                                        "sort": "date", "audiences": ("public",)})]


def test_search_default_per_page_follows_setting(make_app):
    searcher = FakeSearcher()
    get(make_app(searcher, PER_PAGE=15), "/api/search?q=acne")
    assert searcher.calls[0][1]["per_page"] == 15


def test_per_page_limit(make_app):
    searcher = FakeSearcher()
    app = make_app(searcher)
    assert get(app, "/api/search?q=acne&per_page=100").status_code == 200
    assert searcher.calls[-1][1]["per_page"] == 100
    assert "between 1 and 100" in error_of(get(app, "/api/search?q=acne&per_page=101"), 400)
    error_of(get(app, "/api/search?q=acne&per_page=0"), 400)
    assert "whole number" in error_of(get(app, "/api/search?q=acne&per_page=ten"), 400)
    assert len(searcher.calls) == 1


@pytest.mark.parametrize("query", ["", "q=", "q=acne&page=0", "q=acne&page=1001", "q=acne&sort=popular",
                                   "q=acne&year=last", "q=" + "x" * 501,
                                   "q=acne&" + "&".join(f"tag={n}" for n in range(21))])
def test_bad_search_parameters_are_400(make_app, query):
    searcher = FakeSearcher()
    error_of(get(make_app(searcher), f"/api/search?{query}"), 400)
    assert searcher.calls == []


def test_filter_without_query_is_allowed(make_app):
    searcher = FakeSearcher()
    assert get(make_app(searcher), "/api/search?category=Acne").status_code == 200
    assert searcher.calls[0][0] == "" and searcher.calls[0][1]["filters"] == {"category": ["Acne"]}


def test_crawled_markup_is_escaped_in_json(make_app):
    results = make_results(hits=[make_hit(1, title=SCRIPT_TITLE)])
    response = get(make_app(FakeSearcher(results)), "/api/search?q=acne")
    raw = response.get_data(as_text=True)
    assert "<script>" not in raw and "<mark>" not in raw and "&" not in raw
    assert "\\u003cscript\\u003e" in raw
    assert response.get_json()["results"][0]["title"] == SCRIPT_TITLE  # same value once parsed
    assert json.loads(raw) == results.to_json()


# -- /api/suggest ---------------------------------------------------------------------------------------------------

def test_suggest_shape_and_limit(make_app):
    searcher = FakeSearcher(suggestions=[f"acne {n}" for n in range(12)])
    app = make_app(searcher)
    assert get(app, "/api/suggest?q=acn").get_json() == {"query": "acn",
                                                         "suggestions": [f"acne {n}" for n in range(8)]}
    assert searcher.calls[-1] == ("acn", {"limit": 8, "audiences": ("public",)})
    assert len(get(app, "/api/suggest?q=acn&limit=3").get_json()["suggestions"]) == 3
    error_of(get(app, "/api/suggest?q=acn&limit=21"), 400)
    calls = len(searcher.calls)
    assert get(app, "/api/suggest?q=+").get_json() == {"query": "", "suggestions": []}
    assert get(app, "/api/suggest").get_json() == {"query": "", "suggestions": []}
    assert len(searcher.calls) == calls  # nothing to complete, the index is not asked


# -- /api/articles/<id> ---------------------------------------------------------------------------------------------

def test_article_json(web_site):
    stored = article(1, title=SCRIPT_TITLE)
    article_id, _ = web_site.store.save_article(stored)
    response = get(web_site.app(FakeSearcher()), f"/api/articles/{article_id}")
    assert response.status_code == 200
    data = response.get_json()
    assert data == web_site.store.get_article(article_id).to_dict()
    assert data["title"] == SCRIPT_TITLE and [s["anchor"] for s in data["sections"]] == ["causes", "treatment"]
    assert "<script>" not in response.get_data(as_text=True)


@pytest.mark.parametrize(("canonical", "lang", "clean_canonical", "clean_lang"), [
    ("javascript:alert(1)", 'en" onload=alert(1)', "", ""),
    ("data:text/html,<b>x</b>", "xx", "", ""),
    ("//evil.example/x", "english", "", ""),
    (" https://derm.example.org/acne ", "en_gb", "https://derm.example.org/acne", "en-GB"),
    ("http://derm.example.org/a?b=1", "de-CH-1996", "http://derm.example.org/a?b=1", "de-CH-1996"),
])
def test_article_json_keeps_only_http_canonicals_and_valid_language_tags(web_site, canonical, lang,
                                                                         clean_canonical, clean_lang):
    article_id, _ = web_site.store.save_article(article(1, canonical=canonical, lang=lang))
    data = get(web_site.app(FakeSearcher()), f"/api/articles/{article_id}").get_json()
    assert (data["canonical"], data["lang"]) == (clean_canonical, clean_lang)


@pytest.mark.parametrize("article_id", [2**63, 10**30])
def test_article_ids_past_sqlite_integers_are_json_404(web_site, caplog, article_id):
    error_of(get(web_site.app(FakeSearcher()), f"/api/articles/{article_id}"), 404)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_missing_and_staff_articles_are_json_404(web_site):
    staff_id, _ = web_site.store.save_article(article(2, audience="staff"))
    app = web_site.app(FakeSearcher())
    for url in ("/api/articles/12345", f"/api/articles/{staff_id}", "/api/articles/abc", "/api/nothing", "/api"):
        error_of(get(app, url), 404)


# -- errors ---------------------------------------------------------------------------------------------------------

def test_405_is_json_with_allow_header(make_app):
    with make_app(FakeSearcher()).test_client() as client:
        response = client.post("/api/search", data={"q": "acne"})
        assert "GET" in response.headers["Allow"]
        error_of(response, 405)
        error_of(client.delete("/api/articles/1"), 405)


def test_index_unavailable_is_json_503_with_remedy(make_app):
    app = make_app(FakeSearcher(error=IndexUnavailable("No index in /srv/private", "")))
    for url in ("/api/search?q=acne", "/api/suggest?q=ac"):
        response = get(app, url)
        message = error_of(response, 503)
        assert "kb reindex" in message and "/srv/private" not in message
        assert response.headers["Retry-After"] == "60"


def test_unexpected_error_is_json_500_without_details(make_app):
    response = get(make_app(FakeSearcher(error=ZeroDivisionError("internal detail"))), "/api/search?q=acne")
    assert "internal detail" not in error_of(response, 500)
    assert "internal detail" not in response.get_data(as_text=True)


def test_no_cors_headers(make_app):
    response = get(make_app(FakeSearcher()), "/api/search?q=acne", headers={"Origin": "https://elsewhere.example"})
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]
    with make_app(FakeSearcher()).test_client() as client:
        preflight = client.options("/api/search", headers={"Origin": "https://elsewhere.example",
                                                          "Access-Control-Request-Method": "GET"})
    assert not [h for h in preflight.headers.keys() if h.lower().startswith("access-control-")]


# -- OpenAPI --------------------------------------------------------------------------------------------------------

def test_openapi_document_describes_every_api_route(make_app):
    app = make_app(FakeSearcher())
    doc = get(app, "/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1.") and doc["info"]["title"] and doc["info"]["version"]
    routes = {re.sub(r"<(?:\w+:)?\w+>", "{id}", rule.rule) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/")}
    assert set(doc["paths"]) == routes
    for path, item in doc["paths"].items():
        operation = item["get"]
        assert operation["operationId"] and "200" in operation["responses"]
        for parameter in operation.get("parameters", []):
            assert {"name", "in", "schema"} <= set(parameter)
    search = {p["name"]: p for p in doc["paths"]["/api/search"]["get"]["parameters"]}
    assert search["per_page"]["schema"]["maximum"] == 100
    assert set(search) == {"q", "page", "per_page", "sort", "exact", "tag", "category", "site", "year"}
    results_schema = doc["components"]["schemas"]["Results"]["properties"]
    assert results_schema["corrected_query"]["type"] == ["string", "null"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    # The documented result schema names every key Results.to_json() produces.
    assert set(schemas["Results"]["properties"]) == set(Results(query="", total=0).to_json())
    assert set(schemas["Hit"]["properties"]) == set(make_hit().to_json())
    assert set(schemas["Article"]["properties"]) == set(article().to_dict())


def test_openapi_document_validates_against_the_3_1_schema(make_app):
    import openapi_spec_validator as validator  # a declared test dependency: missing it is an error, not a skip
    doc = get(make_app(FakeSearcher()), "/api/openapi.json").get_json()
    validator.validate(doc)


# -- real index -----------------------------------------------------------------------------------------------------

def test_real_index_api_matches_searcher(real_app):
    from kb import config
    from kb.config import data_paths
    from kb.search.pg import open_searcher

    response = get(real_app, "/api/search?q=retinoids&per_page=5&page=2&category=Acne")
    assert response.status_code == 200
    data = response.get_json()
    settings = config.load({"DATA_DIR": real_app.config["DATA_DIR"]})  # a searcher of its own, on the same backend
    searcher = open_searcher(settings, data_paths(settings["DATA_DIR"])["index"])
    try:
        expected = searcher.search("retinoids", page=2, per_page=5, filters={"category": ["Acne"]})
    finally:
        searcher.close()
    assert data == json.loads(json.dumps(expected.to_json()))
    assert data["total"] == 24 and data["page"] == 2 and len(data["results"]) == 5
    assert {"url", "title", "snippet", "score"} <= set(data["results"][0])
    over = get(real_app, "/api/search?q=retinoids&per_page=101")
    error_of(over, 400)


def test_real_index_suggest_and_article(real_app):
    data = get(real_app, "/api/suggest?q=reti").get_json()
    assert data["query"] == "reti" and isinstance(data["suggestions"], list)
    assert any(s.lower().startswith("reti") for s in data["suggestions"])
    hits = get(real_app, "/api/search?q=rosacea").get_json()["results"]
    assert hits and hits[0]["title"] == "Rosacea basics"
    found = get(real_app, f"/api/articles/{hits[0]['id']}").get_json()
    assert found["url"] == hits[0]["url"] == "javascript:alert(1)"


def test_real_index_filter_values_holding_nul_match_nothing_instead_of_failing(real_app):
    """PostgreSQL text cannot hold NUL: such a filter value reached the database there and answered a 500."""
    alone = get(real_app, "/api/search?q=retinoids&category=Ac%00ne")
    assert alone.status_code == 200 and alone.get_json()["total"] == 0
    acne = get(real_app, "/api/search?q=retinoids&category=Acne").get_json()
    assert acne["total"] == 24
    either = get(real_app, "/api/search?q=retinoids&category=Acne&category=Ac%00ne")  # alternatives: one matches
    assert either.status_code == 200 and either.get_json() == acne
    for url in ("/api/search?tag=%00", "/search?site=%00x", "/search?q=acne&tag=t1&tag=t%002"):
        assert get(real_app, url).status_code == 200, url
