"""`kb serve` with several worker processes (kb.serving): real subprocesses on 127.0.0.1.

Answers must come from more than one worker, SIGTERM (systemd's stop) must end the master and every
worker within seconds, a worker killed with SIGKILL must be replaced while the service keeps
answering, SIGHUP (systemd's reload) must replace every worker without a failed request, and
searches served by several processes must all reach the query log. The unit tests cover option
validation, the gunicorn settings, the X-KB-Worker header switch and the query-log writer thread.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest

from kb import config, serving
from kb.bench.load import descendants, process_tree_memory
from kb.cli import cli
from kb.config import data_paths
from kb.errors import ConfigError
from kb.models import Article, Section
from kb.store import open_store
from tests.kbprocess import wait_healthy

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pre-fork workers and /proc: Linux only")

KB = [sys.executable, "-c", "from kb.cli import cli; cli()"]
TOPICS = ("acne", "rosacea", "eczema", "psoriasis", "melasma", "vitiligo")
WORDS = "retinoid laser peel sunscreen barrier itch redness pigment scar pore sebum collagen".split()


# -- helpers ------------------------------------------------------------------------------------------------------

def built_data_dir(root: Path, count: int = 60) -> Path:
    """A data dir with `count` articles in the store and a built index (what `kb reindex` leaves)."""
    from kb import index

    data_dir = root / "data"
    data_dir.mkdir()
    rng = random.Random(3)
    with open_store(data_paths(data_dir)["store"]) as store:
        with store.transaction():
            for n in range(count):
                topic = TOPICS[n % len(TOPICS)]
                text = f"{topic} care notes {n}: " + " ".join(rng.choice(WORDS) for _ in range(60))
                store.save_article(Article(
                    url=f"https://clinic.example/a/{n}", title=f"{topic.title()} guide {n}", text=text,
                    sections=[Section(f"{topic.title()} treatment", "treatment", text)], site="clinic.example",
                    tags=[topic], categories=["Conditions"]), source="clinic.example")
        index.rebuild(store, data_paths(data_dir)["index"])
    return data_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection (so the kernel may hand it to any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie of ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Serve:
    """`kb serve --workers N` as a real subprocess; the test stops it, by its own pid."""

    def __init__(self, data_dir: Path, log_path: Path, *args: str, workers: int = 0) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
        env.update(KB_WORKER_HEADER="true", PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        with open(log_path, "wb") as log_fh:
            self.proc = subprocess.Popen([*KB, "--data-dir", str(data_dir), "serve", "--port", str(self.port), *args],
                                         stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        # answering, and every worker forked (the first may answer before the last exists)
        wait_healthy(self.proc, self.port, self.log, ready=lambda: len(self.workers()) == workers)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-3000:]

    def workers(self) -> list[int]:
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in self.workers():
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory) -> Path:
    return built_data_dir(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def server(served_dir: Path, tmp_path: Path):
    started = Serve(served_dir, tmp_path / "serve.log", "--workers", "2", "--threads", "2", workers=2)
    yield started
    started.stop()


def spread(port: int, paths: list[str], clients: int = 8) -> list[tuple[int, dict[str, str], bytes]]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda p: get(port, p), paths))


# -- real processes -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_answer_concurrently_and_sigterm_stops_every_process(server: Serve) -> None:
    workers = server.workers()
    assert len(workers) == 2, server.log()
    seen: set[str] = set()
    answers = []
    for _ in range(10):  # the kernel picks the worker; keep going until both have answered
        answers += spread(server.port, ["/healthz", "/api/search?q=acne", "/api/search?q=rosacea+laser",
                                        "/search?q=eczema"] * 4)
        seen |= {headers["x-kb-worker"] for _, headers, _ in answers}
        if len(seen) >= 2:
            break
    assert all(status == 200 for status, _, _ in answers), [a[2][:200] for a in answers if a[0] != 200]
    assert seen == {str(pid) for pid in workers}, (seen, workers)
    hits = [json.loads(body) for status, headers, body in answers if headers["content-type"].startswith(
        "application/json") and b'"results"' in body]
    assert hits and all(h["total"] > 0 for h in hits)

    # What `kb bench` reports: the largest process (the per-worker target) and sums over master + workers.
    memory = process_tree_memory(server.proc.pid)
    assert memory["processes"] == 3 and set(memory["per_process"]) == {str(p) for p in [server.proc.pid, *workers]}
    assert 0 < memory["rss_mb"] <= memory["peak_rss_mb"] and memory["rss_mb"] < memory["sum_rss_mb"]
    assert memory["rss_mb"] == max(m["rss_mb"] for m in memory["per_process"].values())
    assert 0 < memory["sum_pss_mb"] <= memory["sum_rss_mb"]

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0, server.log()
    assert time.monotonic() - started < 5, "graceful stop of idle workers took too long"
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "a worker outlived its master"
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_service_keeps_answering(server: Serve) -> None:
    before = server.workers()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    statuses: list[int] = []
    pids: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, headers, _ = get(server.port, "/api/search?q=psoriasis")
        statuses.append(status)
        pids.add(headers.get("x-kb-worker", ""))
        now = server.workers()
        if len(now) == 2 and victim not in now and len(statuses) >= 20:
            break
        time.sleep(0.02)
    after = server.workers()
    assert len(after) == 2 and victim not in after, (before, after, server.log())
    assert set(statuses) == {200}, statuses
    assert str(victim) not in pids
    replacement = (set(after) - set(before)).pop()
    seen: set[str] = set()
    for _ in range(10):
        seen |= {h["x-kb-worker"] for _, h, _ in spread(server.port, ["/api/search?q=melasma"] * 16)}
        if str(replacement) in seen:
            break
    assert str(replacement) in seen, "the new worker never answered"


@pytest.mark.slow
def test_sighup_replaces_every_worker_without_a_failed_request(server: Serve) -> None:
    before = set(server.workers())
    server.proc.send_signal(signal.SIGHUP)  # `systemctl reload`
    statuses: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        statuses.append(get(server.port, "/api/search?q=acne")[0])
        now = set(server.workers())
        if len(now) == 2 and not now & before:
            break
        time.sleep(0.02)
    after = set(server.workers())
    assert len(after) == 2 and not after & before, (before, after, server.log())
    assert set(statuses) == {200}
    served_by = {h["x-kb-worker"] for _, h, _ in spread(server.port, ["/api/search?q=eczema"] * 16)}
    assert served_by <= {str(p) for p in after}


@pytest.mark.slow
def test_searches_from_every_worker_reach_the_query_log(server: Serve, served_dir: Path) -> None:
    with open_store(data_paths(served_dir)["store"]) as store:
        try:
            before = store.db.execute("SELECT count(*) FROM query_log").fetchone()[0]
        except Exception:  # noqa: BLE001 - no search logged yet: the table does not exist
            before = 0
    queries = [f"/api/search?q=vitiligo+{n}" for n in range(40)]
    answers = spread(server.port, queries)
    assert {status for status, _, _ in answers} == {200}
    assert len({h["x-kb-worker"] for _, h, _ in answers}) >= 1
    with open_store(data_paths(served_dir)["store"]) as store:
        rows = store.db.execute("SELECT query FROM query_log").fetchall()
    assert len(rows) - before == len(queries)
    assert {f"vitiligo {n}" for n in range(40)} <= {r["query"] for r in rows}


def post_form(port: int, path: str, fields: dict[str, str], cookie: str) -> tuple[int, dict[str, str], bytes]:
    """One form POST on a fresh connection (so the kernel may hand it to any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=urlencode(fields), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "Connection": "close"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sign_in_form(port: int) -> tuple[str, str]:
    """(session cookie, CSRF token) of the sign-in form, as a browser holds them before posting it."""
    status, headers, body = get(port, "/login")
    assert status == 200
    token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', body)
    assert token and "session=" in headers["set-cookie"]
    return headers["set-cookie"].split(";", 1)[0], token.group(1).decode()


@pytest.mark.slow
def test_the_sign_in_limit_holds_across_workers_and_their_restart(tmp_path: Path) -> None:
    from kb import users

    data_dir = built_data_dir(tmp_path, count=6)
    with open_store(data_paths(data_dir)["store"]) as store:
        users.add_user(store, "alice", "correct horse battery")
    # No secret_key file yet: both workers create it at the same moment and must end with the same key
    # (kb.web.app._secret_key), or a form from one would fail its CSRF check on the other.
    server = Serve(data_dir, tmp_path / "serve.log", "--workers", "2", "--threads", "2", workers=2)
    try:
        cookie, token = sign_in_form(server.port)
        workers = {str(pid) for pid in server.workers()}

        def guess(password: str) -> tuple[int, dict[str, str], bytes]:
            return post_form(server.port, "/login", {"csrf_token": token, "username": "alice", "password": password},
                             cookie)

        with ThreadPoolExecutor(6) as pool:  # concurrent guesses, spread over both workers
            answers = list(pool.map(guess, [f"wrong guess {n}" for n in range(30)]))
        statuses = [status for status, _, _ in answers]
        assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses
        refused_by = {headers["x-kb-worker"] for status, headers, _ in answers if status == 429}
        for _ in range(30):  # the kernel picks the worker: go on until each has refused at least once
            if refused_by == workers:
                break
            status, headers, body = guess("one more guess")
            assert status == 429 and b"Too many failed sign-in attempts" in body and headers["retry-after"] == "60"
            refused_by.add(headers["x-kb-worker"])
        assert refused_by == workers, (refused_by, workers)

        server.proc.send_signal(signal.SIGHUP)  # every worker replaced by a fresh process
        deadline = time.monotonic() + 20
        while not (len(server.workers()) == 2 and not {str(p) for p in server.workers()} & workers):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        status, headers, body = guess("correct horse battery")  # even the right password waits out the minute
        assert status == 429 and headers["x-kb-worker"] not in workers
    finally:
        server.stop()
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_master_with_a_clear_message(served_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(KB_SECURE_COOKIES="sometimes", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([*KB, "--data-dir", str(served_dir), "serve", "--port", str(free_port()), "--workers", "2"],
                          capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "SECURE_COOKIES='sometimes' is not one of auto, true, false" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
def test_waitress_serves_one_process_and_stops_on_sigterm(served_dir: Path, tmp_path: Path) -> None:
    waitress = Serve(served_dir, tmp_path / "waitress.log", "--server", "waitress", "--threads", "4")
    try:
        assert waitress.workers() == []
        status, headers, body = get(waitress.port, "/api/search?q=acne")
        assert status == 200 and json.loads(body)["total"] > 0
        assert headers["x-kb-worker"] == str(waitress.proc.pid)
        waitress.proc.send_signal(signal.SIGTERM)
        assert waitress.proc.wait(10) == 0, waitress.log()
    finally:
        waitress.stop()
    assert "Traceback" not in waitress.log()


# -- options and settings -----------------------------------------------------------------------------------------

def test_workers_default_to_the_setting_and_are_validated() -> None:
    assert config.DEFAULTS["WORKERS"] >= 1
    assert serving.worker_count({"WORKERS": 3}) == 3
    assert serving.worker_count({"WORKERS": 3}, workers=1) == 1
    for bad in (0, -2, 65, "many"):
        with pytest.raises(ConfigError) as info:
            serving.worker_count({"WORKERS": bad})
        assert info.value.remedy


def test_workers_setting_comes_from_the_environment(tmp_path: Path) -> None:
    settings = config.load({"DATA_DIR": str(tmp_path)}, environ={"KB_WORKERS": "5", "KB_WORKER_HEADER": "yes"})
    assert settings["WORKERS"] == 5 and settings["WORKER_HEADER"] is True
    with pytest.raises(ConfigError):
        config.load({"DATA_DIR": str(tmp_path)}, environ={"KB_WORKERS": "lots"})


def test_gunicorn_options_fork_before_the_app_and_keep_access_log_off() -> None:
    options = serving.gunicorn_options({}, host="::1", port=8000, workers=3, threads=4)
    assert options["bind"] == ["[::1]:8000"]
    assert options["workers"] == 3 and options["threads"] == 4 and options["worker_class"] == "gthread"
    assert options["preload_app"] is False
    assert options["accesslog"] is None and options["errorlog"] == "-"
    assert options["forwarded_allow_ips"] == ""  # proxies are trusted through PROXY_HOPS only
    assert serving.gunicorn_options({}, host="127.0.0.1", port=1, workers=1, threads=1,
                                    access_log=True)["accesslog"] == "-"
    from gunicorn.config import Config

    cfg = Config()
    for key, value in options.items():  # every option is one gunicorn knows and accepts
        if key in cfg.settings:
            cfg.set(key, value)
    assert cfg.worker_class_str == "gthread" and cfg.workers == 3


def test_worker_header_only_when_the_setting_is_on(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KB_WORKER_HEADER", raising=False)
    off = serving.build_app({"DATA_DIR": str(tmp_path)})
    monkeypatch.setenv("KB_WORKER_HEADER", "true")
    on = serving.build_app({"DATA_DIR": str(tmp_path)})
    try:
        with off.test_client() as client:
            assert "X-KB-Worker" not in client.get("/api/openapi.json").headers
        with on.test_client() as client:
            assert client.get("/api/openapi.json").headers["X-KB-Worker"] == str(os.getpid())
            assert client.get("/no-such-page").headers["X-KB-Worker"] == str(os.getpid())
    finally:
        off.extensions["kb"].close()
        on.extensions["kb"].close()


def test_a_port_in_use_is_a_clear_error(runner, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(cli, ["--data-dir", str(tmp_path), "serve", "--port", str(port), "--workers", "2"])
    assert result.exit_code == 1
    assert "already in use" in result.output and "--port" in result.output
    assert "Traceback" not in result.output


def test_serve_rejects_bad_worker_counts(runner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "serve", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "serve", "--port", str(free_port())],
                           env={"KB_WORKERS": "0"})
    assert result.exit_code == 2 and "WORKERS" in result.output and "Traceback" not in result.output


def test_waitress_with_several_workers_warns_and_serves_one_process(monkeypatch, tmp_path: Path, caplog) -> None:
    calls = []
    monkeypatch.setattr(serving, "_serve_waitress", lambda settings, **kw: calls.append(kw))
    lines: list[str] = []
    serving.serve({"DATA_DIR": str(tmp_path), "WORKERS": 4}, port=free_port(), server="waitress", workers=4,
                  echo=lines.append)
    assert calls and calls[0]["threads"] == serving.DEFAULT_THREADS["waitress"]
    assert "one process" in lines[0] and any("--workers 4" in r.getMessage() for r in caplog.records)


def test_waitress_is_quiet_about_the_workers_default(monkeypatch, tmp_path: Path, caplog) -> None:
    """`kb demo` serves with waitress while WORKERS defaults to the core count: nothing to warn about."""
    monkeypatch.setattr(serving, "_serve_waitress", lambda settings, **kw: None)
    serving.serve({"DATA_DIR": str(tmp_path), "WORKERS": 4}, port=free_port(), server="waitress", echo=lambda _: None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_query_log_writer_closes_its_connection_and_waits_boundedly(tmp_path: Path) -> None:
    from kb.querylog import QueryLogWriter

    store_path = data_paths(tmp_path)["store"]
    writer = QueryLogWriter(store_path, config.load({"DATA_DIR": str(tmp_path)}, environ={}))
    for n in range(5):
        writer.log(f"acne {n}", n, 1.5, "public")
    thread = writer._thread
    writer.close()
    assert thread is not None and not thread.is_alive()
    with open_store(store_path) as store:
        assert [r["results"] for r in store.db.execute("SELECT results FROM query_log ORDER BY id")] == list(range(5))
        # A writer holding the lock (a crawl) delays the row, never the search beyond `wait`.
        writer = QueryLogWriter(store_path, config.load({"DATA_DIR": str(tmp_path)}, environ={}), wait=0.2)
        with store.transaction():
            started = time.monotonic()
            writer.log("while locked", 0, 1.0, "public")
            assert time.monotonic() - started < 1.0
        writer.close()
