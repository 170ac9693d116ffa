"""The store: idempotent saves, change log for incremental indexing, transactions that roll back; the interface
the SQLite store implements, and the audience filter every reader's query goes through."""

import ast
import inspect
from pathlib import Path

import pytest

from kb.boilerplate import block_fingerprints
from kb.errors import KBError
from kb.models import Article, Section
from kb.store import SCHEMA_VERSION, SQLiteStore, Store, audience_sql, open_store
from tests.texts import ARTICLE, LASERS, REPOST_FOOTER, REPOST_HEADER


def _article(url: str = "https://clinic.example/a/", text: str = "Sebaceous glands make sebum.") -> Article:
    return Article(url=url, title="Sebaceous glands", text=text, site="clinic.example",
                   sections=[Section("Pores", "pores", "Pore size is mostly genetic.")], tags=["pores"])


def test_save_new_unchanged_updated(any_store: Store) -> None:
    a = _article()
    assert any_store.save_article(a, source="clinic")[1] == "new"
    before = any_store.last_change()
    assert any_store.save_article(_article(), source="clinic")[1] == "unchanged"
    assert any_store.last_change() == before, "unchanged content must not write a change"
    assert any_store.save_article(_article(text="Changed."), source="clinic")[1] == "updated"
    got = any_store.get_article(a.id)
    assert got.text == "Changed." and got.sections[0].anchor == "pores" and got.tags == ["pores"]


def test_change_log_last_op_wins(any_store: Store) -> None:
    a_id, _ = any_store.save_article(_article("https://x/a"))
    b_id, _ = any_store.save_article(_article("https://x/b"))
    upserts, deletes, seq = any_store.changes_since(0)
    assert upserts == {a_id, b_id} and not deletes
    any_store.delete_article(a_id)
    upserts, deletes, seq2 = any_store.changes_since(seq)
    assert upserts == set() and deletes == {a_id} and seq2 > seq
    assert any_store.get_article(a_id) is None
    assert any_store.count_articles() == 1


def test_failed_transaction_keeps_stored_data(any_store: Store) -> None:
    article_id, _ = any_store.save_article(_article())
    with pytest.raises(RuntimeError):
        with any_store.transaction():
            any_store.delete_article(article_id)
            raise RuntimeError("crash mid-write")
    assert any_store.count_articles() == 1 and any_store.get_article(article_id) is not None


def test_page_state_and_raw_cache(any_store: Store) -> None:
    any_store.record_page("https://x/a", status=200, etag='"v1"', content_hash="abc", source="x")
    any_store.record_page("https://x/a", status=304)
    page = any_store.get_page("https://x/a")
    assert page["etag"] == '"v1"' and page["status"] == 304 and page["content_hash"] == "abc"
    any_store.put_raw("https://x/a", b"<html>" * 1000, "text/html")
    assert any_store.get_raw("https://x/a") == (b"<html>" * 1000, "text/html")


def test_crawl_log(any_store: Store) -> None:
    crawl_id = any_store.start_crawl("x")
    any_store.finish_crawl(crawl_id, {"fetched": 3})
    [row] = any_store.recent_crawls()
    assert row["stats"] == {"fetched": 3} and row["finished_at"]


def test_reopen_keeps_data(tmp_path) -> None:
    with open_store(tmp_path / "kb.sqlite3") as s:
        s.save_article(_article())
    with open_store(tmp_path / "kb.sqlite3") as s:
        assert s.count_articles() == 1
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_iter_articles_streams_in_batches_in_id_order(any_store: Store) -> None:
    ids = [any_store.save_article(_article(f"https://x/{n}"))[0] for n in range(7)]
    assert [a.id for a in any_store.iter_articles(batch=3)] == ids
    assert [a.id for a in any_store.iter_articles([ids[5], ids[1], ids[3]], batch=2)] == [ids[1], ids[3], ids[5]]
    assert all(a.sections and a.sections[0].anchor == "pores" for a in any_store.iter_articles(batch=2))


def test_version_1_store_is_migrated_in_place(tmp_path):
    """A store written before the disclaimer, fingerprint and duplicate columns keeps its articles."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with open_store(path) as s:
        s.save_article(_article())
        s.save_article(_article("https://clinic.example/b/", "For information only; not medical advice."))
    db = sqlite3.connect(path)
    db.execute("DROP INDEX articles_dup_of")
    db.execute("DROP INDEX articles_site")
    for column in ("disclaimer", "fingerprints", "simhash", "dup_of"):
        db.execute(f"ALTER TABLE articles DROP COLUMN {column}")
    db.execute("DROP TABLE site_boilerplate")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with open_store(path) as s:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert s.count_articles() == 2
        row = s.db.execute("SELECT fingerprints, disclaimer FROM articles").fetchone()
        assert row["fingerprints"]  # backfilled from the stored text
        assert s.get_article_by_url(_article().url).text == _article().text
        assert [a.disclaimer for a in s.iter_articles()] == [False, True]  # derived from the text (kb.disclaimer)


# -- site boilerplate: learned per site, stripped on read, change log for exactly the affected articles ---------

CTA = "Book a consultation today with our friendly dermatology team at Riverside Clinic."
FOOTER = "This page is for information only and is not medical advice."


def _site_page(n: int, *, extra: tuple[str, ...] = (CTA,), site: str = "clinic.example", kind: str = "article",
               url: str | None = None) -> Article:
    word = "".join(chr(ord("a") + int(d)) for d in str(n))  # digits normalise away in fingerprints
    own = f"Page {word} explains its own topic {word} in a sentence nobody else repeats."
    text = "\n\n".join((own, *extra))
    return Article(url=url or f"https://{site}/p{n}/", title=f"Topic {n}", text=text, site=site, kind=kind,
                   sections=[Section("", "", text, 0)])


def _fill(store: Store, n: int = 4, **kw) -> list[int]:
    return [store.save_article(_site_page(i, **kw), source="clinic")[0] for i in range(n)]


def test_refresh_boilerplate_learns_strips_on_read_and_logs_affected(any_store: Store) -> None:
    ids = _fill(any_store, 4)
    plain = any_store.save_article(_site_page(9, extra=()), source="clinic")[0]  # no call to book
    faq = [any_store.save_article(_site_page(20 + i, kind="faq"), source="clinic")[0] for i in range(3)]
    other = any_store.save_article(_site_page(1, site="other.example"), source="other")[0]
    seq = any_store.last_change()
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (1, 0)
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == set(ids) | set(faq) and not deletes  # the page without it and the other site: untouched
    assert plain not in upserts and other not in upserts
    read = any_store.get_article(ids[0])
    assert CTA not in read.text and "Page a explains" in read.text
    assert all(CTA not in s.text for s in read.sections)
    assert CTA in any_store.get_raw_article(ids[0]).text  # the store keeps what was extracted
    assert CTA in any_store.get_raw_article(url="https://clinic.example/p0/").text
    assert CTA not in next(any_store.iter_articles([ids[1]])).text
    assert CTA in any_store.get_article(other).text  # another site's set is its own
    assert any_store.get_article(plain).content_hash == any_store.get_raw_article(plain).content_hash


def test_refresh_boilerplate_unchanged_writes_nothing(store: Store) -> None:
    _fill(store, 4)
    store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    store.db.execute("CREATE TEMP TABLE audit (what TEXT)")
    for table in ("articles", "site_boilerplate", "changes"):
        store.db.execute(f"CREATE TEMP TRIGGER audit_{table} AFTER INSERT ON main.{table} "
                         f"BEGIN INSERT INTO audit VALUES ('{table}'); END")
        store.db.execute(f"CREATE TEMP TRIGGER audit_d_{table} AFTER DELETE ON main.{table} "
                         f"BEGIN INSERT INTO audit VALUES ('{table}'); END")
    assert store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 0)
    assert store.db.execute("SELECT count(*) FROM audit").fetchone()[0] == 0


def test_refresh_boilerplate_drops_a_paragraph_that_stops_repeating(any_store: Store) -> None:
    ids = _fill(any_store, 4, extra=(CTA, FOOTER))
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (2, 0)
    assert FOOTER not in any_store.get_article(ids[0]).text
    for i in range(3):  # the footer goes from three of the four pages: no longer boilerplate
        any_store.save_article(_site_page(i, extra=(CTA,)), source="clinic")
    seq = any_store.last_change()
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 1)
    upserts, _, _ = any_store.changes_since(seq)
    assert upserts == {ids[3]}  # only the page still carrying the dropped paragraph reads differently
    assert FOOTER in any_store.get_article(ids[3]).text and CTA not in any_store.get_article(ids[3]).text


def test_boilerplate_thresholds_and_what_counts(any_store: Store) -> None:
    _fill(any_store, 2)
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 0)  # two pages only
    for i in range(3):  # FAQ records repeat their page: they never count towards the set
        any_store.save_article(_site_page(30 + i, kind="faq"), source="clinic")
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 0)
    for i in range(2, 8):
        any_store.save_article(_site_page(i, extra=()), source="clinic")
    any_store.save_article(_site_page(2, extra=(CTA,)), source="clinic")  # 3 of 8 pages: below the 50% share
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 0)
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.3, min_pages=3) == (1, 0)


def test_page_made_only_of_boilerplate_keeps_its_text(any_store: Store) -> None:
    _fill(any_store, 4)
    contact = Article(url="https://clinic.example/contact/", title="Contact", text=CTA, site="clinic.example",
                      sections=[Section("", "", CTA, 0)])
    contact_id = any_store.save_article(contact, source="clinic")[0]
    any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    assert any_store.get_article(contact_id).text == CTA


def test_boilerplate_cache_sees_other_connections(store: Store) -> None:
    ids = _fill(store, 4)
    assert CTA in store.get_article(ids[0]).text  # caches the (empty) set for the site
    with open_store(store.path) as writer:
        writer.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    assert CTA not in store.get_article(ids[0]).text


def _audience_page(n: int, audience: str, extra: tuple[str, ...]) -> Article:
    page = _site_page(n, extra=extra)
    page.audience = audience
    return page


def test_public_boilerplate_ignores_staff_articles_and_staff_boilerplate_counts_all(any_store: Store) -> None:
    """Two of six public pages carry the call to book, and so do two staff pages: 4 of 8 pages, 2 of 6 public."""
    public = [any_store.save_article(_audience_page(i, "public", (CTA,) if i < 2 else ()), source="clinic")[0]
              for i in range(6)]
    staff = [any_store.save_article(_audience_page(10 + i, "staff", (CTA,)), source="clinic")[0] for i in range(2)]
    seq = any_store.last_change()
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (1, 0)
    assert any_store.boilerplate_fingerprints("clinic.example", "public") == frozenset()
    assert any_store.boilerplate_fingerprints("clinic.example") == frozenset()  # a reader's default: the public set
    assert any_store.boilerplate_fingerprints("clinic.example", "staff") == set(block_fingerprints(CTA))
    assert CTA in any_store.get_article(public[0]).text  # what staff pages repeat never shapes a public page
    assert CTA in next(any_store.iter_articles([public[1]], audiences=("public",))).text
    assert CTA not in any_store.get_article(staff[0]).text and "Page ba explains" in any_store.get_article(staff[0]).text
    assert all(CTA not in a.text for a in any_store.iter_articles(staff))
    assert any_store.changes_since(seq)[:2] == (set(staff), set())  # only the staff pages read differently
    hashes = any_store.read_hashes()
    assert hashes[public[0]] == any_store.get_raw_article(public[0]).content_hash
    assert hashes[staff[0]] == any_store.get_article(staff[0]).content_hash != any_store.get_raw_article(staff[0]).content_hash


def test_public_boilerplate_is_learned_from_public_pages_even_when_staff_pages_outnumber_them(any_store: Store) -> None:
    """The footer is on 3 of 4 public pages but 4 of 10 pages in all: public strips it, staff keeps it."""
    public = [any_store.save_article(_audience_page(i, "public", (FOOTER,) if i < 3 else ()), source="clinic")[0]
              for i in range(4)]
    staff = [any_store.save_article(_audience_page(10 + i, "staff", (FOOTER,) if i == 0 else ()), source="clinic")[0]
             for i in range(6)]
    seq = any_store.last_change()
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (1, 0)
    assert any_store.boilerplate_fingerprints("clinic.example", "public") == set(block_fingerprints(FOOTER))
    assert any_store.boilerplate_fingerprints("clinic.example", "staff") == frozenset()
    assert FOOTER not in any_store.get_article(public[0]).text and FOOTER in any_store.get_article(staff[0]).text
    assert any_store.changes_since(seq)[:2] == (set(public[:3]), set())
    any_store.delete_article(staff[0])  # staff pages come and go: the public set does not move
    assert any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3) == (0, 0)
    assert FOOTER not in any_store.get_article(public[1]).text


def test_read_hashes_match_the_article_as_read(any_store: Store) -> None:
    ids = _fill(any_store, 4)
    plain = any_store.save_article(_site_page(9, extra=()), source="clinic")[0]
    any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    hashes = any_store.read_hashes()
    assert hashes[ids[0]] == any_store.get_article(ids[0]).content_hash != any_store.get_raw_article(ids[0]).content_hash
    assert hashes[plain] == any_store.get_article(plain).content_hash
    assert set(hashes) == {*ids, plain}


def test_disclaimer_flag_is_stored_and_read(any_store: Store) -> None:
    a = _article()
    a.disclaimer = True
    a_id = any_store.save_article(a)[0]
    assert any_store.get_article(a_id).disclaimer is True
    assert any_store.get_article(any_store.save_article(_article("https://x/b"))[0]).disclaimer is False


# -- near-duplicate groups (kb.neardup) --------------------------------------------------------------



def _copy(host: str, text: str = ARTICLE, title: str = "Rosacea: triggers and laser treatment",
          audience: str = "public", kind: str = "article", path: str = "/rosacea/") -> Article:
    return Article(url=f"https://{host}{path}", title=title, text=text, site=host, audience=audience, kind=kind,
                   sections=[Section("Triggers", "triggers", text[:200])])


def _groups(store: Store) -> dict[int, int | None]:
    """id -> dup_of, after checking the invariants: no chains, primary lowest id, one audience and kind."""
    rows = {}
    for a in store.iter_articles():
        head = store.copies(a.id)[0]["id"]
        rows[a.id] = {"id": a.id, "dup_of": None if head == a.id else head, "audience": a.audience, "kind": a.kind}
    for r in rows.values():
        if r["dup_of"] is not None:
            head = rows[r["dup_of"]]
            assert head["dup_of"] is None, "a duplicate points at a primary"
            assert head["id"] < r["id"], "the primary is the first stored"
            assert (head["audience"], head["kind"]) == (r["audience"], r["kind"])
    return {i: r["dup_of"] for i, r in rows.items()}


def test_reposted_article_joins_the_first_copy(any_store: Store) -> None:
    a = any_store.save_article(_copy("clinic-a.example"))[0]
    seq = any_store.last_change()
    b = any_store.save_article(_copy("partner-b.example", REPOST_HEADER + ARTICLE + REPOST_FOOTER))[0]
    other = any_store.save_article(_copy("clinic-a.example", LASERS, "Laser treatment", path="/lasers/"))[0]
    assert _groups(any_store) == {a: None, b: a, other: None}
    group = any_store.copies(a)
    assert [c["id"] for c in group] == [a, b] and any_store.copies(b) == group
    assert group[1] == {"id": b, "url": "https://partner-b.example/rosacea/", "site": "partner-b.example",
                        "title": "Rosacea: triggers and laser treatment"}
    assert any_store.copies(other) == [{"id": other, "url": "https://clinic-a.example/lasers/",
                                    "site": "clinic-a.example", "title": "Laser treatment"}]
    assert any_store.copies(999) == []
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {a, other} and deletes == {b}  # the primary's document lists b; b has none of its own
    assert any_store.primary_ids() == [a, other] and any_store.count_primaries() == 2
    assert any_store.duplicate_ids([a, b, other]) == {b}
    assert any_store.group_sources([a, other]) == {a: [
        {"url": "https://clinic-a.example/rosacea/", "site": "clinic-a.example",
         "title": "Rosacea: triggers and laser treatment"},
        {"url": "https://partner-b.example/rosacea/", "site": "partner-b.example",
         "title": "Rosacea: triggers and laser treatment"}]}


def test_unchanged_copy_writes_nothing(any_store: Store) -> None:
    any_store.save_article(_copy("clinic-a.example"))
    any_store.save_article(_copy("partner-b.example"))
    before = any_store.last_change()
    assert any_store.save_article(_copy("partner-b.example"))[1] == "unchanged"
    assert any_store.last_change() == before


def test_changed_duplicate_reindexes_its_primary(any_store: Store) -> None:
    a = any_store.save_article(_copy("clinic-a.example"))[0]
    b = any_store.save_article(_copy("partner-b.example"))[0]
    seq = any_store.last_change()
    any_store.save_article(_copy("partner-b.example", ARTICLE + REPOST_FOOTER))  # still a copy, but its title/URL may show
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {a} and deletes == {b}
    assert _groups(any_store)[b] == a


def test_deleting_the_primary_reforms_the_group(any_store: Store) -> None:
    a = any_store.save_article(_copy("a.example"))[0]
    b = any_store.save_article(_copy("b.example", REPOST_HEADER + ARTICLE))[0]
    c = any_store.save_article(_copy("c.example", ARTICLE + REPOST_FOOTER))[0]
    assert _groups(any_store) == {a: None, b: a, c: a}
    seq = any_store.last_change()
    assert any_store.delete_article(a)
    assert _groups(any_store) == {b: None, c: b}
    assert [x["id"] for x in any_store.copies(c)] == [b, c]
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {b} and deletes >= {a} and b not in deletes
    seq = any_store.last_change()
    assert any_store.delete_article(c)  # a duplicate goes: its primary's source list shrinks
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {b} and deletes == {c}
    assert any_store.copies(b) == [{"id": b, "url": "https://b.example/rosacea/", "site": "b.example",
                                "title": "Rosacea: triggers and laser treatment"}]


def test_primary_that_no_longer_matches_leaves_its_group(any_store: Store) -> None:
    a = any_store.save_article(_copy("a.example"))[0]
    b = any_store.save_article(_copy("b.example"))[0]
    c = any_store.save_article(_copy("c.example"))[0]
    seq = any_store.last_change()
    any_store.save_article(_copy("a.example", LASERS))  # rewritten into another article
    assert _groups(any_store) == {a: None, b: None, c: b}
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {a, b} and c in deletes and not {a, b} & deletes


def test_an_earlier_article_rewritten_into_a_copy_heads_the_group(any_store: Store) -> None:
    a = any_store.save_article(_copy("a.example", LASERS))[0]
    b = any_store.save_article(_copy("b.example"))[0]
    c = any_store.save_article(_copy("c.example"))[0]
    assert _groups(any_store) == {a: None, b: None, c: b}
    seq = any_store.last_change()
    any_store.save_article(_copy("a.example", ARTICLE))
    assert _groups(any_store) == {a: None, b: a, c: a}
    upserts, deletes, _ = any_store.changes_since(seq)
    assert upserts == {a} and deletes >= {b}


def test_staff_copies_never_merge_with_public_ones(any_store: Store) -> None:
    public = any_store.save_article(_copy("clinic.example"))[0]
    staff = any_store.save_article(_copy("clinic.example", path="/staff/rosacea/", audience="staff"))[0]
    public2 = any_store.save_article(_copy("partner.example"))[0]
    staff2 = any_store.save_article(_copy("partner.example", path="/staff/rosacea/", audience="staff"))[0]
    assert _groups(any_store) == {public: None, staff: None, public2: public, staff2: staff}
    assert [c["id"] for c in any_store.copies(public)] == [public, public2]
    assert [c["id"] for c in any_store.copies(staff2)] == [staff, staff2]
    assert any_store.copies(staff2, audiences=("public",)) == []
    # moving a copy to the staff audience takes it out of the public group
    any_store.save_article(_copy("partner.example", audience="staff"))
    assert _groups(any_store)[public2] == staff and [c["id"] for c in any_store.copies(public)] == [public]


def test_short_texts_templates_and_faqs_are_never_merged(store: Store) -> None:
    short = " ".join(ARTICLE.split()[:40])
    ids = [store.save_article(_copy(h, short))[0] for h in ("a.example", "b.example")]
    ids += [store.save_article(_copy(h, kind="faq", path="/faq/#q1")) [0] for h in ("a.example", "b.example")]
    # the same text under another subject's title is a template page, not a repost
    ids += [store.save_article(_copy("a.example", ARTICLE.replace("rosacea", "eczema"), "Eczema treatment",
                                     path="/eczema/"))[0]]
    ids += [store.save_article(_copy("c.example", ARTICLE, "Rosacea: triggers and laser treatment"))[0]]
    assert all(dup is None for dup in _groups(store).values())
    assert store.db.execute("SELECT count(*) FROM articles WHERE simhash IS NOT NULL").fetchone()[0] == 2


def test_schema_2_store_is_grouped_on_upgrade(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "v2.sqlite3"
    with open_store(path) as s:
        ids = [s.save_article(_copy(h))[0] for h in ("a.example", "b.example", "c.example")]
    db = sqlite3.connect(path)
    db.execute("UPDATE articles SET simhash = NULL, dup_of = NULL")
    db.execute("DROP TABLE simhash_bands")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with open_store(path) as s:
        assert _groups(s) == {ids[0]: None, ids[1]: ids[0], ids[2]: ids[0]}
        assert s.count_primaries() == 1


def test_a_close_fingerprint_alone_does_not_merge_different_texts(any_store: Store, monkeypatch) -> None:
    """Same title, fingerprints equal (forced here), texts mostly different: two articles, not one."""
    import kb.store.base as store_base

    monkeypatch.setattr(store_base, "fingerprint", lambda text: 0x0123456789ABCDEF)
    first = any_store.save_article(_copy("a.example", ARTICLE))[0]
    reordered = " ".join(reversed(ARTICLE.split()))  # the same words, hardly a shingle in common
    other = any_store.save_article(_copy("b.example", reordered))[0]
    copy = any_store.save_article(_copy("c.example", ARTICLE))[0]
    assert _groups(any_store) == {first: None, other: None, copy: first}


# -- section markup (schema 4): stored beside the text, never indexed, filled in for older rows ---------------

MARKUP = "<p>Pore size is <strong>mostly genetic</strong>.</p>"


def _with_markup(html: str = MARKUP, **kw) -> Article:
    article = _article(**kw)
    article.sections[0].html = html
    return article


def test_section_markup_is_stored_and_read(any_store: Store) -> None:
    article_id, _ = any_store.save_article(_with_markup())
    assert any_store.get_article(article_id).sections[0].html == MARKUP
    assert any_store.save_article(_with_markup(text="Changed."))[1] == "updated"
    assert any_store.get_article(article_id).sections[0].html == MARKUP


def test_new_markup_for_unchanged_content_is_stored_without_a_change(any_store: Store) -> None:
    """Markup is not indexed: a better sanitiser's output lands on the next crawl, no reindex needed."""
    article_id, _ = any_store.save_article(_article())
    seq = any_store.last_change()
    assert any_store.save_article(_with_markup())[1] == "unchanged"
    assert any_store.get_article(article_id).sections[0].html == MARKUP
    assert any_store.last_change() == seq
    assert any_store.save_article(_article())[1] == "unchanged"  # sections built without markup do not wipe it
    assert any_store.get_article(article_id).sections[0].html == MARKUP


def test_version_3_store_gains_the_markup_column_and_keeps_its_rows(tmp_path) -> None:
    """A store written before section markup opens, keeps every row, reads "" markup and stores new markup."""
    import sqlite3

    path = tmp_path / "v3.sqlite3"
    with open_store(path) as s:
        old_id, _ = s.save_article(_article())
        hashes = s.read_hashes()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE sections DROP COLUMN html")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    assert "html" not in {r[1] for r in db.execute("PRAGMA table_info(sections)")}
    db.close()
    with open_store(path) as s:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION) == "6"
        old = s.get_article(old_id)
        assert (old.text, old.sections[0].text, old.sections[0].html) == (_article().text, "Pore size is mostly "
                                                                         "genetic.", "")
        assert s.read_hashes() == hashes  # nothing to reindex
        assert s.save_article(_with_markup())[1] == "unchanged"  # the next crawl fills the markup in
        new_id, status = s.save_article(_with_markup(url="https://clinic.example/b/"))
        assert status == "new"
        assert [s.get_article(i).sections[0].html for i in (old_id, new_id)] == [MARKUP, MARKUP]


def test_a_section_that_loses_boilerplate_is_read_without_its_markup(any_store: Store) -> None:
    """Markup cannot drop one paragraph: the article page then shows the stripped plain text."""
    ids = []
    for n in range(4):
        article = _site_page(n)
        for section in article.sections:
            section.html = "<p>" + "</p><p>".join(section.text.split("\n\n")) + "</p>"
        ids.append(any_store.save_article(article)[0])
    any_store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    read = any_store.get_article(ids[0])
    raw = any_store.get_raw_article(ids[0])
    assert CTA in raw.text and CTA not in read.text
    assert [s.html for s in read.sections] == [""] and CTA not in read.sections[0].text
    assert CTA in raw.sections[0].html


# -- the interface: what web, CLI and pipeline may call, and what a second implementation must provide ------------

def test_sqlite_store_offers_exactly_the_interface() -> None:
    """Code typed against Store can call every public method of SQLiteStore, with the same parameters."""
    assert not SQLiteStore.__abstractmethods__
    interface = {n for n, v in vars(Store).items() if not n.startswith("_") and callable(v)}
    offered = {n for n in dir(SQLiteStore) if not n.startswith("_") and callable(getattr(SQLiteStore, n))}
    assert offered == interface, "a public method outside the interface, or one missing"
    for name in sorted(interface):
        want = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(Store, name)).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(getattr(SQLiteStore, name)).parameters.values()]
        assert got == want, name


def test_every_interface_method_is_documented_and_driver_free() -> None:
    for name, member in vars(Store).items():
        if name.startswith("_") or not callable(member):
            continue
        doc = inspect.getdoc(member) or ""
        assert len(doc) > 20, f"Store.{name} says what it does"
        if "audiences" in inspect.signature(member).parameters:
            assert "audiences" in doc, f"Store.{name} says what it guarantees about audiences"
        assert "sqlite" not in str(inspect.get_annotations(member)).lower(), name


def test_transaction_yields_nothing_and_open_store_picks_sqlite_for_a_path(tmp_path) -> None:
    with open_store(tmp_path / "new" / "kb.sqlite3") as store:
        assert isinstance(store, SQLiteStore) and isinstance(store, Store)
        with store.transaction() as inside:
            assert inside is None  # no connection crosses the interface
    with pytest.raises(KBError) as refused:
        open_store("mysql://db.example/kb")
    assert "'mysql'" in refused.value.message and "postgresql://" in refused.value.remedy


def test_the_store_does_not_import_the_extractor() -> None:
    found = set()
    for path in (Path(__file__).parents[1] / "kb" / "store").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    assert "kb.models" in found and not {m for m in found if m == "kb.extract" or m.startswith("kb.extract.")}


# -- the audience filter, written once (kb.store.audience) -----------------------------------------------------------

PUBLIC, STAFF = ("public",), ("public", "staff")


def test_audience_sql_is_one_fragment_for_every_reader() -> None:
    assert audience_sql(PUBLIC) == ("audience IN (?)", ("public",))
    assert audience_sql(STAFF, "a.audience", "%s") == ("a.audience IN (%s, %s)", ("public", "staff"))
    assert audience_sql(()) == ("audience IN (NULL)", ())  # nobody: nothing matches
    assert audience_sql(None) == ("1 = 1", ())  # every audience: pipeline, indexer, CLI
    with pytest.raises(TypeError):
        audience_sql("public")  # would read as ("p", "u", "b", ...)


def _audience_world(store: Store) -> dict[str, int]:
    def save(url: str, audience: str, kind: str = "article", **kw) -> int:
        return store.save_article(Article(url=url, title=f"{audience} {kind} {url[-3:]}", text=f"About {url}.",
                                          site="clinic.example", audience=audience, kind=kind, **kw))[0]

    ids = {
        "public": save("https://clinic.example/acne/", "public", categories=["Acne"], tags=["retinoids"]),
        "staff": save("https://clinic.example/staff/protocol/", "staff", categories=["Protocols"], tags=["internal"]),
        "public_faq": save("https://clinic.example/faq/#a", "public", "faq", categories=["Visits"]),
        "staff_faq": save("https://clinic.example/staff/faq/#b", "staff", "faq", categories=["Escalation"]),
    }
    ids["staff_group"] = store.save_article(_copy("clinic.example", path="/staff/rosacea/", audience="staff"))[0]
    ids["staff_copy"] = store.save_article(_copy("partner.example", path="/staff/rosacea/", audience="staff"))[0]
    return ids


def test_every_read_for_a_reader_keeps_to_their_audiences(any_store: Store) -> None:
    ids = _audience_world(any_store)
    staff_only = {ids["staff"], ids["staff_faq"], ids["staff_group"], ids["staff_copy"]}
    # public readers: staff records are never returned, counted or listed
    assert any_store.get_article(ids["staff"], audiences=PUBLIC) is None
    assert any_store.get_visible_article(ids["staff"]) is None and any_store.get_visible_article(ids["public"])
    assert any_store.get_article_by_url("https://clinic.example/staff/protocol/", audiences=PUBLIC) is None
    assert any_store.get_raw_article(ids["staff"], audiences=PUBLIC) is None
    assert any_store.get_raw_article(url="https://clinic.example/staff/protocol/", audiences=PUBLIC) is None
    assert [a.id for a in any_store.iter_articles(audiences=PUBLIC)] == [ids["public"], ids["public_faq"]]
    assert [a.id for a in any_store.iter_articles(sorted(ids.values()), batch=2, audiences=PUBLIC)] == [
        ids["public"], ids["public_faq"]]
    assert any_store.count_articles(audiences=PUBLIC) == 2 and any_store.count_articles(audiences=PUBLIC, kind="faq") == 1
    assert any_store.counts_by("site", "audience", audiences=PUBLIC) == [
        {"site": "clinic.example", "audience": "public", "articles": 2}]
    assert {name for name, _ in any_store.topic_counts("categories", PUBLIC)} == {"Acne", "Visits"}
    assert {name for name, _ in any_store.topic_counts("tags", PUBLIC)} == {"retinoids"}
    assert [e["id"] for e in any_store.faq_entries(PUBLIC, limit=10)] == [ids["public_faq"]]
    assert any_store.faq_count(PUBLIC) == 1
    assert any_store.copies(ids["staff_copy"], PUBLIC) == []
    assert any_store.group_sources([ids["staff_group"]], audiences=PUBLIC) == {}
    # staff readers see both; nobody sees nothing
    assert {a.id for a in any_store.iter_articles(audiences=STAFF)} == set(ids.values())
    assert any_store.faq_count(STAFF) == 2 and any_store.count_articles(audiences=STAFF) == len(ids)
    assert [len(g) for g in any_store.group_sources([ids["staff_group"]], audiences=STAFF).values()] == [2]
    assert any_store.get_article(ids["public"], audiences=()) is None and any_store.count_articles(audiences=()) == 0
    # None: the pipeline's and indexer's view, every record
    assert {a.id for a in any_store.iter_articles()} == set(ids.values()) >= staff_only
    assert any_store.faq_entries(STAFF, limit=10)[1]["categories"] == ["Escalation"]
