"""`kb update` on PostgreSQL changes the current search generation in place (kb.search.pg_build.update).

The oracle: after any series of store changes, every table of the updated generation equals, row for row, what
a fresh full build of the same store makes (posting arrays compared as multisets: readers ignore their order),
and searches answer identically. Also: only the changed documents are written, a record leaving the public
audience leaves every 'public' statistic at once, large change sets and old generations are rebuilt, and two
writers on one database (two hosts) never run at once.
"""

from __future__ import annotations

import json
import logging
import random
import threading

import psycopg
import pytest

from kb import index
from kb.errors import LockHeld
from kb.models import Article, Section
from kb.search import pg_build
from kb.search.pg import PgSearcher
from kb.store.postgres import PostgresStore
from kb.store.postgres_pool import close_pools
from kb.store.postgres_search import WRITER_LOCK, close_search_pool, writer_lock
from tests.kbprocess import make_article
from tests.texts import ARTICLE, REPOST_FOOTER, REPOST_HEADER

pytestmark = pytest.mark.postgresql

MOVING = "quorbexil"  # a word of the record that moves between audiences, in no other article
TABLES = ("kb_article_search", "kb_search_posting", "kb_search_term", "kb_search_field", "kb_search_word")
QUERIES = ("acne", "rosacea laser", "sunscreen", "ivermectin", MOVING, "eczema itch", "melasma", "psoriasis",
           "rosacia", "")


@pytest.fixture
def pg_url(pg_database):
    yield pg_database.url
    close_search_pool(pg_database.url)
    close_pools()


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def current(url: str) -> int:
    with connect(url) as conn:
        return int(conn.execute("SELECT generation FROM kb_search_current").fetchone()[0])


def snapshot(url: str, gen: int) -> dict[str, set]:
    """Every row of every table of generation `gen`; posting arrays as sorted (id, tf, length) triples."""
    out: dict[str, set] = {}
    with connect(url) as conn:
        for name in TABLES:
            rows = conn.execute(f"SELECT * FROM {name}_g{gen}").fetchall()
            if name == "kb_search_posting":
                rows = [(sub, term, field, tuple(sorted(zip(ids, tfs, lens)))) for sub, term, field, ids, tfs, lens
                        in rows]
            out[name] = {tuple(str(v) for v in row) for row in rows}
            assert len(out[name]) == len(rows), f"{name}: duplicate rows"
    return out


def assert_same_tables(url: str, updated: int, fresh: int) -> None:
    a, b = snapshot(url, updated), snapshot(url, fresh)
    for name in TABLES:
        assert a[name] == b[name], (name, sorted(a[name] - b[name])[:5], sorted(b[name] - a[name])[:5])
        assert a[name], name  # compared tables are not empty


def answers(searcher: PgSearcher) -> dict[str, str]:
    """Anonymous and staff answers (hits, scores, totals, facets, suggestions, corrections) as JSON text."""
    out = {}
    for audiences in (("public",), ("public", "staff")):
        for q in QUERIES:
            for kw in ({}, {"sort": "date"}, {"filters": {"tag": ["acne"]}}):
                out[f"{audiences}{q}{kw}"] = json.dumps(searcher.search(q, audiences=audiences, **kw).to_json(),
                                                        sort_keys=True)
        for prefix in ("ro", "ac", "ps", MOVING[:3]):
            out[f"{audiences}suggest:{prefix}"] = json.dumps(searcher.suggest(prefix, audiences=audiences))
    return out


def article(n: int, rng: random.Random, **kw) -> Article:
    base = make_article(n, rng)
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def moving(audience: str) -> Article:
    return Article(url="https://clinic.example/moving/", title="Acne clinic protocol", site="clinic.example",
                   text=f"Acne protocol with {MOVING} dosing. Retinoids at night.", tags=["Acne", "protocol"],
                   categories=["Protocols"], published="2024-02-02", audience=audience,
                   sections=[Section("Dosing", "dosing", f"{MOVING} dosing")])


def repost(host: str, text: str = ARTICLE) -> Article:
    return Article(url=f"https://{host}/rosacea/", title="Rosacea: triggers and laser treatment", text=text,
                   site=host, tags=["rosacea"], categories=["Conditions"], published="2023-05-05",
                   sections=[Section("Triggers", "triggers", text[:120])])


def seed(store: PostgresStore, count: int = 40) -> list[int]:
    rng = random.Random(14)
    ids = []
    for n in range(count):
        ids.append(store.save_article(article(n, rng, audience="staff" if n % 7 == 0 else "public"))[0])
    return ids


def update_in_place(store: PostgresStore, url: str) -> tuple[int, int]:
    gen = current(url)
    done = pg_build.update(store, url)
    assert current(url) == gen, "an update of a few articles made a new generation"
    return done


def test_an_update_in_place_equals_a_fresh_build_table_for_table_and_answer_for_answer(pg_url):
    with PostgresStore(pg_url) as store:
        ids = seed(store)
        group = store.save_article(repost("a.example"))[0]
        mover = store.save_article(moving("public"))[0]
        pg_build.build(store, pg_url)
        gen = current(pg_url)
        searcher = PgSearcher(pg_url)  # opened before the updates: its cached statistics must not go stale
        answers(searcher)

        rng = random.Random(99)
        rounds = [
            # new, edited, deleted; public -> staff; a near-duplicate joins the group; a tag case variant
            lambda: (store.save_article(article(100, rng, tags=["ACNE", "Zincx"])),
                     store.save_article(article(3, rng, text="Psoriasis plaques itch. Eczema differs.")),
                     store.delete_article(ids[5]),
                     store.save_article(moving("staff")),
                     store.save_article(repost("b.example", ARTICLE + REPOST_FOOTER))),
            # staff -> public; a near-duplicate leaves (the group's head goes, the repost heads it); the article
            # holding a label variant goes
            lambda: (store.save_article(moving("public")),
                     store.delete_article(group),
                     store.save_article(article(7, rng, audience="public")),
                     store.delete_article(ids[1])),
            # a staff record, and a tag variant that sorts before the current label
            lambda: (store.save_article(article(101, rng, tags=["Acne"], audience="staff")),
                     store.save_article(repost("c.example", REPOST_HEADER + ARTICLE))),
        ]
        for change in rounds:
            change()
            indexed, removed = update_in_place(store, pg_url)
            assert indexed or removed
            after_update = answers(searcher)
            assert answers(PgSearcher(pg_url)) == after_update  # a long-lived searcher sees the update
            pg_build.build(store, pg_url)
            fresh = current(pg_url)
            assert_same_tables(pg_url, gen, fresh)
            assert answers(searcher) == after_update  # the fresh build answers exactly as the updated one
            # carry on updating the fresh generation, as `kb update` would
            gen = fresh
        assert str(mover) in {r[0] for r in snapshot(pg_url, gen)["kb_article_search"]}  # public again
        searcher.close()


def test_an_update_writes_only_the_changed_documents(pg_url):
    with PostgresStore(pg_url) as store:
        ids = seed(store, 300)
        pg_build.build(store, pg_url)
        gen = current(pg_url)
        store.save_article(article(12, random.Random(1), text="Rosacea flares with heat. Lasers help."))
        assert update_in_place(store, pg_url) == (1, 0)
        with connect(pg_url) as conn:
            # rows the update's transaction wrote carry its id, the one that also rewrote the current row
            written = conn.execute(f"SELECT count(*) FROM kb_article_search_g{gen} WHERE xmin::text = "
                                   "(SELECT xmin::text FROM kb_search_current)").fetchone()[0]
            postings = conn.execute(f"SELECT count(*) FILTER (WHERE xmin::text = (SELECT xmin::text FROM "
                                    f"kb_search_current)), count(*) FROM kb_search_posting_g{gen}").fetchone()
            docs = conn.execute(f"SELECT count(*) FROM kb_article_search_g{gen}").fetchone()[0]
        assert written == 1 and docs == len(ids)
        assert 0 < postings[0] < postings[1] / 3
        assert pg_build.update(store, pg_url) == (0, 0)  # nothing changed since: nothing to do


def test_a_record_leaving_the_public_audience_leaves_every_public_statistic_at_once(pg_url):
    with PostgresStore(pg_url) as store:
        seed(store, 30)
        store.save_article(moving("public"))
        pg_build.build(store, pg_url)
        gen = current(pg_url)

        def public_stats() -> tuple[int, int, int]:
            with connect(pg_url) as conn:
                words = conn.execute(f"SELECT count(*) FROM kb_search_word_g{gen} WHERE scope = 'public' "
                                     "AND word = %s", (MOVING,)).fetchone()[0]
                terms = conn.execute(f"SELECT count(*) FROM kb_search_term_g{gen} WHERE scope = 'public' "
                                     "AND term = %s", (MOVING,)).fetchone()[0]
                docs = conn.execute(f"SELECT docs FROM kb_search_field_g{gen} WHERE scope = 'public' "
                                    "AND field = 'all'").fetchone()[0]
            return words, terms, docs

        words, terms, docs = public_stats()
        assert words == 1 and terms > 0
        store.save_article(moving("staff"))
        assert update_in_place(store, pg_url) == (1, 0)
        assert public_stats() == (0, 0, docs - 1)
        searcher = PgSearcher(pg_url)
        assert searcher.search(MOVING).total == 0 and searcher.search(MOVING, audiences=("public", "staff")).total
        assert MOVING[:5] not in json.dumps(searcher.suggest(MOVING[:3]))
        searcher.close()


def test_large_change_sets_and_old_generations_are_rebuilt_whole(pg_url, caplog):
    caplog.set_level(logging.INFO, logger="kb.search.pg_build")
    with PostgresStore(pg_url) as store:
        seed(store, 20)
        pg_build.build(store, pg_url)
        gen = current(pg_url)
        rng = random.Random(5)
        for n in range(200, 205):  # 5 of 20: more than REBUILD_SHARE
            store.save_article(article(n, rng))
        assert pg_build.update(store, pg_url) == (5, 0)
        assert current(pg_url) == gen + 1 and "rebuilding it whole" in caplog.text
        caplog.clear()
        store.save_article(article(300, rng))
        update_in_place(store, pg_url)
        assert "updated in place" in caplog.text
        # a generation another analysis built (tables without what an update needs) is rebuilt once
        with connect(pg_url) as conn:
            conn.execute("UPDATE kb_search_generations SET analysis = %s WHERE generation = %s",
                         (json.dumps({"analysis": "kb schema 0", "seq": 0}), gen + 1))
        assert pg_build.update(store, pg_url) == (26, 0)
        assert current(pg_url) == gen + 2
        assert pg_build.notes({"analysis": _analysis(pg_url)})["analysis"] == pg_build.ANALYSIS


def _analysis(url: str) -> str:
    with connect(url) as conn:
        return conn.execute("SELECT analysis FROM kb_search_generations JOIN kb_search_current USING (generation)"
                            ).fetchone()[0]


def test_reindex_ids_changes_exactly_those_ids_in_place(pg_url):
    with PostgresStore(pg_url) as store:
        ids = seed(store, 30)
        pg_build.build(store, pg_url)
        gen = current(pg_url)
        seq = pg_build.notes({"analysis": _analysis(pg_url)})["seq"]
        edited = store.save_article(article(4, random.Random(3), text="Melasma darkens in summer."))[0]
        store.delete_article(ids[9])
        # as `kb check --repair` calls it, through kb.index
        assert index.reindex_ids(store, None, upsert={edited}, delete={ids[9], 10_000}) == (1, 1)
        assert current(pg_url) == gen
        assert pg_build.notes({"analysis": _analysis(pg_url)})["seq"] == seq  # the store sequence is kept
        pg_build.build(store, pg_url)
        assert_same_tables(pg_url, gen, current(pg_url))


def test_a_second_writer_on_the_database_gets_the_lock_error_naming_the_first(pg_url, monkeypatch):
    with PostgresStore(pg_url) as store:
        seed(store, 10)
        pg_build.build(store, pg_url)
        store.save_article(article(50, random.Random(2)))
        # another host's `kb update`: its own session holding the writer lock
        other = psycopg.connect(pg_url, autocommit=True, application_name="kb update (pid 4242 on host-b)")
        other.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (WRITER_LOCK,))
        monkeypatch.setattr("kb.store.postgres_search.WRITER_WAIT", 0.3)
        for write in (lambda: pg_build.update(store, pg_url), lambda: pg_build.rebuild(store, pg_url),
                      lambda: pg_build.reindex_ids(store, pg_url, upsert={1}, delete=set())):
            with pytest.raises(LockHeld) as caught:
                write()
            assert "kb update (pid 4242 on host-b)" in str(caught.value) and "server pid" in str(caught.value)
            assert caught.value.exit_code == 75
        other.close()  # its session ends (as after a kill -9): the lock goes with it
        assert pg_build.update(store, pg_url) == (1, 0)


def test_the_writer_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(pg_url):
    PostgresStore(pg_url).close()
    with writer_lock(pg_url, "update"):
        with writer_lock(pg_url, "reindex"):
            pass
        errors = []

        def second() -> None:
            try:
                with writer_lock(pg_url, "update", wait=0.1):
                    pass
            except LockHeld as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(errors) == 1
    with writer_lock(pg_url, "update", wait=0.1):  # released when the outermost holder leaves
        pass
