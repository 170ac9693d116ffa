"""Templates, static files and the demo site ship inside the wheel, not only in the source tree."""

import subprocess
import sys
import tomllib
import zipfile
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_every_code_package_is_listed_for_the_wheel() -> None:
    """pyproject lists packages by name (templates map from the top level): a new package must be added there."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kb").rglob("__init__.py")}
    assert found - listed == set()


def test_templates_found_through_package_resources() -> None:
    names = {p.name for p in resources.files("kb.templates").iterdir()}
    assert {"base.html", "search.html", "article.html"} <= names


@pytest.mark.slow
def test_wheel_contains_templates_static_and_demo_site(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    # a newcomer's first `make demo` must not scroll thousands of setuptools warnings past (packages
    # configuration, deprecated license table): the build is silent
    assert build.stdout + build.stderr == ""
    [wheel] = tmp_path.glob("kb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kb/templates/base.html" in names
    assert "kb/templates/search.html" in names
    assert any(n.startswith("kb/static/") and n.endswith(".css") for n in names)
    assert any(n.startswith("kb/demo_site/") for n in names)
    assert "kb/data/vocabulary.toml" in names
    assert {"kb/web/app.py", "kb/search/searcher.py", "kb/store/sqlite.py"} <= set(names)
