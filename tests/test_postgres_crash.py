"""`kill -9` during a PostgreSQL reindex (issue #14): a real `kb reindex` paused at a named step (kb.faults) of the
search-generation build (kb.store.postgres_search) and SIGKILLed there.

While it is paused and after it dies, anonymous searches answer from the old generation exactly as before; the
killed build's tables stay until the next build, which sees its builder's advisory lock free and drops them;
that build completes and `kb check` is clean. A build still running is never taken for an abandoned one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from kb.store.postgres_search import BUILD_LOCK, GenerationWriter
from tests.kbprocess import KB, kb_env, kb_run, make_article

pytestmark = pytest.mark.parametrize("data_backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)],
                                     indirect=True)

ARTICLES = 60
QUERIES = ("acne", "rosacea treatment", "sunscreen", "melasma pigment", "zyxolith")
#: Every step of the build where a crash leaves something different behind ("@N": the N-th COPY row).
POINTS = ("pg-reindex:tables-created", "pg-reindex:copying@30", "pg-reindex:after-statistics",
          "pg-reindex:before-swap", "pg-reindex:after-swap")
WAIT = 20.0  # seconds: upper bound of every wait below


def connect(url: str):
    from tests.pgcluster import connect as pg_connect

    return pg_connect(url)


def anonymous_answers(url: str) -> dict[str, tuple[int, list[str]]]:
    """What an anonymous reader gets per query: total and ranked links."""
    from kb.search.pg import PgSearcher

    searcher = PgSearcher(url)
    try:
        out = {}
        for q in QUERIES:
            results = searcher.search(q, per_page=50, audiences=("public",))
            out[q] = (results.total, [h.link for h in results.hits])
        return out
    finally:
        searcher.close()


def ledger(url: str) -> dict[int, str]:
    """Generation -> state, as kb_search_generations records it."""
    with connect(url) as conn:
        return {int(g): str(s) for g, s in conn.execute("SELECT generation, state FROM kb_search_generations")}


def current(url: str) -> int:
    with connect(url) as conn:
        return int(conn.execute("SELECT generation FROM kb_search_current").fetchone()[0])


def table_generations(url: str) -> set[int]:
    """Generations that still have search tables in the database."""
    with connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
            "AND c.relname ~ '^kb_(article_search|search_[a-z]+)_g[0-9]+(_public|_staff)?$'")]
    return {int(name.split("_g")[-1].split("_")[0]) for name in names}


def build_locks(url: str) -> int:
    """Build locks still held by some session (a killed builder's until its server process notices it died)."""
    with connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
                                "AND objsubid = 2 AND database = (SELECT oid FROM pg_database "
                                "WHERE datname = current_database())", (BUILD_LOCK,)).fetchone()[0])


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT:.0f} s for {what}"
        time.sleep(0.02)


@pytest.fixture
def built(data_backend) -> dict[str, tuple[int, list[str]]]:
    """A PostgreSQL store of ARTICLES articles (every tenth staff) with a search generation built by `kb reindex`;
    returns what anonymous readers get from it."""
    rng = random.Random(14)
    with data_backend.open_store() as store:
        for n in range(ARTICLES):
            article = make_article(n, rng)
            article.audience = "staff" if n % 10 == 0 else "public"
            store.save_article(article)
    done = kb_run(data_backend.dir, "reindex")
    assert done.returncode == 0, done.stdout + done.stderr
    answers = anonymous_answers(data_backend.url)
    assert answers["acne"][0] > 0 and answers["zyxolith"][0] == 0
    return answers


@pytest.fixture
def paused_reindex(data_backend, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen]:
    """`kb reindex` paused at the test's `point`; killed (if still alive) afterwards."""
    point = request.node.callspec.params["point"]
    marker = tmp_path / "paused"
    proc = subprocess.Popen([*KB, "--data-dir", str(data_backend.dir), "reindex"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=kb_env(KB_PAUSE_AT=point, KB_PAUSE_FILE=str(marker), KB_PAUSE_SECONDS="60"))
    try:
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"kb reindex exited ({proc.returncode}) before {point}: {out!r}{err!r}")
            assert time.monotonic() < deadline, f"kb reindex never reached {point}"
            time.sleep(0.02)
        assert marker.read_text().split()[0] == point.partition("@")[0]
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_during_a_postgresql_reindex_keeps_search_answering_and_the_next_run_cleans_up(
        data_backend, built, paused_reindex, point: str) -> None:
    url = data_backend.url
    old = current(url)
    killed = [g for g, state in ledger(url).items() if state == "building"]
    swapped = point == "pg-reindex:after-swap"
    assert killed == ([] if swapped else [max(ledger(url))])

    # paused mid-build: readers see the old generation (or, once swapped, an identical one)
    assert anonymous_answers(url) == built
    # another session's cleanup leaves a build whose builder is alive alone
    with GenerationWriter(url) as other:
        assert other.drop_abandoned() == []
    assert set(killed) <= table_generations(url)

    os.kill(paused_reindex.pid, signal.SIGKILL)
    paused_reindex.communicate(timeout=WAIT)
    assert paused_reindex.returncode == -signal.SIGKILL
    assert anonymous_answers(url) == built
    assert current(url) == (max(ledger(url)) if swapped else old)
    assert set(killed) <= table_generations(url)  # the killed build's tables are still there
    wait_until(lambda: build_locks(url) == 0, "the killed builder's session to end")

    done = kb_run(data_backend.dir, "reindex")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{ARTICLES} articles indexed" in done.stdout + done.stderr
    after = ledger(url)
    assert "building" not in after.values() and not set(killed) & set(after)
    assert table_generations(url) <= set(after)  # no tables left of a generation the ledger forgot
    assert not set(killed) & table_generations(url)
    assert anonymous_answers(url) == built

    check = kb_run(data_backend.dir, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["index_documents"] == ARTICLES
    assert report["generation"] == f"postgresql:{current(url)}"


def writer_locks(url: str) -> int:
    """Writer locks (kb.store.postgres_search.writer_lock) still held by some session."""
    from kb.store.postgres_search import WRITER_LOCK

    with connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
                                "AND objsubid = 2 AND database = (SELECT oid FROM pg_database "
                                "WHERE datname = current_database())", (WRITER_LOCK,)).fetchone()[0])


def test_kill_9_during_an_in_place_update_leaves_the_old_state_and_frees_the_writer_lock(
        data_backend, built, tmp_path: Path, monkeypatch) -> None:
    """`kb update` paused with every change made in its transaction, not committed: readers see the old state,
    another host's writer gets the lock error naming it; killed, nothing of it remains and the next run applies."""
    from kb.errors import LockHeld
    from kb.search import pg_build
    from kb.store.postgres import PostgresStore
    from kb.store.postgres_pool import close_pools

    url = data_backend.url
    gen = current(url)
    with data_backend.open_store() as store:
        article = make_article(3, random.Random(3), extra="zyxolith")
        store.save_article(article)
    marker = tmp_path / "paused"
    proc = subprocess.Popen([*KB, "--data-dir", str(data_backend.dir), "update"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=kb_env(KB_PAUSE_AT="pg-update:before-commit", KB_PAUSE_FILE=str(marker),
                                       KB_PAUSE_SECONDS="60"))
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, "kb update to pause")
        assert proc.poll() is None, proc.communicate()
        assert anonymous_answers(url) == built  # the update's changes are invisible until it commits
        monkeypatch.setattr("kb.store.postgres_search.WRITER_WAIT", 0.2)
        with PostgresStore(url) as other, pytest.raises(LockHeld, match=f"kb update \\(pid {proc.pid} on "):
            pg_build.update(other, url)  # another host's writer
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
        close_pools()
    assert anonymous_answers(url) == built and current(url) == gen
    wait_until(lambda: writer_locks(url) == 0, "the killed writer's session to end")
    done = kb_run(data_backend.dir, "update")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "index: 1 indexed, 0 removed" in done.stdout and current(url) == gen  # in place, not rebuilt
    assert anonymous_answers(url)["zyxolith"][0] == 1
    check = kb_run(data_backend.dir, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"]


def test_a_build_in_one_schema_neither_waits_for_nor_shields_a_build_in_another(data_backend) -> None:
    """Every schema numbers its generations from 1: `kb eval`'s scratch schema building generation 1 while a
    reindex builds generation 1 of the live schema must not wait for it (found when `kb eval` hung behind a
    100,000-article build), and must not mistake the other's lock for its own abandoned build's."""
    import threading

    from kb.search.pg_build import build
    from kb.store.postgres import PostgresStore
    from kb.store.postgres_pool import close_pools
    from kb.store.postgres_search import close_search_pool, scratch_schema

    rng = random.Random(3)
    with scratch_schema(data_backend.url) as first, scratch_schema(data_backend.url) as second:
        for url in (first, second):
            with PostgresStore(url) as store:  # migrations: the generation ledger of each schema
                store.save_article(make_article(1, rng))
        done = threading.Event()

        def build_second() -> None:
            with PostgresStore(second) as store:
                build(store, second)
            done.set()

        with GenerationWriter(first) as busy:
            assert busy.begin() == 1  # a long build holds its lock in the first schema
            worker = threading.Thread(target=build_second, daemon=True)
            worker.start()
            worker.join(WAIT)
            assert done.is_set(), "the second schema's build waited for the first schema's lock"
            with GenerationWriter(second) as other:  # and the first build is not taken for abandoned there...
                assert other.drop_abandoned() == []
            with connect(first) as conn:  # ...nor dropped in its own schema while it runs
                assert conn.execute("SELECT state FROM kb_search_generations").fetchall() == [("building",)]
        for url in (first, second):
            close_search_pool(url)
        close_pools([first, second])
