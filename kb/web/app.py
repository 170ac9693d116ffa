"""The app without its views: settings, templates, JSON, per-process state, the request's store, errors, headers.

Every other part of kb.web imports from here and nothing here imports a view, so views reach the store, the
searcher and the error pages without an import cycle; kb.web.create_app() adds the views to the app built here.
Errors follow Datasette ({status}.html, then error.html), or JSON for API requests (`is_api_request()`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.resources
import logging
import os
import secrets
import tempfile
import threading
import weakref
from datetime import timedelta
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flask import Flask, Response, current_app, g, jsonify, render_template, request, url_for
from flask.json.provider import DefaultJSONProvider
from jinja2 import BaseLoader, Environment, TemplateNotFound
from jinja2.loaders import split_template_path
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from kb import __version__, config
from kb.config import data_paths
from kb.errors import IndexDamaged, IndexUnavailable
from kb.querylog import QueryLogWriter
from kb.store import Store, open_from_settings
from kb.web.format import host_name, http_url, human_date, iso_date
from kb.web.params import FILTER_LABELS, ArticleIdConverter, BadParam

if TYPE_CHECKING:
    from kb.search import SearchService

log = logging.getLogger(__name__)

STATIC_MAX_AGE = timedelta(days=7)  # URLs carry a content hash (?v=), so a week is safe

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'", "object-src 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

INDEX_UNAVAILABLE_MESSAGE = "The search index is not available yet; it may be being built right now."
INDEX_UNAVAILABLE_REMEDY = "Try again in a few minutes. Site maintainers: run `kb reindex` to build the index."
INDEX_DAMAGED_MESSAGE = "The search index cannot be read right now."
INDEX_DAMAGED_REMEDY = ("Try again in a few minutes. Site maintainers: run `kb reindex` to rebuild it from the store "
                        "(`kb check` shows what is damaged).")
ERROR_TEXT: dict[int, tuple[str, str]] = {
    400: ("The request had a parameter we could not use.", "Check the address, or start a new search."),
    404: ("There is no page at this address.", "Check the address for typos, or search from the home page."),
    405: ("This address does not accept that kind of request.",
          "Use a GET request (follow a link or the search form)."),
    500: ("Something went wrong on our side.",
          "Try again in a moment; if it keeps happening, tell the site maintainer."),
}


class HTMLSafeJSONProvider(DefaultJSONProvider):
    """JSON whose text never contains <, >, & or ' so crawled strings cannot act as markup if mis-served."""

    sort_keys = False  # keep Results.to_json() order, the same as `kb search --json`
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        text = super().dumps(obj, **kwargs)
        # Outside strings JSON has none of these characters, so the replacement only touches string contents.
        return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("'", "\\u0027"))


class ResourceLoader(BaseLoader):
    """Jinja loader over an importlib.resources Traversable, so templates work from a checkout, an
    editable install and a wheel (where they ship as the data package kb.templates)."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        node = self.root
        for piece in split_template_path(template):  # rejects "..", so no escape from the root
            node = node.joinpath(piece)
        if not node.is_file():
            raise TemplateNotFound(template)
        source = node.read_text("utf-8")
        if isinstance(node, Path):
            mtime = node.stat().st_mtime

            def uptodate() -> bool:
                try:
                    return node.stat().st_mtime == mtime
                except OSError:
                    return False

            return source, str(node), uptodate
        return source, None, lambda: True

    def list_templates(self) -> list[str]:
        found: list[str] = []

        def walk(node: Traversable, prefix: str) -> None:
            for child in node.iterdir():
                if child.is_dir():
                    walk(child, f"{prefix}{child.name}/")
                elif child.name.endswith(".html"):
                    found.append(prefix + child.name)

        walk(self.root, "")
        return sorted(found)


def template_root() -> Traversable:
    """Where templates live: the kb.templates package when installed, else the checkout's templates/."""
    try:
        root = importlib.resources.files("kb.templates")
    except ModuleNotFoundError:  # plain checkout on sys.path: top-level templates/ is not a kb subpackage
        root = Path(__file__).resolve().parents[2] / "templates"
    if not root.joinpath("base.html").is_file():
        raise RuntimeError(f"kb templates not found at {root}; reinstall kb (pip install -e .).")
    return root


class KBState:
    """What one app shares across requests: settings, data paths and the one lazily opened Searcher."""

    def __init__(self, settings: dict[str, Any], searcher: Any = None) -> None:
        self.settings = settings
        self.paths = data_paths(settings["DATA_DIR"])
        self._searcher = searcher
        self._owned = searcher is None
        self._lock = threading.Lock()
        self.query_log = QueryLogWriter(self.paths["store"], settings)

    def searcher(self) -> "SearchService":
        """The process-wide SearchService (PostgreSQL's when DATABASE_URL is set, else Whoosh's), opened lazily."""
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    from kb.search.pg import open_searcher

                    self._searcher = open_searcher(self.settings, self.paths["index"])
        return self._searcher

    def close(self) -> None:
        self.query_log.close()
        with self._lock:
            if self._searcher is not None and self._owned:
                self._searcher.close()
                self._searcher = None


def _close_state(ref: "weakref.ref[KBState]") -> None:
    state = ref()
    if state is not None:
        state.close()


def state() -> KBState:
    return current_app.extensions["kb"]


def get_searcher() -> "SearchService":
    return state().searcher()


def get_store() -> Store:
    """The request's Store connection (SQLite connections are per thread), closed on teardown."""
    if "kb_store" not in g:
        g.kb_store = open_from_settings(state().settings)
    return g.kb_store


def _secret_key(data_dir: Path) -> str:
    """Read or create DATA_DIR/secret_key (mode 0600) so sessions survive restarts without a config step.

    Workers starting at once must all end with the same key, or a form one of them served fails its CSRF check
    on another. So a new key is written whole to a private temporary file and hard-linked into place: the link
    is atomic and fails when another worker's key got there first, and then that key is read instead.
    """
    path = data_dir / "secret_key"
    data_dir.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            key: str | None = path.read_text("ascii").strip()
        except FileNotFoundError:
            key = None
        if key:
            return key
        fd, temp = tempfile.mkstemp(prefix=".secret_key-", dir=data_dir)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            if key is None:
                with contextlib.suppress(FileExistsError):  # another worker was first: its key is read next
                    os.link(temp, path)
            else:  # an empty file, left by a crash of an older kb between creating and writing it
                os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


_static_versions: dict[str, str] = {}


def static_url(filename: str) -> str:
    """Static URL with a content hash, so browsers may cache for a week yet see changes at once."""
    folder = current_app.static_folder or ""
    version = _static_versions.get(os.path.join(folder, filename))
    if version is None:
        try:
            version = hashlib.sha256(Path(folder, filename).read_bytes()).hexdigest()[:10]
        except OSError:
            version = __version__
        _static_versions[os.path.join(folder, filename)] = version
    return url_for("static", filename=filename, v=version)


def base_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The app without its views (flaskr style): settings from kb.config.load(), then the rest of `test_config`.

    Keys of `test_config` that are kb settings (DATA_DIR, PER_PAGE, ...) go
    through config.load like any override; other keys (TESTING, SEARCHER,
    AUDIENCES, ...) go straight into app.config. SEARCHER injects a searcher
    object (tests); otherwise one `Searcher` per process opens lazily.
    """
    test_config = dict(test_config or {})
    overrides = {k: v for k, v in test_config.items() if k in config.DEFAULTS}
    extra = {k: v for k, v in test_config.items() if k not in config.DEFAULTS}
    settings = config.load(overrides)

    static_folder = Path(__file__).resolve().parents[1] / "static"
    # Named after the package: app.name (and so app.logger) stays "kb.web".
    app = Flask("kb.web", static_folder=str(static_folder), static_url_path="/static", template_folder=None)
    app.json = HTMLSafeJSONProvider(app)
    app.config.update(settings)
    app.config.update(SEND_FILE_MAX_AGE_DEFAULT=STATIC_MAX_AGE, JSON_SORT_KEYS=False, AUDIENCES=("public",),
                      MAX_CONTENT_LENGTH=64 * 1024)
    app.config.update(extra)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(Path(settings["DATA_DIR"]))

    app.jinja_loader = ResourceLoader(template_root())  # type: ignore[assignment]
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters.update(http_url=http_url, host=host_name, iso_date=iso_date, human_date=human_date)
    app.jinja_env.globals.update(static_url=static_url, version=__version__, filter_labels=FILTER_LABELS)

    kb_state = KBState(settings, app.config.pop("SEARCHER", None))
    app.extensions["kb"] = kb_state
    atexit.register(_close_state, weakref.ref(kb_state))

    app.url_map.converters["article_id"] = ArticleIdConverter  # before any view registers a rule using it
    app.register_error_handler(IndexUnavailable, _index_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_security_headers)
    app.teardown_appcontext(_close_store)
    return app


def _close_store(exc: BaseException | None) -> None:
    store = g.pop("kb_store", None)
    if store is not None:
        store.close()


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def is_api_request() -> bool:
    """Whether this request is for the JSON API: errors come as JSON, and Bearer tokens count only here."""
    return request.path == "/api" or request.path.startswith("/api/")


def error_response(status: int, message: str, remedy: str = "", headers: Mapping[str, str] | None = None) -> Response:
    """JSON {"error": {...}} for API paths, else the status template; never a traceback."""
    if is_api_request():
        response = jsonify(error={"status": status, "message": f"{message} {remedy}".strip()})
    else:
        title = HTTP_STATUS_CODES.get(status, "Error")
        try:
            body = render_template([f"{status}.html", "error.html"], status=status, title=title, message=message,
                                   remedy=remedy, q="")
        except Exception:  # a broken template must not turn an error page into a traceback
            log.exception("rendering the %s error page failed", status)
            body = (f"<!doctype html><html lang=\"en\"><title>{status} {escape(title)}</title>"
                    f"<h1>{escape(title)}</h1><p>{escape(message)} {escape(remedy)}</p></html>")
        response = current_app.response_class(body, mimetype="text/html")
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc
    message, remedy = ERROR_TEXT.get(exc.code, (HTTP_STATUS_CODES.get(exc.code, "Error") + ".", ""))
    if isinstance(exc, BadParam) and exc.description:
        message = exc.description  # our own fix-it text; werkzeug's defaults are not shown
    headers = {}
    if exc.code == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return error_response(exc.code, message, remedy, headers)


def _index_unavailable(exc: IndexUnavailable) -> Response:
    log.warning("search index unavailable: %s", exc)
    if isinstance(exc, IndexDamaged):
        return error_response(503, INDEX_DAMAGED_MESSAGE, INDEX_DAMAGED_REMEDY, {"Retry-After": "60"})
    return error_response(503, INDEX_UNAVAILABLE_MESSAGE, INDEX_UNAVAILABLE_REMEDY, {"Retry-After": "60"})


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    message, remedy = ERROR_TEXT[500]
    return error_response(500, message, remedy)

