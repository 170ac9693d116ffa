"""Staff-only material never leaks to the public view, checked through the real index on every channel.

Two data directories are built from the same public articles: "mixed" adds staff articles, a staff
document and a staff FAQ entry carrying a canary word (and a staff-only category, tag, site and year);
"public" has the public articles only. An anonymous visitor of the mixed site must see exactly what a
visitor of the public-only site sees — results, totals, facets, suggestions, "Did you mean", article
pages, the FAQ, the home page and error messages — and no trace of the canary anywhere, while a
signed-in staff user (or a Bearer token) does find it. Every test runs on SQLite + Whoosh and on PostgreSQL
(`module_backend`: both sites built once per backend).
"""

from __future__ import annotations

import statistics
import time
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from bs4 import BeautifulSoup

from kb import index, users
from kb.models import Article, Section
from kb.web import create_app

CANARY = "zephyrquix"
CONTROL = "qorvaldimp"  # same length, in no document at all
STAFF_TRACES = (CANARY, "intranet.clinic.example", "escalation", "Zephyrquix Protocols", "zephyrquixtag")
PASSWORD = "correct horse battery"


def public_articles() -> list[Article]:
    def art(n: int, title: str, text: str, categories: list[str], tags: list[str], kind: str = "article",
            published: str = "2023-01-01") -> Article:
        return Article(url=f"https://clinic.example/{n}/", title=title, text=text, categories=categories, tags=tags,
                       site="clinic.example", published=published, kind=kind,
                       sections=[Section(title, f"s{n}", text)])

    return [
        art(1, "Acne treatment basics", "Acne responds to topical retinoids and benzoyl peroxide. Dosing of "
            "retinoids starts low.", ["Acne"], ["retinoids"], published="2023-01-05"),
        art(2, "Rosacea and redness", "Rosacea causes facial redness; lasers such as VBeam help.", ["Rosacea"],
            ["lasers"], published="2023-02-05"),
        art(3, "Isotretinoin for severe acne", "Isotretinoin treats severe acne. The protocol needs blood tests.",
            ["Acne"], ["isotretinoin"], published="2022-03-05"),
        art(4, "Eczema care at home", "Moisturise eczema twice a day; threshold for steroids is low. The "
            "zophyrquaz cream is a made-up public word.", ["Eczema"],
            ["moisturisers"], published="2021-04-05"),
        art(5, "How long does acne treatment take to work?", "Most acne treatments need eight to twelve weeks.",
            ["Acne"], [], kind="faq", published="2023-05-05"),
    ]


def staff_articles() -> list[Article]:
    return [
        Article(url="https://intranet.clinic.example/protocols/z/", title="Zephyrquix dosing protocol",
                text="Staff only. Zephyrquix dosing for severe acne with isotretinoin: acne acne acne. Retinoids "
                     "escalation threshold.", categories=["Zephyrquix Protocols"], tags=["zephyrquixtag"],
                site="intranet.clinic.example", audience="staff", published="2019-06-01",
                sections=[Section("Zephyrquix dosing", "dosing", "Zephyrquix dosing for severe acne.")]),
        Article(url="file:///docs/acne-escalation.md", title="Acne escalation pathway",
                text="When acne fails retinoids, escalate; zephyrquix review. Rosacea overlap.", categories=["Acne"],
                tags=["retinoids"], site="local", audience="staff", kind="document", published="2019-07-01"),
        Article(url="https://intranet.clinic.example/faq/#threshold", title="What is the zephyrquix threshold?",
                text="The zephyrquix threshold for acne escalation is two failed courses.", categories=["Acne"],
                site="intranet.clinic.example", audience="staff", kind="faq", published="2019-08-01"),
    ]


def build(site: Any, staff: bool) -> dict[str, Any]:
    """A data directory of `module_backend` (`site`) with the public articles, `staff` ones too, built and served."""
    root, paths = site.dir, site.paths
    with site.open_store() as store:
        public_ids = [store.save_article(a)[0] for a in public_articles()]
        staff_ids = [store.save_article(a)[0] for a in staff_articles()] if staff else []
        users.add_user(store, "alice", PASSWORD)
        _, token = users.create_token(store, "alice", "tests")
        index.rebuild(store, paths["index"])
    app = create_app({"DATA_DIR": str(root), "TESTING": True, "QUERY_LOG": False, "RATELIMIT_ENABLED": False})
    return {"app": app, "public_ids": public_ids, "staff_ids": staff_ids, "token": token}


@pytest.fixture(scope="module")
def world(module_backend, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The same site with and without staff material, on each backend (every test here runs on both)."""
    base = tmp_path_factory.mktemp("audience")
    mixed = build(module_backend.data_dir(base / "mixed"), staff=True)
    public = build(module_backend.data_dir(base / "public"), staff=False)
    yield {"mixed": mixed, "public": public}
    for side in (mixed, public):
        side["app"].extensions["kb"].close()


def get(app, url: str, **kwargs: Any):
    with app.test_client() as client:
        return client.get(url, **kwargs)


def body(response) -> str:
    return response.get_data(as_text=True)


def no_trace(text: str) -> None:
    lowered = text.casefold()
    for trace in STAFF_TRACES:
        assert trace.casefold() not in lowered, trace


def echoes_a_trace(params: dict[str, str] | str) -> bool:
    """Whether the request itself names staff material (pages legitimately echo what was asked)."""
    text = unquote(params if isinstance(params, str) else " ".join(params.values())).casefold()
    return any(trace.casefold() in text for trace in STAFF_TRACES) or "zephyr" in text


def results_view(response) -> bytes:
    """An /api/search answer as sent: scores and order included, since the public sub-index's BM25
    statistics come from public records alone (kb/index.py)."""
    return response.get_data()


QUERIES = [
    {"q": CANARY}, {"q": CANARY.upper()}, {"q": "zephyrquiz"}, {"q": "zephyrquax"}, {"q": "zephyr"}, {"q": f"{CANARY}~"},
    {"q": "acne"}, {"q": "isotretinoin"}, {"q": "acne dosing"}, {"q": "protocol"}, {"q": "escalation"},
    {"q": "threshold"}, {"q": "retinoids"}, {"q": "acne -rosacea"}, {"q": '"dosing protocol"'},
    {"q": "acne OR zephyrquix"}, {"q": "staff only"}, {"q": "escalaton"},
    {"category": "Acne"}, {"category": "Zephyrquix Protocols"}, {"tag": "zephyrquixtag"}, {"tag": "retinoids"},
    {"site": "intranet.clinic.example"}, {"site": "local"}, {"year": "2019"}, {"q": "acne", "year": "2019"},
    {"q": "acne", "category": "Acne", "sort": "date"}, {"q": "acne", "per_page": "1", "page": "3"},
]


# -- anonymous: exactly the public-only view --------------------------------------------------------------------

@pytest.mark.parametrize("params", QUERIES, ids=lambda p: urlencode(p))
def test_api_search_results_totals_facets_and_suggestions_match_the_public_only_index(world, params) -> None:
    url = "/api/search?" + urlencode(params)
    mixed, public = get(world["mixed"]["app"], url), get(world["public"]["app"], url)
    assert mixed.status_code == public.status_code == 200
    assert results_view(mixed) == results_view(public)
    text = body(mixed).replace(params.get("q", ""), "")  # the query itself is echoed back, nothing more
    no_trace(text)
    assert not set(world["mixed"]["staff_ids"]) & {hit["id"] for hit in mixed.get_json()["results"]}


@pytest.mark.parametrize("params", QUERIES, ids=lambda p: urlencode(p))
@pytest.mark.parametrize("sort", ["relevance", "date"])
def test_search_pages_are_identical_to_the_public_only_site(world, params, sort) -> None:
    url = "/search?" + urlencode({k: v for k, v in params.items() if k not in ("per_page", "sort")} | {"sort": sort})
    mixed, public = get(world["mixed"]["app"], url), get(world["public"]["app"], url)
    assert mixed.status_code == public.status_code
    assert body(mixed) == body(public)
    if not echoes_a_trace(params):
        no_trace(body(mixed))


@pytest.mark.parametrize("prefix", [CANARY[:2], CANARY[:4], CANARY, "acne", "acne e", "acne esc", "esc", "what is",
                                    "zephyrquix d", "retin", "thr"])
def test_suggest_matches_the_public_only_index(world, prefix: str) -> None:
    url = "/api/suggest?" + urlencode({"q": prefix, "limit": 20})
    mixed, public = get(world["mixed"]["app"], url), get(world["public"]["app"], url)
    assert mixed.get_json() == public.get_json()
    assert not any(CANARY in s.casefold() or "escalation" in s.casefold() for s in mixed.get_json()["suggestions"])


def test_did_you_mean_never_offers_a_staff_word_nor_hides_a_public_one(world) -> None:
    for typo in ("zephyrquiz", "zephyrquax"):  # one edit from the staff-only canary
        mixed = get(world["mixed"]["app"], f"/api/search?q={typo}").get_json()
        assert CANARY not in mixed["suggestions"]
        # The public look-alike (two edits away) is searched although a closer staff word exists.
        assert mixed["corrected_query"] == "zophyrquaz" and mixed["suggestions"] == []
        page = body(get(world["mixed"]["app"], f"/search?q={typo}"))
        assert 'class="corrected"' in page and CANARY not in page.casefold()


def test_canary_search_looks_exactly_like_a_search_for_a_word_nobody_wrote(world) -> None:
    app = world["mixed"]["app"]
    for path in ("/search?q=", "/api/search?q=", "/api/suggest?q=", "/search?sort=date&q="):
        canary, control = get(app, path + CANARY), get(app, path + CONTROL)
        assert canary.status_code == control.status_code
        assert body(canary).replace(CANARY, "WORD") == body(control).replace(CONTROL, "WORD"), path
        assert dict(canary.headers).keys() == dict(control.headers).keys()


def test_staff_articles_are_404_exactly_like_missing_ones(world) -> None:
    app = world["mixed"]["app"]
    missing = 99_999
    for staff_id in world["mixed"]["staff_ids"]:
        for pattern in ("/article/{}", "/api/articles/{}"):
            hidden, absent = get(app, pattern.format(staff_id)), get(app, pattern.format(missing))
            assert hidden.status_code == absent.status_code == 404
            assert body(hidden) == body(absent) and hidden.headers == absent.headers
            no_trace(body(hidden))
    for public_id in world["mixed"]["public_ids"]:
        assert get(app, f"/article/{public_id}").status_code == 200


def test_home_page_faq_and_error_pages_match_the_public_only_site(world) -> None:
    for url in ("/", "/faq", "/search?q=zephyrquix&page=999", "/api/search?q=zephyrquix&page=0",
                "/api/search?category=" + quote("Zephyrquix Protocols") + "&per_page=500", "/api/search",
                "/nothing-here", "/api/openapi.json"):
        mixed, public = get(world["mixed"]["app"], url), get(world["public"]["app"], url)
        assert mixed.status_code == public.status_code, url
        assert body(mixed) == body(public), url
        if not echoes_a_trace(url):
            no_trace(body(mixed))


def test_faq_inline_answer_is_public_only(world) -> None:
    app = world["mixed"]["app"]
    page = BeautifulSoup(body(get(app, "/search?q=" + quote("zephyrquix threshold"))), "html.parser")
    assert page.select_one(".faq-answer") is None
    page = BeautifulSoup(body(get(app, "/search?q=" + quote("how long does acne treatment take to work"))),
                         "html.parser")
    answer = page.select_one("section.faq-answer")
    assert answer is not None and "eight to twelve weeks" in answer.get_text()
    assert answer.select_one("a.source-link")["href"] == "https://clinic.example/5/"
    no_trace(str(page))


def _quartile_ms(app, urls: list[str], rounds: int = 30) -> list[float]:
    """Lower-quartile time of each URL, requests interleaved so machine load hits both alike."""
    times: list[list[float]] = [[] for _ in urls]
    with app.test_client() as client:
        for url in urls:  # warm caches on both paths alike
            client.get(url)
        for _ in range(rounds):
            for i, url in enumerate(urls):
                started = time.perf_counter()
                client.get(url)
                times[i].append((time.perf_counter() - started) * 1000)
    return [statistics.quantiles(t, n=4)[0] for t in times]


def test_timing_does_not_tell_staff_words_or_articles_apart(world) -> None:
    app = world["mixed"]["app"]
    staff_id = world["mixed"]["staff_ids"][0]
    pairs = [(f"/api/search?q={CANARY}", f"/api/search?q={CONTROL}"),
             (f"/api/suggest?q={CANARY[:4]}", f"/api/suggest?q={CONTROL[:4]}"),
             (f"/article/{staff_id}", "/article/99999"), (f"/api/articles/{staff_id}", "/api/articles/99999")]
    for hidden_url, absent_url in pairs:
        for _attempt in range(3):  # a real difference shows every time; a load spike on a shared machine not
            hidden, absent = _quartile_ms(app, [hidden_url, absent_url])
            if abs(hidden - absent) <= max(2.0, 0.35 * min(hidden, absent)):
                break
        else:
            pytest.fail(f"{hidden_url}: {hidden:.2f} ms vs {absent_url}: {absent:.2f} ms")


# -- staff: everything, marked -------------------------------------------------------------------------------------

def staff_client(app):
    client = app.test_client()
    page = client.get("/login")
    token = BeautifulSoup(body(page), "html.parser").find("input", attrs={"name": "csrf_token"})["value"]
    response = client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
    assert response.status_code == 303
    return client


def test_signed_in_staff_find_the_canary_everywhere(world) -> None:
    mixed = world["mixed"]
    with staff_client(mixed["app"]) as client:
        data = client.get(f"/api/search?q={CANARY}").get_json()
        assert data["total"] == 3 and {h["audience"] for h in data["results"]} == {"staff"}
        assert {h["id"] for h in data["results"]} == set(mixed["staff_ids"])
        acne = client.get("/api/search?q=acne").get_json()
        assert acne["total"] > get(mixed["app"], "/api/search?q=acne").get_json()["total"]
        assert "intranet.clinic.example" in [f["value"] for f in acne["facets"]["site"]]
        assert client.get("/api/search?q=zephyrquiz").get_json()["corrected_query"] == CANARY
        suggestions = client.get(f"/api/suggest?q={CANARY[:4]}").get_json()["suggestions"]
        assert any(CANARY in s.casefold() for s in suggestions)
        page = BeautifulSoup(client.get(f"/search?q={CANARY}").get_data(as_text=True), "html.parser")
        results = page.select("#results li.result")
        assert len(results) == 3 and all(r.select_one(".chip-staff") for r in results)
        page = BeautifulSoup(client.get("/search?q=" + quote("zephyrquix threshold")).get_data(as_text=True),
                             "html.parser")
        answer = page.select_one("section.faq-answer")  # the staff FAQ entry answers inline, for staff
        assert answer is not None and "two failed courses" in answer.get_text() and answer.select_one(".chip-staff")
        for staff_id in mixed["staff_ids"]:
            assert client.get(f"/article/{staff_id}").status_code == 200
            assert client.get(f"/api/articles/{staff_id}").status_code == 200
        faq = client.get("/faq").get_data(as_text=True)
        assert "What is the zephyrquix threshold?" in faq and "Staff only" in faq


def test_a_bearer_token_finds_the_canary_and_a_bad_one_finds_nothing(world) -> None:
    mixed = world["mixed"]
    good = get(mixed["app"], f"/api/search?q={CANARY}", headers={"Authorization": f"Bearer {mixed['token']}"})
    assert good.get_json()["total"] == 3
    bad = get(mixed["app"], f"/api/search?q={CANARY}", headers={"Authorization": "Bearer kb_wrong"})
    assert bad.status_code == 401
    no_trace(body(bad))
