"""The operator's trial of issue #14 ("Done when"), in the order an operator would type it, with real processes.

A WordPress clinic blog (tests/fixture_site.py: posts, pages, REST API, sitemaps, feed, a /staff/ area) is crawled
with `kb crawl` into PostgreSQL through node A's data directory (kb.toml names the primary and its streaming
replica, sources.toml marks /staff/ as staff), and the same blog into an embedded data directory (SQLite +
Whoosh). Two `kb serve` nodes share only DATABASE_URL, DATABASE_REPLICA_URLS and KB_SECRET_KEY. Node B answers
a set of queries with the same ranked (url, title, section) list, total, facets and correction as the embedded
backend; a staff user made with `kb user add` signs in through node A's form and is staff on node B, while an
anonymous visitor of node B sees no trace of the staff page; the replica is stopped under a load of anonymous
searches over both nodes without a failed search; and `kb check` on node A's data directory is clean afterwards.

The tests run in this order and share one crawled site (module fixtures); each still stands alone when selected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest

from tests.fixture_site import PAGES, POSTS, FixtureSite, install_default_site
from tests.kbprocess import (
    Browser,
    Node,
    free_port,
    kb_run,
    load,
    replica_sessions,
    request,
    stop_replica_during,
)
from tests.pgcluster import PgCluster, PgDatabase

pytestmark = [pytest.mark.postgresql,
              pytest.mark.skipif(sys.platform != "linux", reason="real kb serve processes: Linux only")]

SECRET_KEY = "operator-trial-secret-key-0123456789abcdef0123456789"
STAFF, PASSWORD = "receptionist", "plenty of words make a good passphrase"
STAFF_PAGE, STAFF_WORD = "/staff/handbook/", "handbook"  # the only page under /staff/, the only one with its word
LOAD_SECONDS, STOP_AFTER, THREADS = 3.0, 1.0, 4

#: What patients type, each answered by the blog: (what it exercises, /api/search parameters, the page a reader of
#: the blog expects first, if any). Expectations keep the comparison honest: two empty answers would be equal too.
QUERIES: list[tuple[str, dict[str, str], str | None]] = [
    ("a clinical word", {"q": "rosacea"}, "/2024/01/rosacea-vbeam/"),
    ("a brand as written", {"q": "VBeam"}, "/vbeam/"),
    ("the brand spelt apart", {"q": "V-Beam"}, "/vbeam/"),
    ("a lay word", {"q": "zits"}, "/2024/02/acne-scars/"),  # the vocabulary: zits are acne
    ("a typo", {"q": "sebacous glands"}, "/sebaceous-glands/"),
    ("a question", {"q": "how does a pulsed dye laser treat redness?"}, "/vbeam/"),
    ("a phrase", {"q": '"fractional co2 laser"'}, "/2024/02/acne-scars/"),
    ("a filter", {"q": "laser", "category": "Lasers"}, "/2024/01/rosacea-vbeam/"),
    ("sorted by date", {"q": "laser", "sort": "date"}, "/2024/03/laser-safety-protocol/"),
    ("a second page", {"q": "laser", "per_page": "2", "page": "2"}, None),
]


def kb(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """One `kb` command in a shell of its own: crawls without politeness delays or retries (a local blog)."""
    return kb_run(data_dir, *args, stdin=stdin, KB_CRAWL_DELAY="0", KB_TIMEOUT="5", KB_RETRIES="0")


# -- step 1: the blog, crawled into PostgreSQL through node A and into an embedded data directory ----------------

@dataclass
class Trial:
    """The crawled site: the blog, the database (primary + replica) and the two data directories crawled."""

    blog: FixtureSite
    database: PgDatabase
    node_a_dir: Path  # kb.toml: database_url and database_replica_urls
    embedded_dir: Path  # SQLite + Whoosh
    crawl_output: dict[str, str]  # "postgresql"/"embedded": what `kb crawl` printed


@pytest.fixture(scope="module")
def blog() -> Iterator[FixtureSite]:
    """The `site` fixture's WordPress blog, for the whole module (its second host must never be asked)."""
    other = FixtureSite()
    other.set("/", "<html><body><p>another site</p></body></html>")
    site = FixtureSite()
    site.other = other
    install_default_site(site)
    try:
        yield site
    finally:
        site.close()
        other.close()


@pytest.fixture(scope="module")
def trial(pg_cluster: PgCluster, blog: FixtureSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trial]:
    """`kb crawl` (sources.toml, no URL argument) into both data directories, then the replica caught up."""
    name = f"kb_operator_{os.getpid()}"
    database = pg_cluster.create_database(name)
    try:
        sources = f'[[site]]\nname = "derm-blog"\nurl = "{blog.url}/"\nstaff_paths = ["/staff/"]\n'
        node_a_dir, embedded_dir = tmp_path_factory.mktemp("node_a"), tmp_path_factory.mktemp("embedded")
        (node_a_dir / "kb.toml").write_text(f'database_url = "{database.url}"\n'
                                            f'database_replica_urls = "{",".join(database.replica_urls)}"\n',
                                            encoding="utf-8")
        output = {}
        for backend, data_dir in (("postgresql", node_a_dir), ("embedded", embedded_dir)):
            (data_dir / "sources.toml").write_text(sources, encoding="utf-8")
            crawled = kb(data_dir, "crawl")
            assert crawled.returncode == 0, crawled.stdout + crawled.stderr
            output[backend] = crawled.stdout
        pg_cluster.wait_for_replay()  # replication lag: an operator would wait a moment before searching
        yield Trial(blog, database, node_a_dir, embedded_dir, output)
    finally:
        pg_cluster.ensure_replica_running()
        pg_cluster.drop_database(name)


def test_kb_crawl_stores_the_blog_in_postgresql_as_in_the_embedded_backend(trial: Trial) -> None:
    summary = {b: [line for line in out.splitlines() if line.startswith("derm-blog:")]
               for b, out in trial.crawl_output.items()}
    assert len(summary["postgresql"]) == 1, trial.crawl_output
    assert summary["postgresql"] == summary["embedded"]  # the same pages fetched, stored, skipped and refused
    articles = len(POSTS) + len(PAGES) + 1  # and the staff handbook; drafts, noindex and robots-denied pages not
    assert f" stored {articles} (new {articles}," in summary["postgresql"][0]
    assert not (trial.node_a_dir / "kb.sqlite3").exists() and not (trial.node_a_dir / "whoosh").exists()
    assert (trial.embedded_dir / "kb.sqlite3").exists() and (trial.embedded_dir / "whoosh").is_dir()
    assert not trial.blog.other.paths()  # the crawl stayed on the blog's host


# -- step 2: two nodes of one site ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes(trial: Trial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Node A serves the crawl's data directory, node B a fresh one: same database, replica and secret key."""
    started: list[Node] = []
    try:
        for data_dir in (trial.node_a_dir, tmp_path_factory.mktemp("node_b")):
            started.append(Node(data_dir, free_port(), database_url=trial.database.url,
                                replica_urls=trial.database.replica_urls, secret_key=SECRET_KEY))
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module")
def embedded(trial: Trial) -> Iterator:
    """The embedded backend's /api/search (the document `kb search --json` prints), as the reference."""
    from kb.web import create_app

    app = create_app({"DATA_DIR": str(trial.embedded_dir), "TESTING": True, "QUERY_LOG": False})
    try:
        yield app.test_client()
    finally:
        app.extensions["kb"].close()


# -- step 3: node B answers as the embedded backend does --------------------------------------------------------

def comparable(answer: dict) -> dict:
    """What a reader sees of a search, without the backend's own scores, ids and snippets."""
    return {"results": [(r["url"], r["title"], r["anchor"]) for r in answer["results"]], "total": answer["total"],
            "facets": answer["facets"], "corrected_query": answer["corrected_query"]}


@pytest.mark.parametrize("what,params,first", QUERIES, ids=[q[0].replace(" ", "-") for q in QUERIES])
def test_node_b_answers_as_the_embedded_backend(nodes, embedded, trial: Trial, what: str, params: dict[str, str],
                                                first: str | None) -> None:
    path = "/api/search?" + urlencode(params)
    reference = embedded.get(path)
    assert reference.status_code == 200, reference.get_data(as_text=True)[:300]
    expected = comparable(reference.get_json())
    assert expected["total"] > 0 and expected["results"], f"{what}: the blog answers it on the embedded backend"
    if first is not None:
        assert expected["results"][0][0] == trial.blog.abs(first)
    assert comparable(Browser().search(nodes[1], path)) == expected


def test_the_typo_is_corrected_on_both_backends(nodes, embedded) -> None:
    path = "/api/search?" + urlencode({"q": "sebacous glands"})
    assert embedded.get(path).get_json()["corrected_query"] == "sebaceous glands"
    assert Browser().search(nodes[1], path)["corrected_query"] == "sebaceous glands"


def test_kb_search_json_in_node_a_data_directory_matches_the_embedded_command(trial: Trial) -> None:
    for query in ("V-Beam", "zits"):
        found = {}
        for backend, data_dir in (("postgresql", trial.node_a_dir), ("embedded", trial.embedded_dir)):
            result = kb(data_dir, "search", query, "--json", "--audience", "public")
            assert result.returncode == 0, result.stderr
            found[backend] = comparable(json.loads(result.stdout))
        assert found["postgresql"] == found["embedded"] and found["embedded"]["total"] > 0, query


# -- step 4: a staff sign-in on node A is valid on node B; anonymous visitors see no trace of staff pages -------

def test_a_staff_sign_in_through_node_a_is_staff_on_node_b_and_anonymous_sees_nothing(nodes, trial: Trial) -> None:
    a, b = nodes
    added = kb(trial.node_a_dir, "user", "add", STAFF, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stdout + added.stderr
    staff_search = f"/api/search?q={STAFF_WORD}"
    visitor, staff = Browser(), Browser()
    assert visitor.search(b, staff_search)["total"] == 0

    signed_in = staff.sign_in(a, STAFF, PASSWORD)
    assert signed_in.status == 303, signed_in.body[:500]
    found = staff.search(b, staff_search)
    assert [(r["url"], r["audience"]) for r in found["results"]] == [(trial.blog.abs(STAFF_PAGE), "staff")]
    article_id = found["results"][0]["id"]
    assert staff.send(b, "GET", f"/article/{article_id}").status == 200
    suggest = f"/api/suggest?q={STAFF_WORD[:5]}"
    assert STAFF_WORD in staff.send(b, "GET", suggest).json()["suggestions"]

    assert visitor.search(b, staff_search)["total"] == 0  # still nothing after staff searched for it
    for path in (f"/article/{article_id}", f"/api/articles/{article_id}"):
        assert visitor.send(b, "GET", path).status == 404, path
    assert visitor.send(b, "GET", suggest).json()["suggestions"] == []
    for words in ("staff", "laser rooms consent adverse events"):  # other words of the page: still no trace
        public = visitor.search(b, "/api/search?" + urlencode({"q": words}))
        assert trial.blog.abs(STAFF_PAGE) not in [r["url"] for r in public["results"]], words


# -- step 5: the replica stops under load; no search fails ------------------------------------------------------

def test_the_replica_stops_under_a_load_of_searches_over_both_nodes_and_no_search_fails(
        nodes, trial: Trial, pg_cluster: PgCluster) -> None:
    paths = ["/api/search?" + urlencode(params) for _what, params, _first in QUERIES]
    for node in nodes:  # warm both nodes: their searches now hold connections to the replica
        for path in paths[:3]:
            assert request(node.port, "GET", path).status == 200
    assert "kb search" in replica_sessions(pg_cluster.replica_admin_urls[0], trial.database.name)

    outcomes, stop_began, stop_ended = stop_replica_during(
        pg_cluster, lambda until: load(nodes, paths, until, threads=THREADS), LOAD_SECONDS, STOP_AFTER)
    failed = [(o.what, round(o.started - stop_began, 2)) for o in outcomes if not o.ok]
    after = [o for o in outcomes if o.started >= stop_ended]
    print(f"{len(outcomes)} searches, {len(failed)} failed, {len(after)} after the "
          f"{stop_ended - stop_began:.2f} s stop")
    assert len(outcomes) >= 40 and len(after) >= 15  # the load really ran on both sides of the stop
    assert failed == []


# -- step 6: `kb check` afterwards ------------------------------------------------------------------------------

def test_kb_check_on_node_a_is_clean_afterwards(nodes, trial: Trial) -> None:
    checked = kb(trial.node_a_dir, "check", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and not report.get("damaged")
    assert not report["missing"] and not report["orphaned"] and not report["stale"], report
    assert report["store_articles"] == report["index_documents"] > 0
    plain = kb(trial.node_a_dir, "check")
    assert plain.returncode == 0 and "missing: 0" in plain.stdout and "orphaned: 0" in plain.stdout
    assert "stale: 0" in plain.stdout
