"""Real `kb` processes over a filled data directory: the command line, a clean environment, varied articles, and
`kb serve` nodes with the HTTP client, browser and load that talk to them.

Shared by the tests that run kb as separate processes (tests/test_downtime.py, tests/test_crash.py,
tests/test_postgres_nodes.py, tests/test_postgres_operator.py).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from itertools import count
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlencode

from kb.config import data_paths
from kb.models import Article, Section
from kb.store import open_store

#: `python -m kb.cli` has no __main__ guard, so subprocesses call the click group directly.
KB = [sys.executable, "-c", "from kb.cli import cli; cli()"]

WORDS = ("acne rosacea eczema psoriasis melasma vitiligo urticaria dermatitis keloid wart mole lentigo "
         "retinoid isotretinoin tretinoin niacinamide azelaic benzoyl peroxide clindamycin doxycycline "
         "laser peel microneedling cryotherapy biopsy excision moisturiser emollient barrier itch redness "
         "pigment scar pore sebum follicle collagen elastin ultraviolet sunscreen spf zinc titanium").split()
TOPICS = ("acne", "rosacea", "eczema", "psoriasis", "melasma", "vitiligo")
ARTICLES = 300


def kb_env(**extra: str) -> dict[str, str]:
    """The caller's environment without KB_* settings leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(extra)
    return env


def kb_run(data_dir: Path, *args: str, timeout: float = 60, stdin: str | None = None,
           **env: str) -> subprocess.CompletedProcess:
    """One `kb` command as an operator types it in a shell; `stdin` is what they pipe in (a password)."""
    stdin_args: dict = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    return subprocess.run([*KB, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          env=kb_env(**env), timeout=timeout, **stdin_args)


def make_article(n: int, rng: random.Random, *, extra: str = "") -> Article:
    """A varied article: one main topic (in title, headings and body) and random dermatology words."""
    topic = TOPICS[n % len(TOPICS)]
    body = [f"{topic} is a common skin condition."]
    sections = []
    for s in range(3):
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        text = f"{topic} treatment notes {s}: {words}. Use sunscreen daily. {extra}".strip()
        sections.append(Section(f"{topic.title()} part {s}", f"part-{s}", text))
        body.append(text)
    return Article(url=f"https://clinic.example/articles/{n}", title=f"{topic.title()} guide {n}",
                   text="\n".join(body), sections=sections, site="clinic.example",
                   tags=[topic, rng.choice(WORDS)], categories=["Conditions"],
                   published=f"20{10 + n % 14:02d}-0{1 + n % 9}-1{n % 10}")


def fill_store(data_dir: Path, count: int = ARTICLES, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open_store(data_paths(data_dir)["store"]) as store:
        with store.transaction():
            for n in range(count):
                store.save_article(make_article(n, rng), source="clinic.example")


def wait_healthy(proc: subprocess.Popen, port: int, log: Callable[[], str], *,
                 ready: Callable[[], bool] = lambda: True, timeout: float = 30.0) -> None:
    """Wait until a started `kb serve` answers /healthz with 200 (and `ready()` holds); fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"kb serve exited: {log()}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz", headers={"Connection": "close"})
            if conn.getresponse().status == 200 and ready():
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"kb serve did not become healthy: {log()}"
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- `kb serve` nodes of one site -------------------------------------------------------------------------------

class Node:
    """`kb serve --workers 1` in its own data directory on its own port, as one host behind a load balancer
    (PROXY_HOPS=1: a test names its client address in X-Forwarded-For); stopped by the test, by its own pid.

    Nodes given the same `database_url`, `replica_urls` and `secret_key` are one site (issue #14).
    """

    def __init__(self, data_dir: Path, port: int, *, database_url: str, replica_urls: Sequence[str],
                 secret_key: str) -> None:
        self.port, self.data_dir = port, data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        root = str(Path(__file__).resolve().parents[1])
        env = kb_env(KB_DATABASE_URL=database_url, KB_DATABASE_REPLICA_URLS=",".join(replica_urls),
                     KB_SECRET_KEY=secret_key, KB_PROXY_HOPS="1", KB_QUERY_LOG="false", PYTHONPATH=root,
                     PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log_fh:
            self.proc = subprocess.Popen(
                [*KB, "--data-dir", str(data_dir), "serve", "--port", str(port), "--workers", "1", "--threads", "4"],
                stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        wait_healthy(self.proc, port, self.log)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- a minimal browser: one cookie jar, real requests ------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def request(port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: str = "",
            timeout: float = 10.0) -> Answer:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body.encode() if body else None,
                     headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        cookies = "; ".join(v for k, v in response.getheaders() if k.lower() == "set-cookie")
        found = {k.lower(): v for k, v in response.getheaders()}
        if cookies:
            found["set-cookie"] = cookies
        return Answer(response.status, found, response.read())
    finally:
        conn.close()


_addresses = count(1)


@dataclass
class Browser:
    """A staff member's browser behind the load balancer: one address, one cookie jar, any node."""

    address: str = field(default_factory=lambda: f"10.0.{next(_addresses)}.1")
    cookies: dict[str, str] = field(default_factory=dict)

    def send(self, node: Node, method: str, path: str, form: dict[str, str] | None = None) -> Answer:
        headers = {"X-Forwarded-For": self.address}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        answer = request(node.port, method, path, headers=headers, body=urlencode(form) if form else "")
        jar: SimpleCookie = SimpleCookie()
        jar.load(answer.headers.get("set-cookie", ""))
        for name, morsel in jar.items():
            if morsel.value:
                self.cookies[name] = morsel.value
            else:
                self.cookies.pop(name, None)
        return answer

    def csrf_token(self, node: Node, path: str) -> str:
        """The CSRF token of the form on `path`, as the browser would submit it."""
        page = self.send(node, "GET", path)
        assert page.status == 200, page.body[:500]
        found = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', page.body)
        assert found, f"no CSRF token on {path}"
        return found.group(1).decode()

    def sign_in(self, node: Node, username: str, password: str) -> Answer:
        """Submit the real sign-in form of `node` (its CSRF token first), as a person at the keyboard would."""
        token = self.csrf_token(node, "/login")
        return self.send(node, "POST", "/login",
                         {"csrf_token": token, "username": username, "password": password, "next": "/"})

    def search(self, node: Node, path: str) -> dict:
        """The JSON answer of an /api/search `path` in this browser's view (signed in or not)."""
        answer = self.send(node, "GET", path)
        assert answer.status == 200, answer.body[:500]
        return answer.json()


def replica_sessions(replica_admin_url: str, database: str) -> set[str]:
    """application_name of the connections kb holds to `database` on a replica (store: kb, search: kb search),
    read as its superuser: proof that reads really go to the replica before a test stops it."""
    from tests.pgcluster import connect

    with connect(replica_admin_url) as conn:
        rows = conn.execute("SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = %s",
                            (database,)).fetchall()
    return {r[0] for r in rows}


# -- anonymous load over several nodes ---------------------------------------------------------------------------

@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    what: str


def load(nodes: Sequence[Node], paths: Sequence[str], until: float, *, threads: int = 4,
         max_requests: int = 3000) -> list[Outcome]:
    """`threads` anonymous clients sending GET `paths` round-robin over `nodes` until `until` (bounded): every
    request with when it started and ended, and whether it was answered 200."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        i = n
        while time.monotonic() < until and len(outcomes) < max_requests:
            path, node = paths[i % len(paths)], nodes[i % len(nodes)]
            i += threads
            started = time.monotonic()
            try:
                ok = request(node.port, "GET", path, timeout=15).status == 200
            except OSError:
                ok = False
            with lock:
                outcomes.append(Outcome(started, time.monotonic(), ok, path))

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(until - time.monotonic() + 30)
    assert not any(w.is_alive() for w in workers)
    return outcomes


def stop_replica_during(cluster, run_load: Callable[[float], list["Outcome"]], seconds: float,
                        stop_after: float) -> tuple[list["Outcome"], float, float]:
    """`run_load(until)` in a thread for `seconds`, the streaming replica stopped `stop_after` seconds in and
    restarted at the end; (outcomes, when the stop began, when it ended)."""
    result: dict[str, list[Outcome]] = {}
    until = time.monotonic() + seconds
    runner = threading.Thread(target=lambda: result.setdefault("load", run_load(until)))
    runner.start()
    try:
        time.sleep(stop_after)
        stop_began = time.monotonic()
        cluster.stop_replica()
        stop_ended = time.monotonic()
    finally:
        runner.join(seconds + 60)
        cluster.ensure_replica_running()
    return result["load"], stop_began, stop_ended
