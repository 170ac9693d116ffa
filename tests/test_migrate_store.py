"""`kb migrate-store --to postgresql://…`: a real SQLite data directory moves onto a real PostgreSQL database with
every table (ids kept), then `kb check`, sign-in, API tokens and article pages work there; a second run refuses
without --force; the URL's password never shows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from kb import users
from kb.cli import cli
from kb.config import data_paths
from kb.models import Article, Section
from kb.store import Store, open_store
from kb.store.base import TRANSFER_TABLES
from kb.store.transfer import copy_store, shown_url
from kb.web import create_app
from tests.texts import ARTICLE, REPOST_FOOTER, REPOST_HEADER

pg = pytest.mark.postgresql

PASSWORD = "correct horse battery"
CTA = "Book a consultation today with our friendly dermatology team at Riverside Clinic."


def _page(n: int, audience: str = "public", kind: str = "article") -> Article:
    word = "".join(chr(ord("a") + int(d)) for d in str(n))  # digits normalise away in fingerprints
    text = f"Acne page {word} explains retinoids and topic {word} in a sentence nobody else repeats.\n\n{CTA}"
    url = f"https://clinic.example/p{n}/" + ("#q1" if kind == "faq" else "")
    return Article(url=url, title=f"Acne topic {word}", text=text, site="clinic.example", audience=audience,
                   kind=kind, categories=["Acne"], tags=["retinoids"],
                   sections=[Section("Treatment", "treatment", text, 2, html=f"<p>Acne <b>{word}</b></p>")])


def _copy(host: str, text: str = ARTICLE) -> Article:
    return Article(url=f"https://{host}/rosacea/", title="Rosacea: triggers and laser treatment", text=text,
                   site=host, sections=[Section("Triggers", "triggers", text[:200])])


@pytest.fixture
def sqlite_dir(data_dir: Path) -> dict[str, Any]:
    """A data directory whose SQLite store holds one of everything that is state; what a test checks afterwards."""
    with open_store(data_paths(data_dir)["store"]) as store:
        ids = [store.save_article(_page(n, "staff" if n == 3 else "public"), source="clinic")[0] for n in range(5)]
        faq = store.save_article(_page(7, kind="faq"), source="clinic")[0]
        head = store.save_article(_copy("clinic-a.example"), source="a")[0]
        dup = store.save_article(_copy("partner-b.example", REPOST_HEADER + ARTICLE + REPOST_FOOTER), source="b")[0]
        assert store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)[0] == 1
        store.record_page("https://clinic.example/p0/", source="clinic", status=200, article_id=ids[0], etag='"e1"')
        store.put_raw("https://clinic.example/p0/", b"<html>\x00raw bytes\xff</html>", "text/html")
        store.finish_crawl(store.start_crawl("clinic"), {"fetched": 5})
        store.set_meta("audience_rules:clinic", "[1]")
        users.add_user(store, "alice", PASSWORD)
        users.add_user(store, "bob", PASSWORD + "!")
        kept, kept_secret = users.create_token(store, "alice", "script")
        gone, gone_secret = users.create_token(store, "alice", "old")
        users.revoke_token(store, gone.id)
        sid = users.start_session(store, users.get_user(store, "alice"))
        now = time.time()
        store.begin_login_attempt("203.0.113.9", at=now, since=now - 60, limit=5)
        for q in ("acne", "rosacea", None):
            store.add_query(q, 3, 1.5, "public", at="2030-01-01T00:00:00+00:00", prune_before="2000-01-01", wait=1)
        counts = store.transfer_counts()
    return {"dir": data_dir, "ids": ids, "faq": faq, "head": head, "dup": dup, "kept": kept_secret,
            "gone": gone_secret, "sid": sid, "counts": counts}


@pytest.fixture
def pg_url(pg_database):
    """A fresh empty database; every pool closed before it is dropped."""
    from kb.store.postgres_pool import close_pools
    from kb.store.postgres_search import close_search_pool

    try:
        yield pg_database.url
    finally:
        close_search_pool(pg_database.url)
        close_pools()


def _migrate(runner, data_dir: Path, url: str, *extra: str):
    return runner.invoke(cli, ["--data-dir", str(data_dir), "migrate-store", "--to", url, *extra])


def _rows(store: Store) -> dict[str, list[dict[str, Any]]]:
    return {t: [r for batch in store.export_rows(t) for r in batch] for t in TRANSFER_TABLES}


@pg
def test_every_table_moves_with_ids_and_the_site_works_on_postgresql(sqlite_dir, pg_url, runner) -> None:
    data_dir = sqlite_dir["dir"]
    password = urlsplit(pg_url).password
    assert password and sqlite_dir["counts"]["articles"] == 8
    result = _migrate(runner, data_dir, pg_url)
    assert result.exit_code == 0, result.output
    assert password not in result.output and shown_url(pg_url) in result.output
    assert "articles: 8" in result.output and "users: 2" in result.output and "api_tokens: 2" in result.output
    assert "reindex: 7 articles indexed on PostgreSQL" in result.output  # the near-duplicate joins its primary

    with open_store(data_paths(data_dir)["store"]) as source, open_store(pg_url) as target:
        assert target.transfer_counts() == sqlite_dir["counts"]
        assert _rows(target) == _rows(source)  # every row, every column, as stored: ids, hashes, bytes
        for article_id in [*sqlite_dir["ids"], sqlite_dir["faq"], sqlite_dir["dup"]]:
            assert target.get_article(article_id) == source.get_article(article_id)
        assert [c["id"] for c in target.copies(sqlite_dir["dup"])] == [sqlite_dir["head"], sqlite_dir["dup"]]
        assert CTA not in target.get_article(sqlite_dir["ids"][0]).text  # the boilerplate set came along
        assert target.get_raw("https://clinic.example/p0/") == source.get_raw("https://clinic.example/p0/")
        assert target.faq_count(("public",)) == 1 and target.count_queries() == 3
        assert users.session_user(target, sqlite_dir["sid"]).name == "alice"  # signed-in sessions carry over
        assert target.last_change() == source.last_change()
        new_user = users.add_user(target, "carol", PASSWORD)  # id generators moved past the imported ids
        assert new_user.id > max(u.id for u in users.list_users(source))
        new_article = target.save_article(_page(40), source="clinic")[0]
        assert new_article > max(source.article_ids().values())

    (data_dir / "kb.toml").write_text(f'database_url = "{pg_url}"\n', encoding="utf-8")
    check = runner.invoke(cli, ["--data-dir", str(data_dir), "reindex"])
    assert check.exit_code == 0, check.output
    check = runner.invoke(cli, ["--data-dir", str(data_dir), "check"])
    assert check.exit_code == 0 and "missing: 0" in check.output and "stale: 0" in check.output, check.output

    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True, "QUERY_LOG": False})
    try:
        with app.test_client() as client:
            public = client.get(f"/article/{sqlite_dir['ids'][0]}")
            assert public.status_code == 200 and "Acne topic a" in public.get_data(as_text=True)
            assert client.get(f"/article/{sqlite_dir['ids'][3]}").status_code == 404  # staff stays staff
            bearer = {"Authorization": f"Bearer {sqlite_dir['kept']}"}
            assert client.get("/api/search?q=acne", headers=bearer).status_code == 200
            revoked = client.get("/api/search?q=acne", headers={"Authorization": f"Bearer {sqlite_dir['gone']}"})
            assert revoked.status_code == 401
            assert _sign_in(client, "alice", PASSWORD + "x").status_code != 303
            assert _sign_in(client, "alice", PASSWORD).status_code == 303
            assert client.get(f"/article/{sqlite_dir['ids'][3]}").status_code == 200  # signed in: staff sees it
    finally:
        app.extensions["kb"].close()


def _sign_in(client, name: str, password: str):
    page = client.get("/login")
    form = BeautifulSoup(page.get_data(as_text=True), "html.parser").select_one("form.login-form")
    data = {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}
    data.update(username=name, password=password)
    return client.post("/login", data=data)


@pg
def test_a_second_run_refuses_without_force_and_replaces_with_it(sqlite_dir, pg_url, runner) -> None:
    data_dir = sqlite_dir["dir"]
    assert _migrate(runner, data_dir, pg_url, "--no-reindex").exit_code == 0
    with open_store(pg_url) as target:
        users.add_user(target, "mallory", PASSWORD)
    again = _migrate(runner, data_dir, pg_url, "--no-reindex")
    assert again.exit_code != 0 and "already holds data" in again.output and "users 3" in again.output
    assert "--force" in again.output and "Traceback" not in again.output
    assert urlsplit(pg_url).password not in again.output
    with open_store(pg_url) as target:
        assert users.get_user(target, "mallory") is not None  # a refusal writes nothing
    forced = _migrate(runner, data_dir, pg_url, "--force", "--no-reindex")
    assert forced.exit_code == 0, forced.output
    assert "run `kb reindex`" in forced.output
    with open_store(pg_url) as target:
        assert users.get_user(target, "mallory") is None
        assert target.transfer_counts() == sqlite_dir["counts"]


@pg
def test_a_failing_copy_keeps_the_target_as_it_was(sqlite_dir, pg_url) -> None:
    with open_store(data_paths(sqlite_dir["dir"])["store"]) as source, open_store(pg_url) as target:
        users.add_user(target, "mallory", PASSWORD)

        def fail(done: int, total: int) -> None:
            if done > 10:
                raise RuntimeError("disk full")

        with pytest.raises(RuntimeError):
            copy_store(source, target, force=True, progress=fail)
        assert users.get_user(target, "mallory") is not None and target.count_articles() == 0


@pg
def test_postgresql_back_to_sqlite_keeps_every_row(sqlite_dir, pg_url, tmp_path: Path) -> None:
    """The SQLite side of the import (and PostgreSQL's export) through the same interface methods."""
    with open_store(data_paths(sqlite_dir["dir"])["store"]) as source, open_store(pg_url) as pg:
        copy_store(source, pg)
        with open_store(tmp_path / "back" / "kb.sqlite3") as back:
            assert copy_store(pg, back) == sqlite_dir["counts"]
            assert _rows(back) == _rows(source)
            assert users.add_user(back, "carol", PASSWORD).id == 3


def test_bad_targets_and_missing_stores_are_clear_errors(data_dir: Path, runner, sqlite_dir) -> None:
    wrong = _migrate(runner, data_dir, "mysql://kb:hunter2@127.0.0.1/kb")
    assert wrong.exit_code != 0 and "postgresql://" in wrong.output and "hunter2" not in wrong.output
    empty = data_dir.parent / "empty"
    missing = _migrate(runner, empty, "postgresql://kb:hunter2@127.0.0.1:1/kb")
    assert missing.exit_code != 0 and "no SQLite store" in missing.output and "hunter2" not in missing.output
    assert not (empty / "kb.sqlite3").exists()
    assert shown_url("postgresql://kb@h/db?password=hunter2&sslmode=require") == \
        "postgresql://kb@h/db?password=***&sslmode=require"
