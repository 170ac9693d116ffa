"""What only the PostgreSQL store has: an unprivileged role, replica reads with fallback, several nodes sharing
sessions, tokens and the rate limit, migrations run once under concurrent opens, and DATABASE_URL routing.

The Store contract itself is tested on both backends through `any_store` (tests/test_store.py and friends).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from kb.models import Article, Section
from kb.store import open_from_settings, open_store
from kb.store.pg_migrations import SCHEMA_VERSION
from kb.store.postgres import PostgresStore
from kb.store.postgres_pool import close_pools, replica_up

PUBLIC = ("public",)


@pytest.fixture
def pg(pg_database):
    """(primary URL, replica URLs) of a fresh database; every pool closed before it is dropped."""
    try:
        yield pg_database.url, tuple(pg_database.replica_urls)
    finally:
        close_pools()


def _article(n: int = 1) -> Article:
    return Article(url=f"https://clinic.example/p{n}/", title=f"Page {n}", text=f"Acne treatment page {n}.",
                   site="clinic.example", sections=[Section("Acne", "acne", f"Acne treatment page {n}.")])


def test_kb_role_is_unprivileged_and_owns_named_tables(pg) -> None:
    url, _ = pg
    with PostgresStore(url):
        pass
    with psycopg.connect(url) as conn:
        role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                            "WHERE rolname = current_user").fetchone()
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        versions = [r[0] for r in conn.execute("SELECT version FROM kb_schema_migrations ORDER BY version")]
    assert role == (False, False, False)
    assert {"kb_articles", "kb_article_sections", "kb_pages", "kb_raw_pages", "kb_users", "kb_user_sessions",
            "kb_api_tokens", "kb_login_attempts", "kb_query_log", "kb_audit_log"} <= tables
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_migrations_run_once_under_concurrent_opens(pg) -> None:
    url, _ = pg
    code = "import sys; from kb.store import open_store; open_store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, count(*) FROM kb_schema_migrations GROUP BY version ORDER BY 1").fetchall()
    assert rows == [(v, 1) for v in range(1, SCHEMA_VERSION + 1)]


def _on_replica(store: PostgresStore) -> bool:
    """Whether a reader read of `store` is served by a standby (pg_is_in_recovery)."""
    return store._read(PUBLIC, lambda conn: conn.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"])


def test_reader_reads_use_the_replica_and_fall_back_when_it_stops(pg, pg_cluster) -> None:
    url, replicas = pg
    with PostgresStore(url, replicas) as writer:
        article_id, _ = writer.save_article(_article())
        assert not _on_replica(writer), "a store that wrote reads its own writes on the primary"
    pg_cluster.wait_for_replay()
    with PostgresStore(url, replicas) as reader:
        assert _on_replica(reader)
        assert reader.get_article(article_id, audiences=PUBLIC).title == "Page 1"
    pg_cluster.stop_replica()
    started = time.monotonic()
    with PostgresStore(url, replicas) as reader:  # no failed call: the read goes to the primary
        assert reader.get_article(article_id, audiences=PUBLIC).title == "Page 1"
        assert reader.faq_count(PUBLIC) == 0 and reader.count_articles(audiences=PUBLIC) == 1
        assert not _on_replica(reader)
    assert not replica_up(replicas[0]), "the failed replica is out of rotation"
    assert time.monotonic() - started < 5


def test_two_nodes_share_sessions_and_token_revocation(pg) -> None:
    url, replicas = pg
    with PostgresStore(url, replicas) as node_a, PostgresStore(url, replicas) as node_b:
        user = node_a.add_user("Dr.Lee", "hash", "staff", at="2024-01-01T00:00:00Z")
        node_a.start_session(user["id"], "sid", at="2024-01-01T00:00:00Z", expires_at="2024-01-02T00:00:00Z")
        assert node_b.session_user("sid", at="2024-01-01T01:00:00Z")["name"] == "Dr.Lee"
        token = node_b.create_token(user["id"], "Dr.Lee", "script", "thash", "abcd", at="2024-01-01T00:00:00Z")
        assert node_a.token_user("thash")["token_id"] == token
        node_b.end_session("sid")
        node_a.revoke_token(token, at="2024-01-01T02:00:00Z")
        assert node_a.session_user("sid", at="2024-01-01T03:00:00Z") is None
        assert node_b.token_user("thash") is None
        assert node_b.get_user("dr.lee")["id"] == user["id"], "user names compare case-insensitively"


def test_rate_limit_counts_across_nodes_under_concurrency(pg) -> None:
    url, _ = pg
    PostgresStore(url).close()  # migrate first, so the race is over attempts only
    granted: list[int | None] = []
    barrier = threading.Barrier(8)

    def node() -> None:
        with PostgresStore(url) as store:
            barrier.wait()
            granted.append(store.begin_login_attempt("203.0.113.9", at=1000.0, since=900.0, limit=5))

    threads = [threading.Thread(target=node) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(granted) == 8
    assert sum(g is not None for g in granted) == 5, granted


def test_database_url_setting_opens_postgres_and_creates_no_sqlite_file(pg, data_dir: Path) -> None:
    url, replicas = pg
    settings = {"DATA_DIR": str(data_dir), "DATABASE_URL": url, "DATABASE_REPLICA_URLS": ",".join(replicas)}
    with open_from_settings(settings) as store:
        assert isinstance(store, PostgresStore) and store.replica_urls == replicas
        store.save_article(_article())
    with open_store(url.replace("postgresql://", "postgres://", 1)) as store:
        assert store.count_articles() == 1
    assert not (data_dir / "kb.sqlite3").exists()


def test_cli_on_postgres_stats_settings_and_backup_refusal(pg, data_dir: Path, runner, monkeypatch) -> None:
    from kb.cli import cli

    url, _ = pg
    monkeypatch.setenv("KB_DATABASE_URL", url)
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    with open_store(url) as store:
        store.save_article(_article())
    stats = runner.invoke(cli, ["--data-dir", str(data_dir), "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert '"articles": 1' in stats.output and '"database"' in stats.output and password not in stats.output
    shown = runner.invoke(cli, ["--data-dir", str(data_dir), "settings"])
    assert "DATABASE_URL" in shown.output and password not in shown.output
    refused = runner.invoke(cli, ["--data-dir", str(data_dir), "backup", str(data_dir / "backups")])
    assert refused.exit_code != 0 and "pg_dump" in refused.output and "Traceback" not in refused.output
    assert not (data_dir / "kb.sqlite3").exists()


def test_health_probes_the_primary(pg, data_dir: Path, monkeypatch) -> None:
    from kb.maintenance import health

    url, _ = pg
    monkeypatch.setenv("KB_DATABASE_URL", url)
    assert health(data_dir)["store"] == "ok"
    monkeypatch.setenv("KB_DATABASE_URL", url.rsplit("/", 1)[0] + "/kb_no_such_database")
    assert health(data_dir)["store"] == "unavailable"
    assert not (data_dir / "kb.sqlite3").exists()
