"""Several `kb serve` nodes on one PostgreSQL database behave as one site (issue #14): real processes on 127.0.0.1.

Two nodes with their own data directories and ports share only DATABASE_URL, DATABASE_REPLICA_URLS and
KB_SECRET_KEY (as on two hosts behind a load balancer, so PROXY_HOPS=1 and each test signs in from its own
X-Forwarded-For address). A staff sign-in through the real CSRF form on one node is valid on the other, a sign-out
on one ends the session on both, a token revoked with `kb token revoke` stops working on both at once, and the
sign-in rate limit counts attempts made on either node. Then the streaming replica is stopped in the middle of a
bounded anonymous load of searches and article pages: no request fails except those in flight at that moment.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from kb.cli import cli
from kb.models import Article, Section
from tests.kbprocess import (
    Answer,
    Browser,
    Node,
    Outcome,
    free_port,
    load,
    replica_sessions,
    request,
    stop_replica_during,
)
from tests.pgcluster import PgCluster

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


@pytest.fixture(scope="module")
def nodes(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Two nodes of the site: different data directories and ports, the same database and secret key."""
    started: list[Node] = []
    try:
        for name in ("node_a", "node_b"):
            started.append(Node(tmp_path_factory.mktemp(name), free_port(), database_url=site.url,
                                replica_urls=site.replica_urls, secret_key=SECRET_KEY))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


def sign_in(browser: Browser, node: Node, password: str = PASSWORD) -> Answer:
    """The staff user signs in through `node`'s form (a wrong `password` counts against the rate limit)."""
    return browser.sign_in(node, STAFF, password)


def staff_hits(browser: Browser, node: Node) -> int:
    """How many staff-only articles `browser`'s search finds on `node` (0 for the public view)."""
    return browser.search(node, f"/api/search?q={STAFF_WORD}")["total"]


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
    assert staff_hits(browser, a) == 0 and staff_hits(browser, b) == 0  # anonymous: the public view
    signed_in = sign_in(browser, a)
    assert signed_in.status == 303, signed_in.body[:500]
    assert staff_hits(browser, b) == STAFF_ARTICLES and staff_hits(browser, a) == STAFF_ARTICLES
    copied = dict(browser.cookies)  # the signed-in cookie, as a second tab on node A still holds it
    signed_out = browser.send(b, "POST", "/logout", {"csrf_token": browser.csrf_token(b, "/")})
    assert signed_out.status == 303, signed_out.body[:500]
    assert staff_hits(browser, a) == 0
    assert staff_hits(Browser(cookies=copied), a) == 0  # the session ended in the store, not just in one cookie
    assert staff_hits(Browser(cookies=copied), b) == 0


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
        failed = sign_in(browser, (a, b)[n % 2], password="wrong password")
        assert failed.status == 200 and b"Sign-in failed" in failed.body
    for node in nodes:  # either node now refuses: it counted the other's attempts too
        token = browser.csrf_token(node, "/login")
        limited = browser.send(node, "POST", "/login", {"csrf_token": token, "username": STAFF, "password": PASSWORD})
        assert limited.status == 429 and limited.headers.get("retry-after") == "60"
    other = Browser()  # another client address still signs in: the limit is per address, not global
    assert sign_in(other, b).status == 303


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

def site_load(nodes: tuple[Node, Node], site: Site, until: float) -> list[Outcome]:
    """THREADS anonymous clients sending searches and article pages to both nodes until `until` (bounded)."""
    paths = [f"/api/search?q={quote(t)}" for t in TOPICS] + [f"/article/{i}" for i in site.public_ids[:12]]
    return load(nodes, paths, until, threads=THREADS, max_requests=MAX_REQUESTS)


def test_a_replica_that_stops_mid_load_fails_no_request_beyond_those_in_flight(nodes, site, pg_cluster) -> None:
    database = site.url.rsplit("/", 1)[-1].split("?", 1)[0]
    for node in nodes:  # warm both nodes: their searches and article reads now hold replica connections
        for topic in TOPICS[:2]:
            assert request(node.port, "GET", f"/api/search?q={topic}").status == 200
        assert request(node.port, "GET", f"/article/{site.public_ids[0]}").status == 200
    sessions = replica_sessions(pg_cluster.replica_admin_urls[0], database)
    assert {"kb", "kb search"} <= sessions  # both kinds of read use the replica

    outcomes, stop_began, stop_ended = stop_replica_during(
        pg_cluster, lambda until: site_load(nodes, site, until), LOAD_SECONDS, STOP_AFTER)
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
