"""The PostgreSQL test harness against the real server: an unprivileged kb role, a streaming replica, both backends.

These tests check the harness the PostgreSQL backend will stand on: if the kb role could do more than a managed
database allows, or the replica did not stream, the backend's own tests would prove nothing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.pgcluster import PgCluster, PgDatabase, connect, postgres_required

REPO = Path(__file__).resolve().parent.parent
CLUSTER_ENV = ("KB_TEST_DATABASE_URL", "KB_TEST_DATABASE_REPLICA_URLS", "KB_TEST_DATABASE_ADMIN_URL",
               "KB_TEST_PGCLUSTER_DIR", "CI", "KB_REQUIRE_POSTGRES", "PYTEST_ADDOPTS")


def test_kb_role_is_an_ordinary_role_owning_an_empty_database(pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        role = conn.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
                            "rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
        assert role == ("kb", False, False, False, False, False)
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                             "WHERE datname = current_database()").fetchone()[0]
        assert owner == "kb"
        tables = conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        assert tables.fetchone()[0] == 0
        assert [r[0] for r in conn.execute("SELECT extname FROM pg_extension")] == ["plpgsql"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('PG_VERSION')")  # no server-side files, as on managed PostgreSQL


def test_kb_role_creates_trusted_extensions_but_not_others(pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
        conn.execute("CREATE EXTENSION unaccent")
        assert conn.execute("SELECT similarity('psoriasis', 'psorisis') > 0.4").fetchone()[0] is True
        assert conn.execute("SELECT unaccent('Crème dépigmentante')").fetchone()[0] == "Creme depigmentante"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE EXTENSION file_fdw")  # untrusted: reads server files


def test_row_written_on_the_primary_appears_on_the_replica(pg_cluster: PgCluster, pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'VBeam for rosacea')")
    pg_cluster.wait_for_replay()
    with connect(pg_database.replica_urls[0]) as replica:
        assert replica.execute("SELECT body FROM notes WHERE id = 1").fetchone() == ("VBeam for rosacea",)


def test_replica_refuses_writes(pg_cluster: PgCluster, pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY)")
    pg_cluster.wait_for_replay()
    with connect(pg_database.replica_urls[0]) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO notes VALUES (1)")


def test_stopped_replica_fails_fast_and_catches_up_when_started(pg_cluster: PgCluster,
                                                                  pg_database: PgDatabase) -> None:
    with connect(pg_database.url) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY)")
    pg_cluster.stop_replica()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(pg_database.replica_urls[0])
    assert time.monotonic() - started < 2.0
    with connect(pg_database.url) as conn:
        conn.execute("INSERT INTO notes VALUES (7)")  # written while the replica is down: the slot keeps the WAL
    pg_cluster.start_replica()
    pg_cluster.wait_for_replay()
    with connect(pg_database.replica_urls[0]) as replica:
        assert replica.execute("SELECT id FROM notes").fetchall() == [(7,)]


def test_a_replica_left_stopped_is_started_again_for_the_next_test(pg_cluster: PgCluster,
                                                                     pg_database: PgDatabase) -> None:
    pg_cluster.stop_replica()
    pg_cluster.ensure_replica_running()  # what pg_database's teardown does after every test
    with connect(pg_database.replica_urls[0]) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_dropping_a_test_database_closes_connections_left_open(pg_cluster: PgCluster) -> None:
    database = pg_cluster.create_database(f"kb_probe_{uuid.uuid4().hex[:8]}")
    left_open = connect(database.url)
    try:
        pg_cluster.drop_database(database.name)
        with connect(pg_cluster.url) as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
        assert database.name not in names
    finally:
        left_open.close()


def test_backend_gives_each_parameter_its_database(backend) -> None:
    if backend.name == "sqlite":
        assert backend.url is None and backend.replica_urls == ()
        return
    assert backend.name == "postgresql"
    with connect(backend.url) as primary, connect(backend.replica_urls[0]) as replica:
        name = primary.execute("SELECT current_database()").fetchone()[0]
        assert name.startswith("kb_test_")
        assert replica.execute("SELECT current_database(), pg_is_in_recovery()").fetchone() == (name, True)


def _pytest_without_postgres(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the backend test in a fresh pytest where no PostgreSQL binaries can be found."""
    environ = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    empty = tmp_path / "no-postgres"
    empty.mkdir()
    environ.update(KB_PG_BINDIR=str(empty), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rs",
         "tests/test_pgcluster.py::test_backend_gives_each_parameter_its_database"],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=120, check=False)


def test_without_postgres_only_the_postgresql_parameter_skips_with_its_reason(tmp_path: Path) -> None:
    done = _pytest_without_postgres(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[sqlite] PASSED" in done.stdout
    assert "[postgresql] SKIPPED" in done.stdout
    assert "PostgreSQL not available: no PostgreSQL server binaries" in done.stdout
    assert "1 passed, 1 skipped" in done.stdout


def test_without_postgres_ci_fails_instead_of_skipping(tmp_path: Path) -> None:
    done = _pytest_without_postgres(tmp_path, KB_REQUIRE_POSTGRES="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[sqlite] PASSED" in done.stdout
    assert "[postgresql] ERROR" in done.stdout
    assert "PostgreSQL not available: no PostgreSQL server binaries" in done.stdout
    assert "SKIPPED" not in done.stdout


@pytest.mark.parametrize(("environ", "required"), [
    ({}, False), ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "false"}, False), ({"CI": ""}, False),
    ({"KB_REQUIRE_POSTGRES": "1"}, True), ({"KB_REQUIRE_POSTGRES": "0"}, False),
])
def test_ci_or_kb_require_postgres_makes_postgres_required(environ: dict[str, str], required: bool) -> None:
    assert postgres_required(environ) is required


def _postmaster_pids(base: Path) -> list[int]:
    return [int((base / d / "postmaster.pid").read_text().split("\n", 1)[0]) for d in ("primary", "replica")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it yet


@pytest.mark.slow
def test_command_line_exports_a_working_cluster_and_stop_kills_it_even_without_pg_ctl(pg_cluster: PgCluster) -> None:
    """What .ci/run does: start prints exports; stop must leave no server behind even when pg_ctl cannot run."""
    base = Path(tempfile.gettempdir()) / f"kb-pg-cli-{uuid.uuid4().hex[:8]}"
    cli = [sys.executable, "-m", "tests.pgcluster"]
    try:
        done = subprocess.run([*cli, "start", "--dir", str(base)], cwd=REPO, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
        exports = {k: shlex.split(v)[0] for k, v in exports.items()}
        assert exports["KB_TEST_PGCLUSTER_DIR"] == str(base)
        with connect(exports["KB_TEST_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == ("kb", "kb")
        with connect(exports["KB_TEST_DATABASE_REPLICA_URLS"].split(",")[0]) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        pids = _postmaster_pids(base)
        state = (base / "cluster.json").read_text()
        (base / "cluster.json").write_text(state.replace('"bindir": "', '"bindir": "/nonexistent'))
        done = subprocess.run([*cli, "stop", "--dir", str(base)], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "killing its postmaster" in done.stderr
        assert not base.exists()
        assert not any(_alive(pid) for pid in pids)
    finally:
        if base.exists():
            subprocess.run([*cli, "stop", "--dir", str(base)], cwd=REPO, timeout=120, check=False)
