"""Crash safety with `kill -9`: a real `kb` process is paused at a named step (kb.faults) and killed there.

After each kill: the live index still answers as before (and /healthz is 200), the store passes
SQLite's integrity check, keeps everything committed before and holds no half-written article, the
writer lock is free again, and the next run completes the work to the same end state as a clean run.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from kb import faults, index
from kb.config import data_paths
from kb.demo import copy_demo_site, running_demo_site
from kb.lock import lock_status
from kb.search import Searcher
from kb.store import open_store
from kb.web import create_app
from tests.kbprocess import ARTICLES, KB, fill_store, kb_env, kb_run, make_article

QUERIES = ("acne", "rosacea treatment", "sunscreen", "melasma pigment", "eczema", "zyxolith", "blackheads")


# -- helpers -------------------------------------------------------------------------------------------

def kill_at(data_dir: Path, point: str, *args: str, **env: str) -> str:
    """Run `kb <args>` until it pauses at `point`, then SIGKILL it; returns what the marker file says."""
    marker = data_dir.parent / f"paused-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([*KB, "--data-dir", str(data_dir), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=kb_env(KB_PAUSE_AT=point, KB_PAUSE_FILE=str(marker), KB_PAUSE_SECONDS="60", **env))
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"kb {' '.join(args)} exited ({proc.returncode}) before {point}: {out}{err}")
            assert time.monotonic() < deadline, f"kb {' '.join(args)} never reached {point}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        return marker.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def search_snapshot(root: Path) -> dict[str, tuple[int, list[str]]]:
    """What the live index answers: total and ranked links per query."""
    searcher = Searcher(root)
    try:
        out = {}
        for q in QUERIES:
            results = searcher.search(q, per_page=50, audiences=("public", "staff"))
            out[q] = (results.total, [h.link for h in results.hits])
        return out
    finally:
        searcher.close()


def store_snapshot(data_dir: Path) -> dict[str, str]:
    """URL -> content hash of every stored article."""
    with open_store(data_paths(data_dir)["store"]) as store:
        return {r["url"]: r["content_hash"] for r in store.db.execute("SELECT url, content_hash FROM articles")}


def assert_store_sound(data_dir: Path) -> dict[str, str]:
    """Integrity check passes and every article is whole: its content hash, which covers every section,
    recomputes from the rows (a half-written article would lack sections or carry the other version's)."""
    path = data_paths(data_dir)["store"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    with open_store(path) as store:
        stored = {r["id"]: r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}
        for article in store.iter_articles():
            assert article.content_hash == stored[article.id], f"article {article.id} ({article.url}) is half-written"
        orphans = store.db.execute(
            "SELECT count(*) FROM sections WHERE article_id NOT IN (SELECT id FROM articles)").fetchone()[0]
        assert orphans == 0
    return store_snapshot(data_dir)


def assert_serving(data_dir: Path, expected: dict[str, tuple[int, list[str]]]) -> None:
    """The live index answers exactly as before the crash, and /healthz says so."""
    assert search_snapshot(data_paths(data_dir)["index"]) == expected
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True, "QUERY_LOG": False})
    try:
        response = app.test_client().get("/healthz")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["writer"] is None  # the killed writer no longer counts as holding the lock
    finally:
        app.extensions["kb"].close()


def assert_lock_free(data_dir: Path) -> None:
    assert lock_status(data_dir) is None


def assert_consistent(data_dir: Path) -> None:
    """End state of a clean run: index documents == stored articles, and `kb check` agrees (exit 0)."""
    root = data_paths(data_dir)["index"]
    with open_store(data_paths(data_dir)["store"]) as store:
        in_store = {int(r["id"]): r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}
    assert index.indexed_hashes(root) == in_store
    assert index.read_meta(index.current_generation(root))["docs"] == len(in_store)
    done = kb_run(data_dir, "check")
    assert done.returncode == 0, done.stdout + done.stderr


def assert_same_answers(incremental: dict[str, tuple[int, list[str]]], full: dict[str, tuple[int, list[str]]]) -> None:
    """An incrementally updated index answers like a full rebuild: same totals, same documents, same first page.

    Further down, near-equal scores may swap places: Whoosh keeps counting a replaced document in
    the term statistics until its segment is merged, so exact ranks are not compared there.
    """
    assert incremental.keys() == full.keys()
    for q in full:
        assert incremental[q][0] == full[q][0], q
        assert sorted(incremental[q][1]) == sorted(full[q][1]), q
        assert incremental[q][1][:10] == full[q][1][:10], q


# -- the fault hook itself -----------------------------------------------------------------------------

def test_checkpoint_is_a_no_op_unless_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    sleeps: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", sleeps.append)
    try:
        faults.configure({})
        faults.checkpoint("reindex:before-swap")
        faults.configure({"KB_PAUSE_AT": "a, crawl:stored@3", "KB_PAUSE_FILE": str(marker),
                          "KB_PAUSE_SECONDS": "2"})
        faults.checkpoint("reindex:before-swap")
        faults.checkpoint("crawl:stored")
        faults.checkpoint("crawl:stored")
        assert not marker.exists() and sleeps == []
        faults.checkpoint("crawl:stored")  # the third arrival pauses
        assert marker.read_text().startswith("crawl:stored ") and sleeps == [2.0]
        faults.checkpoint("crawl:stored")
        faults.checkpoint("a")
        assert sleeps == [2.0, 2.0]
    finally:
        faults.configure({})


# -- the index writers -----------------------------------------------------------------------------------

@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    """A store of 60 articles with a live index built by `kb reindex`."""
    data_dir = tmp_path / "data"
    fill_store(data_dir, count=60)
    done = kb_run(data_dir, "reindex")
    assert done.returncode == 0, done.stderr
    return data_dir


@pytest.mark.parametrize("point", ["reindex:before-commit", "reindex:before-swap"])
def test_kill_during_reindex(indexed: Path, point: str) -> None:
    data_dir = indexed
    root = data_paths(data_dir)["index"]
    live = index.current_generation(root)
    results = search_snapshot(root)
    stored = store_snapshot(data_dir)
    assert results["acne"][0] > 0

    assert kill_at(data_dir, point, "reindex").startswith(point)
    assert index.current_generation(root) == live  # the pointer never moved
    assert len(list(root.glob("gen-*"))) == 2  # the killed build is left beside it, not in service
    assert_serving(data_dir, results)
    assert assert_store_sound(data_dir) == stored
    assert_lock_free(data_dir)

    done = kb_run(data_dir, "reindex")  # takes the lock over and completes the work
    assert done.returncode == 0, done.stderr
    assert "60 articles indexed" in done.stdout
    assert index.current_generation(root) != live
    assert search_snapshot(root) == results
    assert_consistent(data_dir)
    # once the grace period has passed, the next reindex also removes the killed build's directory
    past = time.time() - index.GRACE_SECONDS - 60
    for gen in root.glob("gen-*"):
        os.utime(gen, (past, past))
    assert kb_run(data_dir, "reindex").returncode == 0
    assert len(list(root.glob("gen-*"))) == 2  # the live generation and the one it replaced


def test_kill_during_update(indexed: Path, tmp_path: Path) -> None:
    data_dir = indexed
    root = data_paths(data_dir)["index"]
    rng = random.Random(5)
    with open_store(data_paths(data_dir)["store"]) as store:
        store.save_article(make_article(ARTICLES, rng, extra="zyxolith"), source="clinic.example")
        store.save_article(make_article(3, rng, extra="edited zyxolith"), source="clinic.example")
        store.delete_article(store.article_ids()["https://clinic.example/articles/4"])
        seq = store.last_change()
    live = index.current_generation(root)
    meta = index.read_meta(live)
    results = search_snapshot(root)
    stored = store_snapshot(data_dir)
    assert results["zyxolith"][0] == 0

    assert kill_at(data_dir, "update:before-commit", "update").startswith("update:before-commit")
    assert index.current_generation(root) == live
    assert index.read_meta(live) == meta  # the store sequence was not advanced: the changes will be replayed
    assert_serving(data_dir, results)
    assert assert_store_sound(data_dir) == stored
    assert_lock_free(data_dir)

    done = kb_run(data_dir, "update")
    assert done.returncode == 0, done.stderr
    assert "index: 2 indexed, 1 removed" in done.stdout
    assert index.read_meta(live)["seq"] == seq
    assert_consistent(data_dir)
    # the incrementally repaired index answers exactly like a full rebuild of the same store
    fresh = tmp_path / "fresh-index"
    with open_store(data_paths(data_dir)["store"]) as store:
        index.rebuild(store, fresh)
    after = search_snapshot(root)
    assert_same_answers(after, search_snapshot(fresh))
    assert after["zyxolith"][0] == 2


# -- the crawler and the store ---------------------------------------------------------------------------

@contextmanager
def changed_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A copy of the demo site, served on 127.0.0.1; the caller crawls it, then `edit(site_root)` changes it."""
    root = copy_demo_site(tmp_path / "site")
    with running_demo_site(root=root) as base_url:
        yield base_url, root


def edit_site(root: Path) -> list[str]:
    """Change the text of three posts, so a re-crawl rewrites three articles."""
    slugs = ["acne-breakouts-what-helps", "rosacea-triggers", "sunscreen-spf-uva-uvb"]
    for slug in slugs:
        page = root / "blog" / slug / "index.html"
        html = page.read_text("utf-8")
        page.write_text(html.replace("<p>", "<p>Clinic update on zyxolith. ", 1), "utf-8")
    return slugs


@pytest.mark.parametrize("point", ["crawl:stored@4", "store:in-transaction"])
def test_kill_during_crawl(tmp_path: Path, point: str) -> None:
    data_dir = tmp_path / "data"
    crawl_env = {"KB_CRAWL_DELAY": "0"}
    with changed_site(tmp_path) as (base_url, site_root):
        first = kb_run(data_dir, "crawl", base_url, **crawl_env)
        assert first.returncode == 0, first.stderr
        root = data_paths(data_dir)["index"]
        results = search_snapshot(root)
        before = store_snapshot(data_dir)
        assert results["acne"][0] > 0 and len(before) > 30
        edit_site(site_root)

        name = point.split("@")[0]
        assert kill_at(data_dir, point, "crawl", base_url, **crawl_env).startswith(name)
        after = assert_store_sound(data_dir)
        assert set(after) == set(before)  # nothing committed before was lost (and nothing new half-added)
        if name == "store:in-transaction":
            assert after == before  # the article being written was rolled back as a whole
        assert_serving(data_dir, results)  # the crawl's index update never started
        assert_lock_free(data_dir)

        again = kb_run(data_dir, "crawl", base_url, **crawl_env)
        assert again.returncode == 0, again.stderr
        clean_dir = tmp_path / "clean"
        clean = kb_run(clean_dir, "crawl", base_url, **crawl_env)
        assert clean.returncode == 0, clean.stderr
    recovered = store_snapshot(data_dir)
    assert recovered == store_snapshot(clean_dir)  # same articles, same content as a clean crawl
    assert recovered != before  # the edits did arrive
    assert_consistent(data_dir)
    assert_same_answers(search_snapshot(root), search_snapshot(data_paths(clean_dir)["index"]))
    assert search_snapshot(root)["zyxolith"][0] >= 3
