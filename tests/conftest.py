"""Fixtures that build the whole world: settings in tmp_path, a store, the app, a CLI runner.

Fixture modules owned by one area register themselves in `pytest_plugins`.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest_plugins: list[str] = ["tests.fixture_site", "tests.browser"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory (store, index, sources.toml) for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(data_dir: Path) -> dict:
    """Effective settings pointing at `data_dir`, fast crawl delay, no environment leaking in."""
    from kb import config

    return config.load({"DATA_DIR": str(data_dir), "CRAWL_DELAY": 0.0, "TIMEOUT": 5.0}, environ={})


@pytest.fixture
def store(data_dir: Path):
    from kb.config import data_paths
    from kb.store import Store

    with Store(data_paths(data_dir)["store"]) as s:
        yield s


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (for servers started as real processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
