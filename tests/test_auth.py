"""kb.web.auth through the app: sign-in and sign-out, CSRF, session rotation, cookie flags, brute-force limit,
no user enumeration (message or timing), Bearer tokens, staff_required, caching headers and the audit log."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from bs4 import BeautifulSoup
from werkzeug.security import generate_password_hash

from kb import users
from kb.config import data_paths
from kb.errors import ConfigError
from kb.store import Store, open_store
from kb.web import create_app
from kb.web.auth import current_audiences, safe_next, staff_required
from tests.fakes import FakeSearcher

PASSWORD = "correct horse battery"


@pytest.fixture
def make_app(data_dir: Path):
    def make(searcher: Any = None, **config: Any):
        app = create_app({"DATA_DIR": str(data_dir), "TESTING": True, "SEARCHER": searcher or FakeSearcher(),
                          **config})
        return app

    return make


@pytest.fixture
def alice(store: Store) -> users.User:
    return users.add_user(store, "alice", PASSWORD)


def csrf_of(response) -> str:
    field = BeautifulSoup(response.get_data(as_text=True), "html.parser").find("input", attrs={"name": "csrf_token"})
    assert field is not None and field.get("value")
    return field["value"]


def sign_in(client, name: str = "alice", password: str = PASSWORD, *, next: str | None = None, **kwargs: Any):
    page = client.get("/login" + (f"?next={quote(next)}" if next else ""), **kwargs)
    form = BeautifulSoup(page.get_data(as_text=True), "html.parser").select_one("form.login-form")
    data = {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}
    data.update(username=name, password=password)
    return client.post("/login", data=data, **kwargs)


def sid_of(client) -> str | None:
    with client.session_transaction() as sess:
        return sess.get("sid")


# -- the sign-in page and form ---------------------------------------------------------------------------------

def test_login_page_is_an_accessible_form_with_a_csrf_token(make_app) -> None:
    with make_app().test_client() as client:
        response = client.get("/login")
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
        page = BeautifulSoup(response.get_data(as_text=True), "html.parser")
        form = page.select_one("form.login-form")
        assert form["method"] == "post" and form["action"] == "/login"
        assert page.select_one("label[for=username]") and page.select_one("input#username")["autocomplete"] == "username"
        assert page.select_one("input#password")["type"] == "password"
        assert page.select_one("input#password")["autocomplete"] == "current-password"
        assert len(csrf_of(response)) > 20


def test_sign_in_redirects_marks_staff_and_sign_out_ends_it(make_app, alice) -> None:
    searcher = FakeSearcher()
    with make_app(searcher).test_client() as client:
        anonymous = client.get("/").get_data(as_text=True)
        assert 'href="/login"' in anonymous and "signed in as" not in anonymous
        response = sign_in(client, next="/search?q=acne")
        assert response.status_code == 303 and response.headers["Location"] == "/search?q=acne"
        page = client.get("/")
        soup = BeautifulSoup(page.get_data(as_text=True), "html.parser")
        assert "signed in as alice" in soup.get_text(" ", strip=True)
        logout = soup.select_one("form.logout-form")
        assert logout["method"] == "post" and logout.select_one("input[name=csrf_token]")["value"]
        client.get("/search?q=acne")
        assert searcher.calls[-1][1]["audiences"] == ("public", "staff")
        old_cookie = client.get_cookie("session").value
        out = client.post("/logout", data={"csrf_token": logout.select_one("input[name=csrf_token]")["value"]})
        assert out.status_code == 303 and out.headers["Location"] == "/"
        client.get("/search?q=acne")
        assert searcher.calls[-1][1]["audiences"] == ("public",)
        # A copy of the signed-in cookie is worthless after signing out: the session id died in the store.
        client.set_cookie("session", old_cookie)
        client.get("/search?q=acne")
        assert searcher.calls[-1][1]["audiences"] == ("public",)
        assert client.get("/logout").status_code == 405


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x",
                                    "evil", "/ok\r\nSet-Cookie: x=1"])
def test_next_never_leaves_the_site(make_app, alice, target: str) -> None:
    with make_app().test_client() as client:
        response = sign_in(client, next=target)
        assert response.status_code == 303 and response.headers["Location"] == "/"


def test_safe_next_keeps_local_paths(make_app) -> None:
    with make_app().test_request_context("/"):
        assert safe_next("/faq?x=1#top") == "/faq?x=1#top"
        assert safe_next(None) == "/" and safe_next("") == "/"


# -- CSRF ------------------------------------------------------------------------------------------------------

def test_form_posts_without_a_valid_csrf_token_are_refused(make_app, alice) -> None:
    app = make_app()
    assert app.config.get("WTF_CSRF_ENABLED", True)
    with app.test_client() as client:
        client.get("/login")
        missing = client.post("/login", data={"username": "alice", "password": PASSWORD})
        assert missing.status_code == 400 and "did not come from this site" in missing.get_data(as_text=True)
        assert sid_of(client) is None
        forged = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"})
        assert forged.status_code == 400 and sid_of(client) is None
    with app.test_client() as other, app.test_client() as client:
        token = csrf_of(other.get("/login"))  # a valid token, but of another session
        client.get("/login")
        stolen = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
        assert stolen.status_code == 400 and sid_of(client) is None
    with app.test_client() as client:
        assert sign_in(client).status_code == 303
        assert client.post("/logout").status_code == 400  # no token: still signed in
        assert sid_of(client) and "signed in as" in client.get("/").get_data(as_text=True)


# -- sessions and cookies --------------------------------------------------------------------------------------

def test_session_id_changes_on_sign_in(make_app, alice, store: Store) -> None:
    with make_app().test_client() as client:
        with client.session_transaction() as sess:
            sess["sid"] = "planted-by-an-attacker"
        before = client.get_cookie("session").value
        sign_in(client)
        first = sid_of(client)
        assert first and first != "planted-by-an-attacker"
        assert client.get_cookie("session").value != before
        assert users.session_user(store, "planted-by-an-attacker") is None
        sign_in(client)
        second = sid_of(client)
        assert second != first
        assert users.session_user(store, first) is None and users.session_user(store, second).name == "alice"


def test_session_cookie_flags(make_app, alice) -> None:
    with make_app().test_client() as client:
        sign_in(client)
        cookie = client.get_cookie("session")
        assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
        lifetime = cookie.expires.timestamp() - time.time()
        assert 11 * 3600 < lifetime <= 12 * 3600 + 60  # SESSION_HOURS, not Flask's 31 days
    with make_app().test_client() as client:
        header = client.get("/login", base_url="https://kb.example").headers["Set-Cookie"]
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header
    with make_app(SECURE_COOKIES="true").test_client() as client:
        assert "Secure" in client.get("/login").headers["Set-Cookie"]
    with make_app(SECURE_COOKIES="false").test_client() as client:
        assert "Secure" not in client.get("/login", base_url="https://kb.example").headers["Set-Cookie"]
    with pytest.raises(ConfigError, match="SECURE_COOKIES"):
        make_app(SECURE_COOKIES="sometimes")


def test_behind_a_proxy_forwarded_https_and_address_are_used(make_app, alice) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    with make_app(PROXY_HOPS=1).test_client() as client:
        assert "Secure" in client.get("/login", headers=forwarded).headers["Set-Cookie"]
    with make_app().test_client() as client:  # without PROXY_HOPS the headers are not trusted
        assert "Secure" not in client.get("/login", headers=forwarded).headers["Set-Cookie"]


def test_password_change_and_removal_end_web_sessions(make_app, alice, store: Store) -> None:
    with make_app().test_client() as client:
        sign_in(client)
        users.set_password(store, "alice", "a different long password")
        assert "signed in as" not in client.get("/").get_data(as_text=True)
        assert sid_of(client) is None
        sign_in(client, password="a different long password")
        assert "signed in as" in client.get("/").get_data(as_text=True)
        users.remove_user(store, "alice")
        assert "signed in as" not in client.get("/").get_data(as_text=True)


def test_signed_in_pages_are_never_cached_by_shared_caches(make_app, alice) -> None:
    with make_app().test_client() as client:
        anonymous = client.get("/")
        assert "no-store" not in anonymous.headers.get("Cache-Control", "") and "Cookie" in anonymous.headers["Vary"]
        sign_in(client)
        for url in ("/", "/search?q=acne", "/api/search?q=acne", "/faq"):
            response = client.get(url)
            assert response.headers["Cache-Control"] == "private, no-store", url
            assert "Cookie" in response.headers["Vary"], url


# -- no enumeration, brute force -------------------------------------------------------------------------------

def test_unknown_user_and_wrong_password_look_the_same(make_app, alice) -> None:
    with make_app().test_client() as client:
        wrong_password = sign_in(client, "alice", "wrong password!")
        unknown_user = sign_in(client, "zelda", "wrong password!")
        assert wrong_password.status_code == unknown_user.status_code == 200
        token = csrf_of(wrong_password)
        bodies = [r.get_data(as_text=True).replace(csrf_of(r), "TOKEN") for r in (wrong_password, unknown_user)]
        assert bodies[0].replace("alice", "NAME") == bodies[1].replace("zelda", "NAME")
        assert "user name or password is not right" in bodies[0] and token
        assert sid_of(client) is None


def test_a_wrong_guess_takes_as_long_for_unknown_users(make_app, alice) -> None:
    app = make_app(RATELIMIT_ENABLED=False)
    with app.test_client() as client:
        token = csrf_of(client.get("/login"))
        for _attempt in range(3):  # a real difference shows every time; a load spike on a shared machine not
            timings: dict[str, list[float]] = {"alice": [], "nobody": []}
            for _ in range(6):
                for name in timings:
                    started = time.perf_counter()
                    response = client.post("/login", data={"csrf_token": token, "username": name,
                                                           "password": "wrong password!"})
                    timings[name].append(time.perf_counter() - started)
                    assert response.status_code == 200
            known, unknown = statistics.median(timings["alice"]), statistics.median(timings["nobody"])
            # One scrypt check is ~tens of ms; skipping it for unknown names makes them many times faster.
            if 0.6 < unknown / known < 1.6:
                break
        else:
            pytest.fail(f"wrong password {known * 1000:.1f} ms, unknown user {unknown * 1000:.1f} ms")


def test_eleventh_failed_sign_in_within_a_minute_is_refused(make_app, alice) -> None:
    with make_app().test_client() as client:
        token = csrf_of(client.get("/login"))
        for n in range(10):
            response = client.post("/login", data={"csrf_token": token, "username": "alice", "password": f"wrong {n}!!!!"})
            assert response.status_code == 200, n
        refused = client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        assert "Too many failed sign-in attempts" in refused.get_data(as_text=True)
        assert sid_of(client) is None  # even the right password waits out the minute
        other = client.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD},
                            environ_base={"REMOTE_ADDR": "192.0.2.9"})
        assert other.status_code == 303  # another address has its own budget
        assert client.get("/login").status_code == 200  # the form itself stays reachable


def test_successful_sign_ins_do_not_use_up_the_limit(make_app, alice) -> None:
    with make_app().test_client() as client:
        for _ in range(12):
            assert sign_in(client).status_code == 303


def test_forwarded_addresses_get_separate_budgets_behind_a_proxy(make_app, alice) -> None:
    with make_app(PROXY_HOPS=1).test_client() as client:
        token = csrf_of(client.get("/login"))
        data = {"csrf_token": token, "username": "alice", "password": "wrong password!"}
        for _ in range(11):
            last = client.post("/login", data=data, headers={"X-Forwarded-For": "198.51.100.1"})
        assert last.status_code == 429
        assert client.post("/login", data=data, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200


def test_the_limit_is_shared_by_workers_and_outlives_a_restart(make_app, alice) -> None:
    one, two = make_app().test_client(), make_app().test_client()  # two workers' apps over one data directory
    forms = [(one, csrf_of(one.get("/login"))), (two, csrf_of(two.get("/login")))]
    for n in range(10):
        client, token = forms[n % 2]
        wrong = client.post("/login", data={"csrf_token": token, "username": "alice", "password": f"wrong {n}!!!!"})
        assert wrong.status_code == 200, n
    for client, token in forms:
        assert client.post("/login", data={"csrf_token": token, "username": "alice",
                                           "password": PASSWORD}).status_code == 429
    with make_app().test_client() as restarted:
        refused = restarted.post("/login", data={"csrf_token": csrf_of(restarted.get("/login")), "username": "alice",
                                                 "password": PASSWORD})
        assert refused.status_code == 429 and "Too many failed sign-in attempts" in refused.get_data(as_text=True)


def test_old_hash_is_upgraded_when_signing_in_on_the_web(make_app, alice, store: Store) -> None:
    store.db.execute("UPDATE users SET password_hash = ?", (generate_password_hash(PASSWORD, "pbkdf2:sha256:1000"),))
    with make_app().test_client() as client:
        assert sign_in(client).status_code == 303
    assert store.db.execute("SELECT password_hash FROM users").fetchone()[0].startswith(users.PASSWORD_METHOD)


# -- API tokens ------------------------------------------------------------------------------------------------

def test_bearer_tokens_give_scripts_the_staff_view(make_app, alice, store: Store) -> None:
    token, secret = users.create_token(store, "alice", "script")
    searcher = FakeSearcher()
    with make_app(searcher).test_client() as client:
        assert client.get("/api/search?q=acne", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert searcher.calls[-1][1]["audiences"] == ("public", "staff")
        client.get("/api/suggest?q=acn", headers={"Authorization": f"bearer {secret}"})
        assert searcher.calls[-1][1]["audiences"] == ("public", "staff")
        client.get("/api/search?q=acne")
        assert searcher.calls[-1][1]["audiences"] == ("public",)
        client.get("/search?q=acne", headers={"Authorization": f"Bearer {secret}"})  # pages ignore tokens
        assert searcher.calls[-1][1]["audiences"] == ("public",)
        for header in (f"Bearer {secret}x", "Bearer ", f"Basic {secret}", "Bearer kb_nonsense"):
            before = len(searcher.calls)
            response = client.get("/api/search?q=acne", headers={"Authorization": header})
            assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.get_json()["error"]["status"] == 401 and len(searcher.calls) == before
        users.revoke_token(store, token.id)
        assert client.get("/api/search?q=acne", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_signed_in_staff_get_staff_suggestions_in_the_browser(make_app, alice) -> None:
    searcher = FakeSearcher()
    with make_app(searcher).test_client() as client:
        sign_in(client)
        client.get("/api/suggest?q=acn")
        assert searcher.calls[-1][1]["audiences"] == ("public", "staff")


def test_staff_required_guards_pages_and_api(make_app, alice) -> None:
    app = make_app()
    app.add_url_rule("/staff-probe", "staff_probe", staff_required(lambda: "staff only"))
    app.add_url_rule("/api/staff-probe", "api_staff_probe", staff_required(lambda: "staff only"))
    with app.test_client() as client:
        page = client.get("/staff-probe")
        assert page.status_code == 303 and page.headers["Location"] == "/login?next=/staff-probe"
        api = client.get("/api/staff-probe")
        assert api.status_code == 401 and api.get_json()["error"]["status"] == 401
        sign_in(client)
        assert client.get("/staff-probe").get_data(as_text=True) == "staff only"
        assert client.get("/api/staff-probe").status_code == 200


def test_current_audiences_outside_a_request_is_public() -> None:
    assert current_audiences() == ("public",)


# -- audit -----------------------------------------------------------------------------------------------------

def test_sign_ins_failures_and_token_use_are_audited_without_secrets(make_app, alice, store: Store) -> None:
    _, secret = users.create_token(store, "alice")
    with make_app().test_client() as client:
        sign_in(client, "alice", "wrong password!")
        sign_in(client, "mallory", "wrong password!")
        sign_in(client)
        client.post("/logout", data={"csrf_token": csrf_of(client.get("/login"))})
        client.get("/api/search?q=private+patient+words", headers={"Authorization": f"Bearer {secret}"})
    rows = list(reversed(users.recent_audit(store)))
    events = [(r["event"], r["user"]) for r in rows]
    assert events[-5:] == [("login_failed", "alice"), ("login_failed", ""), ("login", "alice"), ("logout", "alice"),
                           ("token_used", "alice")]
    assert "unknown user" in rows[-4]["detail"] and "mallory" not in rows[-4]["detail"]
    assert rows[-3]["detail"].startswith("from ")
    text = " ".join(f"{r['user']} {r['detail']}" for r in rows)
    assert PASSWORD not in text and "wrong password" not in text and secret not in text
    assert "/api/search" in rows[-1]["detail"] and "patient" not in text
    with open_store(data_paths(store.path.parent)["store"]) as other:
        assert users.recent_audit(other, 1)[0]["event"] == "token_used"
