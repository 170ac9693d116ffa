"""Fixtures that build the whole world: settings in tmp_path, a store, the app, a CLI runner.

Fixture modules owned by one area register themselves in `pytest_plugins`.

Database backends: a test that takes the `backend` fixture runs twice, as `[sqlite]` and `[postgresql]`.
`backend.name` says which; `backend.url` is None for SQLite (use `data_dir`/`store` as today) and, for
PostgreSQL, the URL of a fresh empty database owned by the unprivileged `kb` role on the primary, with
`backend.replica_urls` the same database on the streaming replica (tests/pgcluster.py: `pg_cluster`,
`pg_database`). `any_store` is the store of `backend` (a SQLite file in `data_dir`, or a `PostgresStore` on the
test's database with its replica): suites that test the Store contract take `any_store` instead of `store`, so
they run on both backends; `store` stays SQLite for the many suites that need a file (measured: parametrising
`store` itself would add a PostgreSQL run to ~300 tests that test no store behaviour). Only the `[postgresql]`
parameter needs the cluster: without PostgreSQL it skips with "PostgreSQL not available: <reason>", and with
`CI` or `KB_REQUIRE_POSTGRES=1` it fails instead. `-m "not postgresql"` deselects it. Modules that build a world
once (a store, an index, an app) take the module-scoped `module_backend` instead: one database per world.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

pytest_plugins: list[str] = ["tests.fixture_site", "tests.browser", "tests.pgcluster", "tests.webapp"]


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
    from kb.store import open_store

    with open_store(data_paths(data_dir)["store"]) as s:
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


@dataclass(frozen=True)
class Backend:
    """Which storage backend a `backend`-parametrised test runs on, and where its database is."""

    name: str  # "sqlite" or "postgresql"
    url: str | None = None  # the test's own PostgreSQL database on the primary; None for SQLite
    replica_urls: tuple[str, ...] = ()  # the same database on each streaming replica


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Run a test on both backends; only the postgresql parameter asks for (and may skip on) the cluster."""
    if request.param == "sqlite":
        return Backend("sqlite")
    database = request.getfixturevalue("pg_database")
    return Backend("postgresql", database.url, tuple(database.replica_urls))


@pytest.fixture
def any_store(backend: Backend, data_dir: Path):
    """The Store of `backend`: SQLite in `data_dir`, or PostgreSQL (primary + replica reads); closed afterwards."""
    if backend.url is None:
        from kb.config import data_paths
        from kb.store import open_store

        with open_store(data_paths(data_dir)["store"]) as s:
            yield s
        return
    from kb.store.postgres import PostgresStore
    from kb.store.postgres_pool import close_pools

    try:
        with PostgresStore(backend.url, backend.replica_urls) as s:
            yield s
    finally:
        close_pools()  # before pg_database drops the database under the pools' connections


@dataclass
class SearchBackend:
    """A search backend for one test module: "whoosh" (SQLite store + Whoosh index) or "postgresql" (both in a
    database of the test cluster). `open_store`, `reindex(store)` and `searcher()` work the same on both."""

    name: str
    root: Path
    url: str | None = None

    def open_store(self):
        from kb.store import open_store

        return open_store(self.url or self.root / "kb.sqlite3")

    def reindex(self, store) -> None:
        """A full build of the backend's search index from `store`, swapped in for readers."""
        if self.url is None:
            from kb import index

            index.rebuild(store, self.root / "ix", force=True)
        else:
            from kb.search.pg_build import build

            build(store, self.url)

    def searcher(self):
        """A new SearchService over the backend's current index (close it when done)."""
        if self.url is None:
            from kb.search import Searcher

            return Searcher(self.root / "ix")
        from kb.search.pg import PgSearcher

        return PgSearcher(self.url)


@pytest.fixture(scope="module", params=["whoosh", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def search_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Run a module's search tests on the Whoosh backend and on the PostgreSQL one (its own database per module)."""
    root = tmp_path_factory.mktemp(f"search-{request.param}")
    if request.param == "whoosh":
        yield SearchBackend("whoosh", root)
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"kb_search_{os.getpid()}_{next(_search_databases)}"
    database = cluster.create_database(name)
    try:
        yield SearchBackend("postgresql", root, database.url)
    finally:
        from kb.store.postgres_pool import close_pools
        from kb.store.postgres_search import close_search_pool

        close_search_pool(database.url)
        close_pools()
        cluster.ensure_replica_running()
        cluster.drop_database(name)


_search_databases = count(1)


@dataclass
class ModuleBackend:
    """The backend of a module's worlds (data directories built once per module): `data_dir(root)` configures
    a directory for it, on PostgreSQL with a database of its own, dropped when the module is done."""

    name: str  # "sqlite" or "postgresql"
    cluster: Any = None
    databases: list[Any] = field(default_factory=list)

    def data_dir(self, root: Path) -> "DataDirBackend":
        root.mkdir(parents=True, exist_ok=True)
        if self.cluster is None:
            return DataDirBackend(self.name, root)
        database = self.cluster.create_database(f"kb_world_{os.getpid()}_{next(_search_databases)}")
        self.databases.append(database)
        (root / "kb.toml").write_text(f'database_url = "{database.url}"\n', encoding="utf-8")
        return DataDirBackend(self.name, root, database.url)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def module_backend(request: pytest.FixtureRequest) -> Iterator[ModuleBackend]:
    """Run a module's world-building tests on SQLite + Whoosh and on PostgreSQL: one build per module per backend
    (a per-test database would rebuild the world for every test). Close the apps over a world before it ends."""
    if request.param == "sqlite":
        yield ModuleBackend("sqlite")
        return
    backend = ModuleBackend("postgresql", request.getfixturevalue("pg_cluster"))
    try:
        yield backend
    finally:
        from kb.store.postgres_pool import close_pools
        from kb.store.postgres_search import close_search_pool

        for database in backend.databases:
            close_search_pool(database.url)
        close_pools()
        backend.cluster.ensure_replica_running()
        for database in backend.databases:
            backend.cluster.drop_database(database.name)


@dataclass
class DataDirBackend:
    """A data directory configured for one backend: for PostgreSQL its kb.toml names the test's database, so
    the CLI, the app and /healthz all select it exactly as an operator's DATABASE_URL would."""

    name: str  # "sqlite" or "postgresql"
    dir: Path
    url: str | None = None

    @property
    def paths(self) -> dict[str, Path]:
        from kb.config import data_paths

        return data_paths(self.dir)

    def open_store(self):
        from kb import config
        from kb.store import open_from_settings

        return open_from_settings(config.load({"DATA_DIR": str(self.dir)}))


@pytest.fixture
def data_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataDirBackend]:
    """A data directory on SQLite + Whoosh, or (parametrised indirectly with "postgresql") on the test cluster."""
    yield from _data_backend(request, getattr(request, "param", "sqlite"), tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def each_data_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataDirBackend]:
    """`data_backend` on both backends: a test taking it runs as [sqlite] and [postgresql]."""
    yield from _data_backend(request, request.param, tmp_path)


def _data_backend(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> Iterator[DataDirBackend]:
    root = tmp_path / "data"  # the `data_dir` fixture's directory: a test may take both
    root.mkdir(exist_ok=True)
    if name == "sqlite":
        yield DataDirBackend(name, root)
        return
    database = request.getfixturevalue("pg_database")
    (root / "kb.toml").write_text(f'database_url = "{database.url}"\n', encoding="utf-8")
    try:
        yield DataDirBackend(name, root, database.url)
    finally:
        from kb.store.postgres_pool import close_pools
        from kb.store.postgres_search import close_search_pool

        close_search_pool(database.url)
        close_pools()  # before pg_database drops the database under the pools' connections


# -- a data directory's search index on either backend (tests/test_maintenance.py) ----------------------------

@dataclass
class IndexedDataBackend:
    """`each_data_backend` with its live search index: how a test reads and damages it differs per backend (files
    of a Whoosh generation, or tables of a generation in the test's database); what kb does about it must not."""

    data: DataDirBackend

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def dir(self) -> Path:
        return self.data.dir

    @property
    def index_root(self) -> Path:
        """What kb.index and kb.maintenance take as the index; unused (never created) on PostgreSQL."""
        return self.data.paths["index"]

    @property
    def generation_prefix(self) -> str:
        """How `kb check`, `kb stats` and /healthz name a generation: a directory, or a database's generation."""
        return "gen-" if self.data.url is None else "postgresql:"

    def open_store(self):
        return self.data.open_store()

    def results(self, queries: list[str], audiences: tuple[str, ...] = ("public", "staff")) -> list[list[tuple]]:
        """(id, url, title, anchor, score) of every hit of each query, through the backend's own searcher."""
        from kb.search import Searcher
        from kb.search.pg import PgSearcher

        searcher = Searcher(self.index_root) if self.data.url is None else PgSearcher(self.data.url)
        try:
            return [[(h.id, h.url, h.title, h.anchor, round(h.score, 6)) for h in
                     searcher.search(q, audiences=audiences).hits] for q in queries]
        finally:
            searcher.close()

    def damage(self, part: str) -> str:
        """Make `part` ("postings" or "documents") of the live generation unreadable by searches; returns its name.

        Whoosh: cut its files in half. PostgreSQL: drop its table (the public partition for documents), as a
        careless operator or a failed restore would.
        """
        tables = {"postings": "kb_search_posting_g{}", "documents": "kb_article_search_g{}_public"}
        if self.data.url is None:
            from kb.search.check import current_generation

            generation = current_generation(self.index_root)
            for path in generation.rglob({"postings": "*.pst", "documents": "*_stored.col"}[part]):
                os.truncate(path, path.stat().st_size // 2)
            return generation.name
        from psycopg import sql

        from tests.pgcluster import connect

        with connect(self.data.url) as conn:
            gen = conn.execute("SELECT generation FROM kb_search_current").fetchone()[0]
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(tables[part].format(gen))))
        return f"postgresql:{gen}"

    def set_disclaimer_flag(self, store, article_id: int) -> None:
        """Set an article's disclaimer flag behind the store's back, as a schema backfill does (no new hash)."""
        if self.data.url is None:
            store.db.execute("UPDATE articles SET disclaimer = 1 WHERE id = ?", (article_id,))
            return
        from tests.pgcluster import connect

        with connect(self.data.url) as conn:
            conn.execute("UPDATE kb_articles SET disclaimer = 1 WHERE id = %s", (article_id,))


@pytest.fixture
def each_indexed_backend(each_data_backend: DataDirBackend) -> IndexedDataBackend:
    """A data directory and its search index on both backends: a test taking it runs as [sqlite] and [postgresql]."""
    return IndexedDataBackend(each_data_backend)


@pytest.fixture
def indexed_store(each_indexed_backend: IndexedDataBackend):
    """The store of `each_indexed_backend` (SQLite file, or PostgreSQL with its kb.toml), closed afterwards."""
    with each_indexed_backend.open_store() as s:
        yield s
