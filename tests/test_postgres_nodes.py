"""Several `kb serve` nodes on one PostgreSQL database behave as one site (issue #14): real processes on 127.0.0.1.

Two nodes with their own data directories and ports share only DATABASE_URL, DATABASE_REPLICA_URLS and
KB_SECRET_KEY (as on two hosts behind a load balancer, so PROXY_HOPS=1 and each test signs in from its own
X-Forwarded-For address). A staff sign-in through the real CSRF form on one node is valid on the other, a sign-out
on one ends the session on both, a token revoked with `kb token revoke` stops working on both at once, and the
sign-in rate limit counts attempts made on either node. Then the streaming replica is stopped in the middle of a
bounded anonymous load of searches and article pages: no request fails except those in flight at that moment.
"""

from __future__ import annotations

import http.client
import json
import os
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
from typing import Iterator
from urllib.parse import quote, urlencode

import pytest

from kb.cli import cli
from kb.models import Article, Section
from tests.kbprocess import KB, kb_env, wait_healthy
from tests.pgcluster import PgCluster, connect

pytestmark = [pytest.mark.postgresql,
              pytest.mark.skipif(sys.platform != "linux", reason="real kb serve processes: Linux only")]

SECRET_KEY = "shared-secret-key-of-the-test-site-0123456789abcdef"
STAFF, PASSWORD = "nurse", "correct horse battery staple"
PUBLIC_ARTICLES, STAFF_ARTICLES = 40, 4
STAFF_WORD = "isotretinoin"  # only in staff articles: a search finds it only for signed-in staff
TOPICS = ("acne", "rosacea", "eczema", "psoriasis", "melasma", "vitiligo")
THREADS = 4
LOAD_SECONDS = 3.0  # of which the replica is stopped after STOP_AFTER
STOP_AFTER = 1.0
MAX_REQUESTS = 3000
_addresses = count(1)


# -- the site: one database, two nodes ---------------------------------------------------------------------------

def article(n: int, audience: str = "public") -> Article:
    topic = TOPICS[n % len(TOPICS)]
    extra = f" The {STAFF_WORD} protocol for clinic staff." if audience == "staff" else ""
    text = f"{topic.title()} care note {n}: sunscreen, emollients and gentle cleansing help.{extra}"
    return Article(url=f"https://clinic.example/{audience}/{n}", title=f"{topic.title()} guide {n}", text=text,
                   site="clinic.example", audience=audience, categories=["Conditions"], tags=[topic],
                   sections=[Section(f"{topic.title()} treatment", "treatment", text)])


@dataclass
class Site:
    """What the nodes share: the database on the primary and the replica, and ids the tests need."""

    url: str
    replica_urls: list[str]
    public_ids: list[int]
    admin_dir: Path  # a data directory whose kb.toml names the database, for `kb token ...` commands


@pytest.fixture(scope="module")
def site(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A filled store with a built search generation and a staff user, replayed on the replica."""
    from kb.search.pg_build import build
    from kb.store.postgres import PostgresStore
    from kb.store.postgres_pool import close_pools
    from kb.store.postgres_search import close_search_pool
    from kb.users import add_user

    name = f"kb_nodes_{os.getpid()}"
    database = pg_cluster.create_database(name)
    try:
        with PostgresStore(database.url) as store:
            public = [store.save_article(article(n))[0] for n in range(PUBLIC_ARTICLES)]
            for n in range(STAFF_ARTICLES):
                store.save_article(article(PUBLIC_ARTICLES + n, "staff"))
            add_user(store, STAFF, PASSWORD)
            build(store, database.url)
        pg_cluster.wait_for_replay()
        admin = tmp_path_factory.mktemp("admin")
        (admin / "kb.toml").write_text(f'database_url = "{database.url}"\n', encoding="utf-8")
        yield Site(database.url, list(database.replica_urls), public, admin)
    finally:
        close_search_pool(database.url)
        close_pools()
        pg_cluster.ensure_replica_running()
        pg_cluster.drop_database(name)


class Node:
    """`kb serve --workers 1` in its own data directory on its own port; stopped by the test, by its own pid."""

    def __init__(self, site: Site, data_dir: Path, port: int) -> None:
        self.port, self.data_dir = port, data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        root = str(Path(__file__).resolve().parents[1])
        env = kb_env(KB_DATABASE_URL=site.url, KB_DATABASE_REPLICA_URLS=",".join(site.replica_urls),
                     KB_SECRET_KEY=SECRET_KEY, KB_PROXY_HOPS="1", KB_QUERY_LOG="false", PYTHONPATH=root,
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def nodes(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Two nodes of the site: different data directories and ports, the same database and secret key."""
    started: list[Node] = []
    try:
        for name in ("node_a", "node_b"):
            started.append(Node(site, tmp_path_factory.mktemp(name), free_port()))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


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

    def sign_in(self, node: Node, password: str = PASSWORD) -> Answer:
        token = self.csrf_token(node, "/login")
        return self.send(node, "POST", "/login",
                         {"csrf_token": token, "username": STAFF, "password": password, "next": "/"})

    def staff_hits(self, node: Node) -> int:
        """How many staff-only articles this browser's search finds on `node` (0 for the public view)."""
        answer = self.send(node, "GET", f"/api/search?q={STAFF_WORD}")
        assert answer.status == 200, answer.body[:500]
        return answer.json()["total"]


# -- sessions, tokens and the rate limit across nodes ----------------------------------------------------------

def test_nodes_share_one_secret_key_through_the_setting_not_their_data_directories(nodes) -> None:
    a, b = nodes
    assert a.port != b.port
    assert a.data_dir != b.data_dir
    for node in nodes:  # KB_SECRET_KEY set: no node generated a key file of its own
        assert not (node.data_dir / "secret_key").exists()


def test_a_sign_in_on_one_node_is_valid_on_the_other_and_a_sign_out_on_either_ends_it_on_both(nodes) -> None:
    a, b = nodes
    browser = Browser()
    assert browser.staff_hits(a) == 0 and browser.staff_hits(b) == 0  # anonymous: the public view
    signed_in = browser.sign_in(a)
    assert signed_in.status == 303, signed_in.body[:500]
    assert browser.staff_hits(b) == STAFF_ARTICLES and browser.staff_hits(a) == STAFF_ARTICLES
    copied = dict(browser.cookies)  # the signed-in cookie, as a second tab on node A still holds it
    signed_out = browser.send(b, "POST", "/logout", {"csrf_token": browser.csrf_token(b, "/")})
    assert signed_out.status == 303, signed_out.body[:500]
    assert browser.staff_hits(a) == 0
    assert Browser(cookies=copied).staff_hits(a) == 0  # the session ended in the store, not just in one cookie
    assert Browser(cookies=copied).staff_hits(b) == 0


def test_a_token_revoked_with_kb_token_revoke_stops_working_on_both_nodes_at_once(nodes, site, runner) -> None:
    a, b = nodes
    created = runner.invoke(cli, ["--data-dir", str(site.admin_dir), "token", "create", STAFF, "--name", "nodes"])
    assert created.exit_code == 0, created.output
    token_id = re.search(r"token (\d+) for", created.output).group(1)
    secret = created.stdout.strip()  # the secret alone on stdout; the message goes to stderr
    bearer = {"Authorization": f"Bearer {secret}"}
    path = f"/api/search?q={STAFF_WORD}"
    for node in nodes:
        answer = request(node.port, "GET", path, headers=bearer)
        assert answer.status == 200 and answer.json()["total"] == STAFF_ARTICLES, answer.body[:300]
    revoked = runner.invoke(cli, ["--data-dir", str(site.admin_dir), "token", "revoke", token_id])
    assert revoked.exit_code == 0, revoked.output
    for node in (b, a):  # the very next request on either node, no waiting
        answer = request(node.port, "GET", path, headers=bearer)
        assert answer.status == 401 and "not valid" in answer.json()["error"]["message"]


def test_the_sign_in_rate_limit_counts_attempts_made_on_either_node(nodes) -> None:
    from kb.web.auth import LOGIN_LIMIT

    a, b = nodes
    browser = Browser()
    for n in range(LOGIN_LIMIT):  # failed attempts alternate between the nodes
        failed = browser.sign_in((a, b)[n % 2], password="wrong password")
        assert failed.status == 200 and b"Sign-in failed" in failed.body
    for node in nodes:  # either node now refuses: it counted the other's attempts too
        token = browser.csrf_token(node, "/login")
        limited = browser.send(node, "POST", "/login", {"csrf_token": token, "username": STAFF, "password": PASSWORD})
        assert limited.status == 429 and limited.headers.get("retry-after") == "60"
    other = Browser()  # another client address still signs in: the limit is per address, not global
    assert other.sign_in(b).status == 303


def test_a_searcher_whose_replica_refuses_connections_answers_from_the_primary_and_skips_it(site) -> None:
    from kb.search.pg import PgSearcher
    from kb.store.postgres_pool import replica_up
    from kb.store.postgres_search import close_search_pool

    dead = f"postgresql://kb:x@127.0.0.1:{free_port()}/kb?connect_timeout=1"  # nobody listens there
    primary, routed = PgSearcher(site.url), PgSearcher(site.url, [dead])
    try:
        expected = [h.id for h in primary.search("acne sunscreen", audiences=("public",)).hits]
        assert expected
        started = time.monotonic()
        assert [h.id for h in routed.search("acne sunscreen", audiences=("public",)).hits] == expected
        assert not replica_up(dead)  # out of rotation for every read of this process
        again = time.monotonic()
        assert routed.search("rosacea", audiences=("public",)).total > 0
        assert time.monotonic() - again < time.monotonic() - started  # the next search no longer tries it
    finally:
        primary.close()
        routed.close()
        close_search_pool(dead)


# -- a replica that stops answering under load -------------------------------------------------------------------

@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    what: str


def replica_sessions(cluster: PgCluster, database: str) -> set[str]:
    """application_name of the connections kb holds to `database` on the replica (store: kb, search: kb search)."""
    with connect(cluster.replica_admin_urls[0]) as conn:
        rows = conn.execute("SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = %s",
                            (database,)).fetchall()
    return {r[0] for r in rows}


def load(nodes: tuple[Node, Node], site: Site, until: float) -> list[Outcome]:
    """THREADS anonymous clients sending searches and article pages to both nodes until `until` (bounded)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    paths = [f"/api/search?q={quote(t)}" for t in TOPICS] + [f"/article/{i}" for i in site.public_ids[:12]]

    def client(n: int) -> None:
        i = n
        while time.monotonic() < until and len(outcomes) < MAX_REQUESTS:
            path, node = paths[i % len(paths)], nodes[i % 2]
            i += THREADS
            started = time.monotonic()
            try:
                ok = request(node.port, "GET", path, timeout=15).status == 200
            except OSError:
                ok = False
            with lock:
                outcomes.append(Outcome(started, time.monotonic(), ok, path))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(until - time.monotonic() + 30)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_a_replica_that_stops_mid_load_fails_no_request_beyond_those_in_flight(nodes, site, pg_cluster) -> None:
    database = site.url.rsplit("/", 1)[-1].split("?", 1)[0]
    for node in nodes:  # warm both nodes: their searches and article reads now hold replica connections
        for topic in TOPICS[:2]:
            assert request(node.port, "GET", f"/api/search?q={topic}").status == 200
        assert request(node.port, "GET", f"/article/{site.public_ids[0]}").status == 200
    assert {"kb", "kb search"} <= replica_sessions(pg_cluster, database)  # both kinds of read use the replica

    begin = time.monotonic()
    result: dict[str, list[Outcome]] = {}
    runner = threading.Thread(target=lambda: result.setdefault("load", load(nodes, site, begin + LOAD_SECONDS)))
    runner.start()
    try:
        time.sleep(STOP_AFTER)
        stop_began = time.monotonic()
        pg_cluster.stop_replica()
        stop_ended = time.monotonic()
    finally:
        runner.join(LOAD_SECONDS + 60)
        pg_cluster.ensure_replica_running()
    outcomes = result["load"]
    in_flight = [o for o in outcomes if o.started < stop_ended and o.ended > stop_began]
    failed = [o for o in outcomes if not o.ok]
    after = [o for o in outcomes if o.started >= stop_ended]
    print(f"{len(outcomes)} requests, {len(failed)} failed, {len(in_flight)} in flight during the "
          f"{stop_ended - stop_began:.2f} s stop, {len(after)} after it")
    assert len(outcomes) >= 50 and len(after) >= 20  # the load really ran on both sides of the stop
    assert all(o in in_flight for o in failed), [(o.what, round(o.started - stop_began, 2)) for o in failed]
    assert len(failed) <= THREADS
    assert all(o.ok for o in after)
    assert failed == []  # stricter than the issue asks: even the reads in flight were answered by the primary
