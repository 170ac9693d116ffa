"""Non-interference: what an anonymous visitor receives does not depend on staff material at all.

One data directory, real store, real index: the public articles are indexed and every anonymous
JSON answer is recorded (search results with scores and order, totals, facet labels and counts,
"Did you mean", suggest-as-you-type, article JSON, health). Then staff documents built to disturb
exactly those answers are added, through the incremental update and through a full rebuild, and
every answer must come back byte for byte the same. The staff documents:

- repeat the public query words (BM25 document frequencies and average lengths shift with them),
- spell the public facet values differently (`ACNE`, `RETINOIDS` sort before `Acne`, `retinoids`),
- hold hundreds of staff-only words sharing a prefix with public words (suggest walks a bounded
  slice of the word list) and words one edit from public typos (spelling candidates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from kb import index, users
from kb.config import data_paths
from kb.maintenance import check
from kb.models import Article, Section
from kb.store import open_store
from kb.web import create_app

PASSWORD = "correct horse battery"
STAFF_WORD = "zephyrquix"


def public_articles() -> list[Article]:
    def art(n: int, title: str, text: str, categories: list[str], tags: list[str], published: str) -> Article:
        return Article(url=f"https://clinic.example/{n}/", title=title, text=text, categories=categories, tags=tags,
                       site="clinic.example", published=published, sections=[Section(title, f"s{n}", text)])

    return [
        art(1, "Acne treatment basics", "Acne responds to topical retinoids and benzoyl peroxide. Retinoids start "
            "low.", ["Acne"], ["retinoids"], "2023-01-05"),
        art(2, "Rosacea and redness", "Rosacea causes facial redness; lasers help. Acne can look similar.",
            ["Rosacea"], ["lasers"], "2023-02-05"),
        art(3, "Isotretinoin for severe acne", "Isotretinoin treats severe acne and acne scars.", ["Acne"],
            ["isotretinoin", "retinoids"], "2022-03-05"),
        art(4, "Eczema care at home", "Moisturise eczema twice a day. Retinoids can irritate eczema.", ["Eczema"],
            ["moisturisers"], "2021-04-05"),
        art(5, "Acne scars and lasers", "Lasers and peels soften acne scars; retinoids help too.", ["Acne"],
            ["lasers", "retinoids"], "2020-05-05"),
    ]


def staff_articles() -> list[Article]:
    prefixed = " ".join(f"reta{chr(97 + i // 26)}{chr(97 + i % 26)}x" for i in range(320))  # sort before "retinoids"
    return [
        Article(url="https://intranet.clinic.example/acne-dosing", title="Acne dosing protocol",
                text=f"Staff only. {STAFF_WORD} acne acne acne retinoids isotretinoin dosing. " + "acne " * 40,
                categories=["ACNE"], tags=["RETINOIDS"], site="intranet.clinic.example", audience="staff",
                published="2019-06-01"),
        Article(url="https://intranet.clinic.example/word-list", title="Retinoid abbreviations",
                text=prefixed + " rosacaa rosaceae eczemaa lasors", categories=["Acne Protocols"],
                tags=["retinoids"], site="intranet.clinic.example", audience="staff", published="2019-07-01"),
        Article(url="file:///docs/acne-escalation.md", title="Acne escalation pathway",
                text="When acne fails retinoids, escalate. Rosacea overlap. Lasers for acne scars.",
                categories=["Acne"], tags=["lasers"], site="local", audience="staff", kind="document"),
    ]


QUERIES: list[dict[str, str]] = [
    {"q": "acne"}, {"q": "acne treatment"}, {"q": "retinoids"}, {"q": "what is acne"}, {"q": '"acne scars"'},
    {"q": "acne -rosacea"}, {"q": "isotretinoin dosing"}, {"q": "acne", "sort": "date"}, {"q": "lasers OR eczema"},
    {"category": "Acne"}, {"tag": "retinoids"}, {"q": "acne", "per_page": "2", "page": "2"},
    {"q": "rosacia"}, {"q": "eczma"}, {"q": "lasors"}, {"q": STAFF_WORD}, {"q": "retinoidz acne"},
    {"q": " ".join(f"qx{chr(97 + i)}vormp" for i in range(26))},  # many unknown words: bounded spelling work
]
PREFIXES = ["a", "ac", "acne", "acne t", "ret", "reti", "ros", "las", "zeph", "e"]


def anonymous_urls(public_ids: list[int]) -> list[str]:
    urls = ["/api/search?" + urlencode(q) for q in QUERIES]
    urls += ["/api/suggest?" + urlencode({"q": p, "limit": 20}) for p in PREFIXES]
    urls += [f"/api/articles/{i}" for i in public_ids] + ["/api/articles/99999", "/api/openapi.json"]
    urls += ["/search?" + urlencode(q) for q in QUERIES[:6]]  # the HTML results page shows the same data
    return urls


def make_app(data_dir: Path) -> Any:
    return create_app({"DATA_DIR": str(data_dir), "TESTING": True, "QUERY_LOG": False, "RATELIMIT_ENABLED": False})


def answers(data_dir: Path, urls: list[str]) -> dict[str, tuple[int, bytes]]:
    """Status and exact body of each anonymous request, from a freshly started app."""
    app = make_app(data_dir)
    try:
        with app.test_client() as client:
            out = {}
            for url in urls:
                response = client.get(url)
                out[url] = (response.status_code, response.get_data())
            return out
    finally:
        app.extensions["kb"].close()


#: Tests marked so run on SQLite + Whoosh and on PostgreSQL (store and search generation in the test database).
BOTH_BACKENDS = pytest.mark.parametrize(
    "data_backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True)


@pytest.fixture
def public_site(data_backend) -> dict[str, Any]:
    """A data directory whose store and index hold the public articles only, plus a staff user."""
    data_dir = data_backend.dir
    paths = data_paths(data_dir)
    with data_backend.open_store() as store:
        public_ids = [store.save_article(a)[0] for a in public_articles()]
        users.add_user(store, "alice", PASSWORD)
        _, token = users.create_token(store, "alice", "tests")
        index.rebuild(store, paths["index"])
    urls = anonymous_urls(public_ids)
    return {"dir": data_dir, "paths": paths, "urls": urls, "token": token, "backend": data_backend,
            "before": answers(data_dir, urls + ["/healthz"])}


def add_staff(site: dict[str, Any]) -> list[int]:
    with site["backend"].open_store() as store:
        return [store.save_article(a)[0] for a in staff_articles()]


def assert_same(before: dict[str, tuple[int, bytes]], after: dict[str, tuple[int, bytes]]) -> None:
    assert after.keys() == before.keys()
    for url, (status, body) in before.items():
        assert status == 200 or url.endswith("/99999"), (url, status)
        assert after[url][0] == status, url
        assert after[url][1] == body, url


def staff_get(data_dir: Path, token: str, url: str) -> dict[str, Any]:
    app = make_app(data_dir)
    try:
        with app.test_client() as client:
            return client.get(url, headers={"Authorization": f"Bearer {token}"}).get_json()
    finally:
        app.extensions["kb"].close()


@BOTH_BACKENDS
def test_anonymous_answers_are_byte_identical_after_staff_documents_arrive_by_update(public_site) -> None:
    add_staff(public_site)
    with public_site["backend"].open_store() as store:
        assert index.update(store, public_site["paths"]["index"]) == (3, 0)
    # Whoosh updates its generation in place, so health is the same too; PostgreSQL swaps in a new one.
    health = ["/healthz"] if public_site["backend"].url is None else []
    after = answers(public_site["dir"], public_site["urls"] + health)
    assert_same({u: a for u, a in public_site["before"].items() if u in after}, after)
    # The staff view does see them, so the staff documents were indexed and would have disturbed the answers.
    staff = staff_get(public_site["dir"], public_site["token"], "/api/search?q=acne")
    anonymous = json.loads(public_site["before"]["/api/search?q=acne"][1])
    assert staff["total"] == anonymous["total"] + 3
    assert [h["score"] for h in staff["results"] if h["audience"] == "public"] != [
        h["score"] for h in anonymous["results"]]  # combined statistics for staff, public ones for patients
    assert "intranet.clinic.example" in [f["value"] for f in staff["facets"]["site"]]
    assert staff_get(public_site["dir"], public_site["token"], f"/api/search?q={STAFF_WORD}")["total"] == 1


@BOTH_BACKENDS
def test_anonymous_answers_are_byte_identical_after_a_full_rebuild_with_staff_documents(public_site) -> None:
    add_staff(public_site)
    with public_site["backend"].open_store() as store:
        assert index.rebuild(store, public_site["paths"]["index"]) == 8
    after = answers(public_site["dir"], public_site["urls"])
    assert_same({u: a for u, a in public_site["before"].items() if u != "/healthz"}, after)


def test_a_record_moving_between_audiences_changes_sub_index_both_ways(public_site) -> None:
    staff_ids = add_staff(public_site)
    paths = public_site["paths"]
    search, article = "/api/search?q=dosing", f"/api/articles/{staff_ids[0]}"
    with open_store(paths["store"]) as store:
        index.update(store, paths["index"])
        assert answers(public_site["dir"], [search, article])[article][0] == 404
        moved = store.get_article(staff_ids[0])
        moved.audience = "public"  # published for patients: now they find it
        store.save_article(moved)
        assert index.update(store, paths["index"]) == (1, 0)
        now = answers(public_site["dir"], [search, article])
        assert json.loads(now[search][1])["total"] == 1 and now[article][0] == 200
        assert index.indexed_hashes(paths["index"])[staff_ids[0]] == moved.content_hash  # in one sub-index only
        moved.audience = "staff"  # and back: it leaves the public index
        store.save_article(moved)
        assert index.update(store, paths["index"]) == (1, 0)
        again = answers(public_site["dir"], [search, article])
        assert json.loads(again[search][1])["total"] == 0 and again[article][0] == 404
        assert index.indexed_hashes(paths["index"])[staff_ids[0]] == moved.content_hash
        assert check(store, paths["index"])["ok"]
    assert staff_get(public_site["dir"], public_site["token"], search)["total"] == 1


def test_anonymous_requests_open_the_public_sub_index_only(public_site) -> None:
    add_staff(public_site)
    with open_store(public_site["paths"]["store"]) as store:
        index.update(store, public_site["paths"]["index"])
    app = make_app(public_site["dir"])
    try:
        with app.test_client() as client:
            for url in public_site["urls"]:
                client.get(url)
            searcher = app.extensions["kb"].searcher()
            generation = index.current_generation(public_site["paths"]["index"])
            assert [s.dirs for s in searcher._states.values()] == [[generation / "public"]]
            assert client.get("/api/search?q=acne",
                              headers={"Authorization": f"Bearer {public_site['token']}"}).get_json()["total"] == 7
            assert sorted(searcher._states) == [("public",), ("public", "staff")]
    finally:
        app.extensions["kb"].close()


# -- a record that leaves the public sub-index leaves its statistics too --------------------------------

MOVED_WORDS = ("tranexamic", "melasma")  # only the moving record holds them


def moving_article() -> Article:
    text = ("Tranexamic acid lightens melasma. Tranexamic acid tablets and acne retinoids together; "
            "melasma returns without sunscreen. ") * 3
    return Article(url="https://clinic.example/melasma/", title="Tranexamic acid for melasma", text=text,
                   categories=["Pigment"], tags=["tranexamic", "retinoids"], site="clinic.example",
                   published="2022-09-09", sections=[Section("Tranexamic acid for melasma", "tx", text)])


def site_with_moving_record(data_dir: Path, audience: str) -> tuple[dict[str, Path], list[int], int]:
    """A data directory with the public articles and the moving record (saved third) as `audience`, built fresh."""
    data_dir.mkdir()
    paths = data_paths(data_dir)
    articles = public_articles()
    moving = moving_article()
    moving.audience = audience
    with open_store(paths["store"]) as store:
        ids = [store.save_article(a)[0] for a in articles[:2]]
        moved_id = store.save_article(moving)[0]
        ids += [store.save_article(a)[0] for a in articles[2:]]
        index.rebuild(store, paths["index"])
    return paths, ids, moved_id


MOVE_QUERIES: list[dict[str, str]] = [
    {"q": "tranexamic"}, {"q": "melasma"}, {"q": "acne"}, {"q": "retinoids"}, {"q": "acne retinoids"},
    {"q": "tranexamik"}, {"q": "melasm"}, {"q": "acid"}, {"category": "Acne"}, {"q": "sunscreen"},
]
MOVE_PREFIXES = ["tra", "mel", "ac", "ret", "a", "s"]


def test_a_record_moved_from_public_to_staff_leaves_no_trace_in_anonymous_answers(tmp_path: Path) -> None:
    moved_paths, public_ids, moved_id = site_with_moving_record(tmp_path / "moved", "public")
    urls = ["/api/search?" + urlencode(q) for q in MOVE_QUERIES]
    urls += ["/api/suggest?" + urlencode({"q": p, "limit": 20}) for p in MOVE_PREFIXES]
    urls += [f"/api/articles/{i}" for i in public_ids] + [f"/api/articles/{moved_id}"]
    while_public = answers(tmp_path / "moved", urls)
    assert json.loads(while_public["/api/search?q=tranexamic"][1])["total"] == 1  # R was findable
    with open_store(moved_paths["store"]) as store:
        moving = store.get_article(moved_id)
        moving.audience = "staff"
        store.save_article(moving)
        assert index.update(store, moved_paths["index"]) == (1, 0)
    _, fresh_ids, fresh_moved = site_with_moving_record(tmp_path / "fresh", "staff")
    assert (fresh_ids, fresh_moved) == (public_ids, moved_id)  # same store ids, so article JSON compares too
    after_move, never_public = answers(tmp_path / "moved", urls), answers(tmp_path / "fresh", urls)
    for url in urls:
        assert after_move[url] == never_public[url], url
    assert after_move["/api/search?q=acne"] != while_public["/api/search?q=acne"]  # statistics did change
    assert json.loads(after_move["/api/search?q=tranexamic"][1])["total"] == 0


# -- site boilerplate: which paragraphs are stripped from public pages is learned from public pages only -----

SHARED_PARAGRAPH = "Quillfeather consultation evenings at our Riverside clinic, every Tuesday, for new patients."
BOILERPLATE_SITE = "derm.example"


def boilerplate_world(data_dir: Path, *, with_staff: bool) -> list[int]:
    """A data directory with 4 public pages of one site, 2 sharing a paragraph (below the 3-page threshold), and,
    `with_staff`, 2 staff pages of the same site repeating it (4 of 6 pages: above it); boilerplate learned as
    a crawl learns it, index rebuilt. The public ids."""
    data_dir.mkdir()
    paths = data_paths(data_dir)

    def page(n: int, title: str, own: str, audience: str = "public", shared: bool = False) -> Article:
        text = "\n\n".join((own, SHARED_PARAGRAPH) if shared else (own,))
        return Article(url=f"https://{BOILERPLATE_SITE}/{'protocols/' * (audience == 'staff')}{n}/", title=title,
                       text=text, site=BOILERPLATE_SITE, audience=audience, sections=[Section("", "", text, 0)])

    public = [page(1, "Acne basics", "Acne responds to topical retinoids; start low and go slow.", shared=True),
              page(2, "Laser for acne scars", "Laser resurfacing softens acne scars over several sessions.", shared=True),
              page(3, "Rosacea triggers", "Heat, spicy food and alcohol trigger rosacea flushing."),
              page(4, "Eczema at home", "Moisturise eczema twice a day, acne creams can sting.")]
    staff = [page(5, "Laser settings", "Fluence settings for the acne laser protocol.", "staff", True),
             page(6, "Triage script", "Phone triage script for acne referrals.", "staff", True)]
    with open_store(paths["store"]) as store:
        ids = [store.save_article(a, source="derm")[0] for a in public]
        staff_ids = [store.save_article(a, source="derm")[0] for a in staff] if with_staff else []
        store.refresh_boilerplate(BOILERPLATE_SITE, min_share=0.5, min_pages=3)  # the configured defaults
        for staff_id in staff_ids:  # staff pages do make it staff boilerplate: the attack's condition holds
            assert SHARED_PARAGRAPH not in store.get_article(staff_id).text
        index.rebuild(store, paths["index"])
    return ids


def test_staff_pages_repeating_a_public_paragraph_do_not_change_anonymous_answers(tmp_path: Path) -> None:
    """Attack #12: staff pages pushing a public paragraph over the boilerplate threshold stripped it for everyone."""
    without_ids = boilerplate_world(tmp_path / "without", with_staff=False)
    with_ids = boilerplate_world(tmp_path / "with", with_staff=True)
    assert with_ids == without_ids
    urls = ["/api/search?" + urlencode({"q": q}) for q in ("riverside", "quillfeather", "consultation", "acne",
                                                           "laser", "tuesday patients")]
    urls += ["/api/suggest?" + urlencode({"q": p}) for p in ("riv", "quil", "cons", "ac", "la")]
    urls += [f"/api/articles/{i}" for i in without_ids]
    without, with_staff = answers(tmp_path / "without", urls), answers(tmp_path / "with", urls)
    for url in urls:
        assert with_staff[url] == without[url], url
    assert json.loads(without["/api/search?q=riverside"][1])["total"] == 2  # the public paragraph stays findable
    assert SHARED_PARAGRAPH in json.loads(with_staff[f"/api/articles/{with_ids[0]}"][1])["text"]
