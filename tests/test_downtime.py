"""Maintenance without downtime, with real processes: `kb serve` (gunicorn workers) answers every search while
`kb reindex` and `kb update` run beside it; plus the lost-records guard as the CLI reports it.

The server and the writers are separate processes sharing one data directory, exactly as in
production (README, "Running in production"); only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

from kb import index
from kb.config import data_paths
from kb.store import open_store
from tests.kbprocess import ARTICLES, KB, fill_store, kb_env, kb_run, make_article, wait_healthy

#: API queries the load threads send; each matches dozens of articles in every generation.
API_QUERIES = ("acne", "rosacea treatment", "eczema", "sunscreen", "melasma pigment", "psoriasis")
MAX_REQUESTS = 8000  # several workers answer fast: enough requests to overlap every writer
MAX_SECONDS = 60.0

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def api_total(port: int, query: str) -> int:
    status, body = get(port, f"/api/search?q={quote(query)}")
    assert status == 200, body[:300]
    return json.loads(body)["total"]


class Server:
    """`kb serve` as a real subprocess on a free port; stopped (and reaped) by the test."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([*KB, "--data-dir", str(data_dir), "serve", "--port", str(self.port),
                                      "--threads", "8"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=kb_env())
        wait_healthy(self.proc, self.port, lambda: log_path.read_text()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Load:
    """A bounded stream of HTML and API searches from several threads; records every failure."""

    def __init__(self, port: int, threads: int = 6) -> None:
        self.port = port
        self.served = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        for t in self.threads:
            t.start()

    def _one(self, n: int) -> str | None:
        """None when the answer was a full, non-empty result page; else what was wrong."""
        query = API_QUERIES[n % len(API_QUERIES)]
        if n % 3 == 0:
            status, body = get(self.port, f"/search?q={quote(query)}")
            if status != 200:
                return f"/search?q={query}: HTTP {status}"
            text = body.decode("utf-8", "replace")
            if '<ol id="results"' not in text or "<li" not in text.split('<ol id="results"', 1)[1]:
                return f"/search?q={query}: no results in the page"
            return None
        status, body = get(self.port, f"/api/search?q={quote(query)}")
        if status != 200:
            return f"/api/search?q={query}: HTTP {status} {body[:200]!r}"
        data = json.loads(body)
        if data["total"] <= 0 or not data["results"]:
            return f"/api/search?q={query}: empty ({data['total']} total)"
        return None

    def _run(self, worker: int) -> None:
        n = worker
        while not self.stop.is_set():
            with self.lock:
                if self.served + len(self.failures) >= MAX_REQUESTS or time.monotonic() - self.started > MAX_SECONDS:
                    return
            try:
                problem = self._one(n)
            except Exception as exc:  # noqa: BLE001 - a refused or reset connection is a failure too
                problem = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if problem is None:
                    self.served += 1
                else:
                    self.failures.append(problem)
            n += len(self.threads)
            time.sleep(0.002)  # spread MAX_REQUESTS over the writers' whole run

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_searches_never_fail_while_reindex_and_update_run(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill_store(data_dir)
    root = data_paths(data_dir)["index"]
    assert kb_run(data_dir, "reindex").returncode == 0
    first = index.current_generation(root)
    server = Server(data_dir, tmp_path / "serve.log")
    load = None
    try:
        assert api_total(server.port, "zyxolith") == 0
        load = Load(server.port)
        while load.served < 50 and not load.failures and time.monotonic() - load.started < 20:
            time.sleep(0.05)  # traffic is flowing before the first writer starts
        overlap: list[int] = []  # requests answered while each writer ran

        def write(*args: str) -> subprocess.CompletedProcess:
            served = load.served
            done = kb_run(data_dir, *args)
            overlap.append(load.served - served)
            assert done.returncode == 0, done.stderr
            return done

        write("reindex")
        # change the store under the running server: one new article, one edited, one removed
        rng = random.Random(99)
        with open_store(data_paths(data_dir)["store"]) as store:
            store.save_article(make_article(ARTICLES, rng, extra="zyxolith"), source="clinic.example")
            store.save_article(make_article(1, rng, extra="edited"), source="clinic.example")
            store.delete_article(store.article_ids()["https://clinic.example/articles/2"])
        write("update")
        write("reindex")
        with open_store(data_paths(data_dir)["store"]) as store:
            store.save_article(make_article(ARTICLES + 1, rng, extra="quorvane"), source="clinic.example")
        write("reindex")
        # the grace period (index.GRACE_SECONDS) elapses for every generation but the newest ...
        newest = index.current_generation(root)
        past = time.time() - index.GRACE_SECONDS - 60
        for gen in root.glob("gen-*"):
            if gen != newest:
                os.utime(gen, (past, past))
        # ... and the next reindex removes them while the server keeps answering
        write("reindex")
        time.sleep(0.5)  # traffic against the final generation after the cleanup
        load.finish()
        print(f"\nzero-downtime: {load.served} requests served, {len(load.failures)} failed "
              f"in {time.monotonic() - load.started:.1f} s; per writer run (reindex, update, reindex x3): {overlap}")
        assert load.failures == [], load.failures[:10]
        assert all(n >= 5 for n in overlap), overlap  # every writer really ran under traffic

        # the running server answers from the newest generation, without a restart
        live = index.current_generation(root)
        assert live is not None and live != first and live != newest
        assert api_total(server.port, "quorvane") == 1  # stored just before the last reindexes
        assert api_total(server.port, "zyxolith") == 1  # indexed by `kb update`, kept by later rebuilds
        status, body = get(server.port, "/healthz")
        assert status == 200 and json.loads(body)["index"] == live.name
        # old generations were cleaned up: only the live one and the one it replaced remain
        generations = sorted(p.name for p in root.glob("gen-*"))
        assert len(generations) == 2 and live.name in generations and newest.name in generations
        assert not first.exists()
        with open_store(data_paths(data_dir)["store"]) as store:
            assert index.read_meta(live)["docs"] == store.count_articles() == ARTICLES + 1
    finally:
        if load is not None:
            load.finish()
        server.stop()
    assert server.proc.returncode is not None


# -- item 3: the lost-records guard through the CLI ----------------------------------------------------

def test_cli_reindex_refuses_a_big_loss_and_force_passes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill_store(data_dir, count=40)
    root = data_paths(data_dir)["index"]
    assert kb_run(data_dir, "reindex").returncode == 0
    before = index.current_generation(root)
    with open_store(data_paths(data_dir)["store"]) as store:
        for url, article_id in sorted(store.article_ids().items())[:10]:  # a quarter of the articles
            store.delete_article(article_id)
    refused = kb_run(data_dir, "reindex")
    assert refused.returncode != 0
    assert "30 documents instead of 40" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert index.current_generation(root) == before  # the live index was kept
    assert index.read_meta(before)["docs"] == 40
    forced = kb_run(data_dir, "reindex", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "30 articles indexed" in forced.stdout
    assert index.current_generation(root) != before
    assert kb_run(data_dir, "check").returncode == 0
