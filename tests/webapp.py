"""Fixtures and helpers for the web tests (tests/test_web.py, test_api.py, ...): apps over the test data
directory, a real app over a real index, and small request helpers. Registered in conftest's pytest_plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from kb import index
from kb.models import Article, Section
from kb.web import create_app

SCRIPT_TITLE = 'Acne <script>alert("t")</script> & rosacea'


@pytest.fixture
def make_app(data_dir: Path):
    """Build apps on the test data dir; closes their searchers afterwards (`make_app.close()` does it sooner)."""
    apps = []

    def make(searcher: Any = None, **config: Any):
        test_config = {"DATA_DIR": str(data_dir), "TESTING": True, **config}
        if searcher is not None:
            test_config["SEARCHER"] = searcher
        app = create_app(test_config)
        apps.append(app)
        return app

    def close() -> None:
        while apps:
            apps.pop().extensions["kb"].close()

    make.close = close  # type: ignore[attr-defined]
    yield make
    close()


@pytest.fixture
def app_store(make_app, each_data_backend):
    """The store that apps from `make_app` read, on both backends: the SQLite file in `data_dir`, or the test's
    PostgreSQL database, which kb.toml in `data_dir` names as an operator's DATABASE_URL would. A test taking
    it runs as [sqlite] and [postgresql]; its apps are closed before the database goes."""
    try:
        with each_data_backend.open_store() as store:
            yield store
    finally:
        make_app.close()


class Site:
    """A data directory on one backend, its store open, and apps over it that the test's end closes."""

    def __init__(self, root: Path, store: Any) -> None:
        self.root, self.store = root, store
        self.apps: list[Any] = []

    def app(self, searcher: Any = None, **config: Any):
        test_config = {"DATA_DIR": str(self.root), "TESTING": True, **config}
        if searcher is not None:
            test_config["SEARCHER"] = searcher
        app = create_app(test_config)
        self.apps.append(app)
        return app

    def close_apps(self) -> None:
        while self.apps:
            self.apps.pop().extensions["kb"].close()


@pytest.fixture(scope="module")
def shared_site(module_backend, tmp_path_factory):
    """One site per module and backend for tests that read back only what they wrote (an article by its id):
    they need no fresh database each, which on PostgreSQL costs ~1 s a test."""
    backend = module_backend.data_dir(tmp_path_factory.mktemp("shared-site") / "data")
    with backend.open_store() as store:
        yield Site(backend.dir, store)


@pytest.fixture
def web_site(shared_site):
    """`shared_site` for one test, on both backends ([sqlite], [postgresql]); its apps are closed at the end."""
    try:
        yield shared_site
    finally:
        shared_site.close_apps()


def get(app, url: str, **kwargs: Any):
    """GET and close the response (static files hold an open file until closed)."""
    with app.test_client() as client:
        response = client.get(url, **kwargs)
        response.get_data()  # buffer the body, then release the file behind static responses
        response.close()
        return response


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.get_data(as_text=True), "lxml")


def article(n: int = 1, **changes: Any) -> Article:
    values: dict[str, Any] = dict(
        url=f"https://derm.example.org/conditions/article-{n}", title=f"Article {n}",
        text=f"Lead paragraph {n}.\n\nCauses\nHormones matter.\n\nTreatment\nRetinoids help.",
        sections=[Section("Causes", "causes", "Hormones matter."),
                  Section("Treatment", "treatment", "Retinoids help.")],
        site="derm.example.org", published="2023-05-01", modified="2024-01-15T08:00:00Z",
        categories=["Acne"], tags=["retinoids"],
    )
    values.update(changes)
    return Article(**values)


@pytest.fixture(scope="module")
def real_app(module_backend, tmp_path_factory):
    """An app over a real store and index on each backend, built once per module: 25 public articles (one with
    markup in its title, one with a javascript: URL) and a staff one."""
    site = module_backend.data_dir(tmp_path_factory.mktemp("real-app") / "data")
    with site.open_store() as store:
        store.save_article(article(1, title=SCRIPT_TITLE, url="https://derm.example.org/acne",
                                   text="Acne vulgaris is treated with topical retinoids.",
                                   sections=[Section("Treatment", "treatment",
                                                     "Topical retinoids and benzoyl peroxide.")],
                                   categories=["Acne"], tags=["retinoids"]))
        store.save_article(article(2, title="Rosacea basics", url="javascript:alert(1)",
                                   text="Rosacea causes facial redness; retinoids are not first line.",
                                   sections=[], categories=["Rosacea"], tags=["redness"]))
        for n in range(3, 26):
            store.save_article(article(n, title=f"Retinoids note {n}", text=f"Retinoids article number {n}.",
                                       sections=[], categories=["Acne"], tags=[f"t{n % 3}"]))
        store.save_article(article(99, title="Staff retinoids protocol", text="Retinoids dosing for staff.",
                                   sections=[], audience="staff"))
        assert index.rebuild(store, site.paths["index"]) == 26
    app = create_app({"DATA_DIR": str(site.dir), "TESTING": True})
    yield app
    app.extensions["kb"].close()
