"""A throwaway PostgreSQL primary + streaming replica on 127.0.0.1, for kb's tests and CI.

Two ways in:

- pytest plugin (listed in tests/conftest.py's `pytest_plugins`): the session fixture `pg_cluster` attaches to
  the cluster named by `KB_TEST_DATABASE_URL` & co. (exported by `.ci/run`), or else starts its own for the
  session and stops it at the end. When PostgreSQL is missing or will not start, every test that needs it skips
  with "PostgreSQL not available: <reason>"; with `CI` true or `KB_REQUIRE_POSTGRES=1` those tests fail instead,
  so a CI run can never pass with the PostgreSQL half silently skipped.
- `python -m tests.pgcluster start --dir DIR` starts a cluster in DIR and prints shell `export` lines;
  `python -m tests.pgcluster stop --dir DIR` stops it and removes DIR (what `.ci/run` traps on exit).

The cluster is Debian's real server (binaries from `KB_PG_BINDIR`, else `pg_config --bindir`, else the newest
/usr/lib/postgresql/*/bin), run as the `postgres` user when we are root (PostgreSQL refuses root), in a directory
under /tmp that it owns (pytest's tmp_path lives under a 0700 root directory the server could not enter). It
listens on 127.0.0.1 only (no Unix sockets), on free ports, with scram-sha-256 passwords for every role, and
`fsync=off` (a throwaway cluster needs no durability). The replica is `pg_basebackup -R` through a physical
replication slot, so it catches up after being stopped. Roles: `postgres` (superuser, used only by the harness
to create and drop databases), `kb_replicator` (replication only) and `kb`: a plain LOGIN role, no superuser,
no CREATEDB, no server-side files, as on managed PostgreSQL; it owns the databases `kb` and `kb_template` and
every per-test database, so it may create trusted extensions such as pg_trgm and unaccent there.
For replica tests, `pg_cluster.stop_replica()` / `start_replica()` stop and restart the replica server, and
`pg_cluster.wait_for_replay()` waits until it has replayed the primary's current WAL position; a replica a test
leaves stopped is restarted when its `pg_database` is dropped.

Per-test databases (`pg_database`), measured here (PostgreSQL 15, 2 shared cores) per test, from CREATE to the
replica serving the new database, plus the DROP:
  CREATE DATABASE ... TEMPLATE kb_template (WAL_LOG, the default) + DROP ... WITH (FORCE):
      ~0.12 s wall when the machine is quiet, ~0.11 s CPU across all server processes; 0.13-0.4 s wall while
      other suites load both cores. `wal_compression = lz4` matters: the copy is WAL-logged page by page
      (7 MB of catalogs); under the same load, uncompressed WAL took ~0.4 s and pglz ~0.7 s.
  the same with STRATEGY FILE_COPY (two checkpoints): ~0.15 s wall, ~0.14 s CPU
  CREATE SCHEMA + DROP SCHEMA CASCADE in the shared `kb` database: ~0.04 s
A schema is cheaper but isolates less: extensions (pg_trgm, unaccent), database-level settings and whatever the
backend's migrations create per database would be shared between tests. A fresh database stays under the
0.3 s budget, so each test gets one (copied from kb_template, owned by kb), and the harness keeps its own admin
connections open for the session so a test pays for no extra logins. Cluster start-up (initdb, basebackup) is
3-9 s once per session, stop ~0.5 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

URL_ENV = "KB_TEST_DATABASE_URL"
REPLICA_URLS_ENV = "KB_TEST_DATABASE_REPLICA_URLS"
ADMIN_URL_ENV = "KB_TEST_DATABASE_ADMIN_URL"
DIR_ENV = "KB_TEST_PGCLUSTER_DIR"
BINDIR_ENV = "KB_PG_BINDIR"
REQUIRE_ENV = "KB_REQUIRE_POSTGRES"

OS_USER = "postgres"
KB_ROLE = "kb"
REPLICATION_ROLE = "kb_replicator"
SLOT = "kb_replica"
TEMPLATE_DB = "kb_template"
TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
STATE_FILE = "cluster.json"
START_TIMEOUT = 60  # seconds pg_ctl may wait for a server to start or stop
CONNECT_TIMEOUT = 5  # seconds; connections go to 127.0.0.1, so anything slower is a dead server

SERVER_CONF = """
# kb test cluster: throwaway, 127.0.0.1 only, fast
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
hot_standby = on
fsync = off
full_page_writes = off
wal_compression = lz4
wal_buffers = 16MB
shared_buffers = 64MB
max_connections = 60
wal_retrieve_retry_interval = 200ms
"""

PG_HBA = f"""# kb test cluster: TCP from 127.0.0.1 only, passwords always
host all all 127.0.0.1/32 scram-sha-256
host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be used here (binaries missing, server failed to start); the message says why."""


# -- finding and running the server's programs ---------------------------------------------------------------

def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort /usr/lib/postgresql/<version>/bin by version number, not as text (9.6 < 15)."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _bindir_candidates(environ: Mapping[str, str]) -> list[Path]:
    """Where the server binaries may be: the override alone when set, else pg_config's answer and Debian's dirs."""
    if environ.get(BINDIR_ENV):
        return [Path(environ[BINDIR_ENV])]
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0 and done.stdout.strip():
            found.append(Path(done.stdout.strip()))
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    return found


def find_bindir(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory with initdb, pg_ctl, pg_basebackup and postgres (libpq-dev's pg_config may lack them)."""
    candidates = _bindir_candidates(environ)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in TOOLS):
            return bindir
    where = ", ".join(str(c) for c in candidates) or "pg_config --bindir, /usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries ({', '.join(TOOLS)}) in {where}; "
        "install Debian's server with `apt-get install postgresql`")


def _as_owner(cmd: list[str]) -> list[str]:
    """Run `cmd` as the postgres user when we are root (the server refuses root), else as ourselves."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--", *cmd]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _chown_to_owner(path: Path) -> None:
    """Give `path` to the postgres user when we are root, so the server can write there."""
    if os.geteuid() == 0:
        shutil.chown(path, OS_USER, OS_USER)


def _check_owner() -> None:
    """As root we need the postgres user to run the server; say so plainly when it is missing."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no '{OS_USER}' user to run the server as "
            "(Debian's postgresql package creates it)") from None


def _check_reachable(base: Path) -> None:
    """As root, the postgres user must be able to enter every parent of the cluster directory (not so /root)."""
    if os.geteuid() != 0:
        return
    owner = pwd.getpwnam(OS_USER)
    groups = set(os.getgrouplist(OS_USER, owner.pw_gid))
    for parent in base.parents:
        info = parent.stat()
        if not (info.st_mode & stat.S_IXOTH or (info.st_uid == owner.pw_uid and info.st_mode & stat.S_IXUSR)
                or (info.st_gid in groups and info.st_mode & stat.S_IXGRP)):
            raise PostgresUnavailable(f"the {OS_USER} user cannot enter {parent} (mode {info.st_mode & 0o777:o}), "
                                      "so the server cannot run below it; use a directory under /tmp")


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of a server log, to put the server's own reason into our error."""
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _psycopg() -> Any:
    """psycopg, imported only when PostgreSQL is used, so a machine without it still runs the SQLite tests."""
    try:
        import psycopg
    except ImportError as exc:
        raise PostgresUnavailable(f"psycopg is not installed ({exc}); run `pip install -e '.[test]'`") from None
    return psycopg


def connect(url: str, **kwargs: Any) -> "psycopg.Connection":
    """An autocommit connection that gives up quickly: every server here is on 127.0.0.1."""
    return _psycopg().connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **kwargs)


def url_for(host_port: tuple[str, int], user: str, password: str, dbname: str) -> str:
    """A postgresql:// URL (passwords are token_urlsafe, so they need no quoting)."""
    return f"postgresql://{user}:{password}@{host_port[0]}:{host_port[1]}/{dbname}"


def with_dbname(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return urlsplit(url)._replace(path="/" + dbname).geturl()


# -- the processes: one primary and one streaming replica in a directory --------------------------------------

@dataclass
class LocalCluster:
    """A primary and a streaming replica started by us, with their state in `base` (cluster.json)."""

    base: Path
    bindir: Path
    primary_port: int = 0
    replica_port: int = 0
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    kb_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    replication_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def primary_dir(self) -> Path:
        return self.base / "primary"

    @property
    def replica_dir(self) -> Path:
        return self.base / "replica"

    @property
    def url(self) -> str:
        return url_for(("127.0.0.1", self.primary_port), KB_ROLE, self.kb_password, KB_ROLE)

    @property
    def replica_urls(self) -> list[str]:
        return [url_for(("127.0.0.1", self.replica_port), KB_ROLE, self.kb_password, KB_ROLE)]

    @property
    def admin_url(self) -> str:
        return url_for(("127.0.0.1", self.primary_port), "postgres", self.admin_password, "postgres")

    def exports(self) -> dict[str, str]:
        """The environment `pg_cluster` attaches to (what `.ci/run` exports)."""
        return {URL_ENV: self.url, REPLICA_URLS_ENV: ",".join(self.replica_urls),
                ADMIN_URL_ENV: self.admin_url, DIR_ENV: str(self.base)}

    # state on disk, so `stop --dir` and the fixtures of another process can find the servers

    def save(self) -> None:
        """Write cluster.json (passwords included) readable by us only."""
        state = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        path = self.base / STATE_FILE
        path.write_text(json.dumps(state, indent=2), "utf-8")
        path.chmod(0o600)

    @classmethod
    def load(cls, base: Path) -> "LocalCluster":
        """The cluster whose state `save` wrote into `base`."""
        state = json.loads((base / STATE_FILE).read_text("utf-8"))
        state["base"], state["bindir"] = Path(state["base"]), Path(state["bindir"])
        return cls(**state)

    # running the programs

    def _run(self, cmd: list[str], timeout: float = START_TIMEOUT + 10, env: dict[str, str] | None = None) -> None:
        """Run a server program as its owner, in `base`; a failure raises with its output."""
        tool = self.bindir / cmd[0]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOST, PGSSLMODE... leaking in
        done = subprocess.run(_as_owner([str(tool), *cmd[1:]]), cwd=self.base, capture_output=True, text=True,
                              timeout=timeout, check=False, env={**clean, **(env or {})})
        if done.returncode != 0:
            raise PostgresUnavailable(f"{cmd[0]} failed (exit {done.returncode}): "
                                      f"{(done.stderr or done.stdout).strip()[-2000:]}")

    def _pg_ctl(self, datadir: Path, *args: str) -> None:
        self._run(["pg_ctl", "-D", str(datadir), "-t", str(START_TIMEOUT), *args])

    def _start_server(self, datadir: Path, port: int) -> None:
        """Start one server with pg_ctl -w; the log's tail goes into the error when it does not come up."""
        logfile = self.base / f"{datadir.name}.log"
        try:
            self._pg_ctl(datadir, "-w", "-l", str(logfile), "-o", f"-p {port}", "start")
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(f"{exc}\n{datadir.name} log:\n{_tail(logfile)}") from None

    def _start_on_free_port(self, datadir: Path) -> int:
        """Start a server on a free port, trying another when someone took ours in between."""
        for attempt in range(3):
            port = _free_port()
            try:
                self._start_server(datadir, port)
                return port
            except PostgresUnavailable as exc:
                if attempt == 2 or "could not bind" not in str(exc):
                    raise
                log.warning("port %s was taken before %s bound it; trying another", port, datadir.name)
        raise AssertionError("unreachable")

    def running(self, datadir: Path) -> bool:
        """True while the postmaster of `datadir` is alive (read from postmaster.pid and /proc: no subprocess)."""
        return _postmaster_pid(datadir) is not None

    # life cycle

    @classmethod
    def start(cls, base: Path | None = None, environ: Mapping[str, str] = os.environ) -> "LocalCluster":
        """initdb, start the primary, create the roles and databases, clone and start the replica."""
        bindir = find_bindir(environ)
        _check_owner()
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="kb-pg-"))
        base = base.resolve()
        base.mkdir(parents=True, exist_ok=True)
        _check_reachable(base)
        if (base / STATE_FILE).exists():
            raise PostgresUnavailable(f"{base} already holds a cluster; stop it first (python -m tests.pgcluster "
                                      f"stop --dir {base})")
        base.chmod(0o700)
        _chown_to_owner(base)
        cluster = cls(base=base, bindir=bindir)
        started = time.monotonic()
        try:
            cluster.save()
            cluster._init_primary()
            cluster.primary_port = cluster._start_on_free_port(cluster.primary_dir)
            cluster.save()
            cluster._create_roles()
            cluster._clone_replica()
            cluster.replica_port = cluster._start_on_free_port(cluster.replica_dir)
            cluster.save()
        except PostgresUnavailable:
            cluster.stop()
            raise
        except Exception as exc:  # psycopg errors, timeouts, OS errors: all mean "could not start"
            cluster.stop()
            raise PostgresUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            cluster.stop()
            raise
        log.info("PostgreSQL primary :%s + replica :%s up in %.1f s (%s)", cluster.primary_port,
                 cluster.replica_port, time.monotonic() - started, base)
        return cluster

    def _init_primary(self) -> None:
        """initdb with a superuser password, then our server settings and pg_hba."""
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.admin_password + "\n", "utf-8")
        pwfile.chmod(0o600)
        _chown_to_owner(pwfile)
        try:
            self._run(["initdb", "-D", str(self.primary_dir), "-U", "postgres", f"--pwfile={pwfile}",
                       "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
                      timeout=180)
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.primary_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(SERVER_CONF)
        (self.primary_dir / "pg_hba.conf").write_text(PG_HBA, "utf-8")

    def _create_roles(self) -> None:
        """The kb role (no superuser, no CREATEDB), its databases, and the replication role."""
        from psycopg import sql

        with connect(self.admin_url) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(KB_ROLE), sql.Literal(self.kb_password)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(REPLICATION_ROLE), sql.Literal(self.replication_password)))
            for dbname in (KB_ROLE, TEMPLATE_DB):
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(KB_ROLE)))

    def _clone_replica(self) -> None:
        """pg_basebackup -R through a new physical slot: standby.signal and primary_conninfo are written for us."""
        self._run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", REPLICATION_ROLE,
                   "-D", str(self.replica_dir), "-R", "-X", "stream", "-C", "-S", SLOT, "--checkpoint=fast",
                   "--no-password", "--no-sync"], timeout=180, env={"PGPASSWORD": self.replication_password})

    def stop_replica(self) -> None:
        """Stop the replica (fast shutdown); the slot keeps the primary's WAL for when it comes back."""
        self._pg_ctl(self.replica_dir, "-w", "-m", "fast", "stop")

    def start_replica(self) -> None:
        """Start the replica again on its port; it reconnects through the slot and catches up."""
        self._start_server(self.replica_dir, self.replica_port)

    def stop(self) -> None:
        """Stop both servers (fast, then by signal if pg_ctl fails) and remove the directory."""
        started = time.monotonic()
        for datadir in (self.replica_dir, self.primary_dir):
            if (datadir / "postmaster.pid").exists():
                try:
                    self._pg_ctl(datadir, "-w", "-m", "fast", "stop")
                except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("pg_ctl stop failed for %s (%s); killing its postmaster", datadir, exc)
                    _kill_postmaster(datadir)
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            log.warning("could not remove %s", self.base)
        log.info("PostgreSQL test cluster stopped and removed in %.1f s (%s)", time.monotonic() - started, self.base)


def _postmaster_pid(datadir: Path) -> int | None:
    """The pid in postmaster.pid, when that process is still the postmaster of `datadir` (not a reused pid)."""
    try:
        pid = int((datadir / "postmaster.pid").read_text("utf-8").split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(datadir).encode() in cmdline else None


def _kill_postmaster(datadir: Path, wait: float = 10.0) -> None:
    """SIGQUIT (immediate shutdown, children too), then SIGKILL: a stray test server must not outlive us."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        pid = _postmaster_pid(datadir)
        if pid is None:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _postmaster_pid(datadir) == pid:
            time.sleep(0.05)


# -- what the tests see ---------------------------------------------------------------------------------------

@dataclass
class PgCluster:
    """Where the test cluster is and what tests may do with it (the `pg_cluster` fixture)."""

    url: str  # the kb role on the primary, database kb
    replica_urls: list[str]  # the kb role on each replica, database kb
    admin_url: str  # the superuser on the primary: creates and drops the per-test databases
    local: LocalCluster | None = None  # the processes, when we can stop and start them
    _conns: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "PgCluster":
        """Attach to the cluster `python -m tests.pgcluster start` exported (as .ci/run does)."""
        admin = environ.get(ADMIN_URL_ENV, "")
        if not admin:
            raise PostgresUnavailable(f"{URL_ENV} is set but {ADMIN_URL_ENV} is not; both come from "
                                      "`python -m tests.pgcluster start`")
        replicas = [u for u in environ.get(REPLICA_URLS_ENV, "").split(",") if u]
        local = LocalCluster.load(Path(environ[DIR_ENV])) if environ.get(DIR_ENV) else None
        return cls(environ[URL_ENV], replicas, admin, local)

    @classmethod
    def of(cls, local: LocalCluster) -> "PgCluster":
        return cls(local.url, local.replica_urls, local.admin_url, local)

    @property
    def replica_admin_urls(self) -> list[str]:
        """The superuser on each replica (database postgres, which always exists there)."""
        admin = urlsplit(self.admin_url)
        return [admin._replace(netloc=f"{admin.username}:{admin.password}@{urlsplit(u).netloc.rsplit('@', 1)[-1]}")
                .geturl() for u in self.replica_urls]

    def check(self) -> None:
        """Connect once to every server, so a dead cluster is reported before any test uses it."""
        for url in (self.admin_url, self.url, *self.replica_urls):
            try:
                with connect(url) as conn:
                    conn.execute("SELECT 1")
            except _psycopg().Error as exc:
                raise PostgresUnavailable(f"cannot connect to {_redact(url)}: {exc}") from None

    def _query(self, url: str, query: Any, params: tuple = ()) -> Any:
        """One row from a session-long admin connection (reconnecting once when a server restart broke it)."""
        psycopg = _psycopg()
        while True:
            conn = self._conns.get(url)
            fresh = conn is None or conn.closed
            try:
                if fresh:
                    conn = self._conns[url] = connect(url)
                cur = conn.execute(query, params)
                return cur.fetchone() if cur.description else None
            except psycopg.OperationalError:
                stale = self._conns.pop(url, None)
                if stale is not None:
                    stale.close()
                if fresh:
                    raise

    def close(self) -> None:
        """Close the harness's own connections (before the servers stop)."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def _control(self) -> LocalCluster:
        if self.local is None:
            raise RuntimeError(f"the replica can be stopped only when {DIR_ENV} names the cluster directory")
        return self.local

    def stop_replica(self) -> None:
        """Stop the replica server (for "replica fails mid-load" tests); connections to it then fail at once."""
        self._control().stop_replica()

    def start_replica(self) -> None:
        """Start the replica again; call `wait_for_replay` before reading what was written meanwhile."""
        self._control().start_replica()

    def ensure_replica_running(self) -> None:
        """Restart a replica a test left stopped, so the next test finds the cluster whole."""
        if self.local is not None and not self.local.running(self.local.replica_dir):
            log.warning("a test left the replica stopped; starting it again")
            self.local.start_replica()

    def wait_for_replay(self, timeout: float = 10.0) -> None:
        """Block until every replica has replayed the primary's current WAL position."""
        target = self._query(self.admin_url, "SELECT pg_current_wal_lsn()")[0]
        deadline = time.monotonic() + timeout
        for url in self.replica_admin_urls:
            while not self._query(url, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {_redact(url)} did not replay {target} in {timeout} s")
                time.sleep(0.005)

    def create_database(self, name: str) -> "PgDatabase":
        """A new empty database owned by kb, copied from kb_template, readable on the replicas when we return."""
        from psycopg import sql

        self._query(self.admin_url, sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE_DB), sql.Identifier(KB_ROLE)))
        self.wait_for_replay()
        return PgDatabase(name, with_dbname(self.url, name), [with_dbname(u, name) for u in self.replica_urls])

    def drop_database(self, name: str) -> None:
        """Drop a per-test database, closing whatever connections a test left open."""
        from psycopg import sql

        self._query(self.admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class PgDatabase:
    """One test's database: its URL on the primary and on each replica (role kb, which owns it)."""

    name: str
    url: str
    replica_urls: list[str]


def _redact(url: str) -> str:
    """A URL fit for an error message: the password replaced."""
    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")).geturl()
    return url


def postgres_required(environ: Mapping[str, str]) -> bool:
    """CI (CI=true/1/yes) or KB_REQUIRE_POSTGRES=1: a missing PostgreSQL is a failure, not a skip."""
    truthy = ("1", "true", "yes", "on")
    return environ.get("CI", "").strip().lower() in truthy or environ.get(REQUIRE_ENV, "").strip() in truthy


# -- the pytest plugin ----------------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: needs the PostgreSQL test cluster (pg_cluster fixture)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the cluster, so `-m postgresql` / `-m "not postgresql"` select them."""
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The test cluster for the whole session: the one .ci/run exported, else one started (and stopped) here."""
    local: LocalCluster | None = None
    try:
        if os.environ.get(URL_ENV):
            cluster = PgCluster.from_env(os.environ)
        else:
            local = LocalCluster.start()
            cluster = PgCluster.of(local)
        cluster.check()
    except (PostgresUnavailable, OSError, ValueError, subprocess.SubprocessError) as exc:
        if local is not None:
            local.stop()
        reason = f"PostgreSQL not available: {exc}"
        if postgres_required(os.environ):
            pytest.fail(f"{reason}\n(CI or {REQUIRE_ENV}=1: PostgreSQL tests must run, not skip)", pytrace=False)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        cluster.close()
        if local is not None:
            local.stop()


_database_numbers = count(1)


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """A fresh, empty database owned by kb for one test (on the primary and the replicas), dropped afterwards."""
    name = f"kb_test_{os.getpid()}_{next(_database_numbers)}"
    database = pg_cluster.create_database(name)
    try:
        yield database
    finally:
        pg_cluster.ensure_replica_running()
        pg_cluster.drop_database(name)


# -- the command line: python -m tests.pgcluster start|stop --dir DIR ----------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Start a cluster and print `export` lines for the shell, or stop one and remove its directory."""
    parser = argparse.ArgumentParser(prog="python -m tests.pgcluster", description=main.__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's directory (created by start, "
                        "removed by stop); must be enterable by the postgres user, e.g. under /tmp")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pgcluster: %(message)s", stream=sys.stderr)
    base = args.dir.resolve()
    try:
        if args.action == "start":
            cluster = LocalCluster.start(base)
            for name, value in cluster.exports().items():
                print(f"export {name}={shlex.quote(value)}")
        elif (base / STATE_FILE).exists():
            LocalCluster.load(base).stop()
        else:
            shutil.rmtree(base, ignore_errors=True)  # start failed early (and cleaned up) or never ran
    except PostgresUnavailable as exc:
        print(f"pgcluster: PostgreSQL not available: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
