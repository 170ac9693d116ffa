"""Flask pages and JSON API over the search layer; the store backs article pages.

The web layer never touches Whoosh or the network: it parses and validates request parameters, asks
`kb.search.Searcher` (one per process) or the `Store` (one per request), and renders autoescaped templates
(top-level templates/). One module per part, imported one way only (an arrow points at what is imported):

    format, params                       text helpers; search parameters and their limits (no kb.web imports)
      ^
    app                                  base_app(): settings, templates, state, get_store/get_searcher, errors
      ^
    auth                                 who is asking (sessions, tokens, CSRF, sign-in limit) and /login
      ^
    reader                               what this reader may see: audiences, visible_article, run_search
      ^
    pages, api (<- openapi)              the HTML views and the JSON views
      ^
    kb.web (this module)                 create_app(): base_app() plus the views, the only module that knows them all

Serve it with `kb serve`, or `flask --app kb.web run` / gunicorn `'kb.web:create_app()'`.
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from kb.web import api, auth, pages
from kb.web.app import base_app

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then data-dir kb.toml and KB_* environment, then `test_config` (see base_app)."""
    app = base_app(test_config)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    auth.init_app(app)  # sessions, CSRF, sign-in rate limit, /login and /logout (after api: exempts it from CSRF)
    return app
