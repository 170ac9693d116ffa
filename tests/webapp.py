"""Fixtures and helpers for the web tests (tests/test_web.py, test_api.py, ...): apps over the test data
directory, a real app over a real index, and small request helpers. Registered in conftest's pytest_plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from kb import index
from kb.config import data_paths
from kb.models import Article, Section
from kb.web import create_app

SCRIPT_TITLE = 'Acne <script>alert("t")</script> & rosacea'


@pytest.fixture
def make_app(data_dir: Path):
    """Build apps on the test data dir; closes their searchers afterwards."""
    apps = []

    def make(searcher: Any = None, **config: Any):
        test_config = {"DATA_DIR": str(data_dir), "TESTING": True, **config}
        if searcher is not None:
            test_config["SEARCHER"] = searcher
        app = create_app(test_config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["kb"].close()


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


@pytest.fixture
def real_app(make_app, store, data_dir):
    store.save_article(article(1, title=SCRIPT_TITLE, url="https://derm.example.org/acne",
                               text="Acne vulgaris is treated with topical retinoids.",
                               sections=[Section("Treatment", "treatment", "Topical retinoids and benzoyl peroxide.")],
                               categories=["Acne"], tags=["retinoids"]))
    store.save_article(article(2, title="Rosacea basics", url="javascript:alert(1)",
                               text="Rosacea causes facial redness; retinoids are not first line.",
                               sections=[], categories=["Rosacea"], tags=["redness"]))
    for n in range(3, 26):
        store.save_article(article(n, title=f"Retinoids note {n}", text=f"Retinoids article number {n}.",
                                   sections=[], categories=["Acne"], tags=[f"t{n % 3}"]))
    store.save_article(article(99, title="Staff retinoids protocol", text="Retinoids dosing for staff.",
                               sections=[], audience="staff"))
    assert index.rebuild(store, data_paths(data_dir)["index"]) == 26
    return make_app()
