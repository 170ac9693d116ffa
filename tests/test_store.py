"""The store: idempotent saves, change log for incremental indexing, transactions that roll back."""

import pytest

from kb.models import Article, Section
from kb.store import SCHEMA_VERSION, Store


def _article(url: str = "https://clinic.example/a/", text: str = "Sebaceous glands make sebum.") -> Article:
    return Article(url=url, title="Sebaceous glands", text=text, site="clinic.example",
                   sections=[Section("Pores", "pores", "Pore size is mostly genetic.")], tags=["pores"])


def test_save_new_unchanged_updated(store: Store) -> None:
    a = _article()
    assert store.save_article(a, source="clinic")[1] == "new"
    before = store.last_change()
    assert store.save_article(_article(), source="clinic")[1] == "unchanged"
    assert store.last_change() == before, "unchanged content must not write a change"
    assert store.save_article(_article(text="Changed."), source="clinic")[1] == "updated"
    got = store.get_article(a.id)
    assert got.text == "Changed." and got.sections[0].anchor == "pores" and got.tags == ["pores"]


def test_change_log_last_op_wins(store: Store) -> None:
    a_id, _ = store.save_article(_article("https://x/a"))
    b_id, _ = store.save_article(_article("https://x/b"))
    upserts, deletes, seq = store.changes_since(0)
    assert upserts == {a_id, b_id} and not deletes
    store.delete_article(a_id)
    upserts, deletes, seq2 = store.changes_since(seq)
    assert upserts == set() and deletes == {a_id} and seq2 > seq
    assert store.get_article(a_id) is None
    assert store.count_articles() == 1


def test_failed_transaction_keeps_stored_data(store: Store) -> None:
    store.save_article(_article())
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.db.execute("DELETE FROM articles")
            raise RuntimeError("crash mid-write")
    assert store.count_articles() == 1


def test_page_state_and_raw_cache(store: Store) -> None:
    store.record_page("https://x/a", status=200, etag='"v1"', content_hash="abc", source="x")
    store.record_page("https://x/a", status=304)
    page = store.get_page("https://x/a")
    assert page["etag"] == '"v1"' and page["status"] == 304 and page["content_hash"] == "abc"
    store.put_raw("https://x/a", b"<html>" * 1000, "text/html")
    assert store.get_raw("https://x/a") == (b"<html>" * 1000, "text/html")


def test_crawl_log(store: Store) -> None:
    crawl_id = store.start_crawl("x")
    store.finish_crawl(crawl_id, {"fetched": 3})
    [row] = store.recent_crawls()
    assert row["stats"] == {"fetched": 3} and row["finished_at"]


def test_reopen_keeps_data(tmp_path) -> None:
    with Store(tmp_path / "kb.sqlite3") as s:
        s.save_article(_article())
    with Store(tmp_path / "kb.sqlite3") as s:
        assert s.count_articles() == 1
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_iter_articles_streams_in_batches_in_id_order(store: Store) -> None:
    ids = [store.save_article(_article(f"https://x/{n}"))[0] for n in range(7)]
    assert [a.id for a in store.iter_articles(batch=3)] == ids
    assert [a.id for a in store.iter_articles([ids[5], ids[1], ids[3]], batch=2)] == [ids[1], ids[3], ids[5]]
    assert all(a.sections and a.sections[0].anchor == "pores" for a in store.iter_articles(batch=2))


def test_version_1_store_is_migrated_in_place(tmp_path):
    """A store written before the disclaimer, fingerprint and duplicate columns keeps its articles."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with Store(path) as s:
        s.save_article(_article())
    db = sqlite3.connect(path)
    db.execute("DROP INDEX articles_dup_of")
    db.execute("DROP INDEX articles_site")
    for column in ("disclaimer", "fingerprints", "simhash", "dup_of"):
        db.execute(f"ALTER TABLE articles DROP COLUMN {column}")
    db.execute("DROP TABLE site_boilerplate")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert s.count_articles() == 1
        row = s.db.execute("SELECT fingerprints, disclaimer FROM articles").fetchone()
        assert row["fingerprints"]  # backfilled from the stored text
        assert s.get_article_by_url(_article().url).text == _article().text
