"""kb.index: schema mapping, generations with an atomic swap, the loss guard, incremental updates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from whoosh import index as whoosh_index
from whoosh.query import Term
from whoosh.util.filelock import FileLock

from kb import index, schema
from kb.errors import KBError, LockHeld
from kb.models import Article, Section
from kb.search import Searcher
from kb.search.check import current_generation
from kb.search.state import _State
from tests.texts import ARTICLE, REPOST_FOOTER, REPOST_HEADER


def article(n: int, **kw) -> Article:
    base = dict(url=f"https://derm.example/a/{n}", title=f"Article {n} about skin", site="derm.example",
                text=f"Body of article {n}. Sunscreen protects skin. Word{n} appears here.",
                published=f"20{10 + n % 10:02d}-03-0{1 + n % 8}", tags=["Sun", "skin care"],
                categories=["Prevention"])
    base.update(kw)
    return Article(**base)


def fill(store, count: int, start: int = 0) -> list[int]:
    return [store.save_article(article(n))[0] for n in range(start, start + count)]


def doc_ids(root: Path) -> set[int]:
    return set(index.indexed_hashes(root))


def test_rebuild_creates_generation_swaps_pointer_and_records_seq(store, tmp_path):
    fill(store, 5)
    root = tmp_path / "ix"
    calls: list[tuple[int, int]] = []
    assert index.rebuild(store, root, progress=lambda done, total: calls.append((done, total))) == 5
    generation = current_generation(root)
    assert generation is not None and generation.name.startswith("gen-")
    assert (root / "CURRENT").read_text().strip() == generation.name
    assert schema.read_meta(generation)["seq"] == store.last_change()
    assert schema.read_meta(generation)["docs"] == 5
    assert calls[-1] == (5, 5)
    assert schema.read_meta(generation)["subindexes"] == {"public": 5, "staff": 0}
    ix = whoosh_index.open_dir(str(generation / "public"))
    try:
        assert ix.doc_count() == 5
    finally:
        ix.close()


def test_second_rebuild_keeps_previous_generation_and_removes_older(store, tmp_path):
    fill(store, 3)
    root = tmp_path / "ix"
    index.rebuild(store, root, grace=0)
    first = current_generation(root)
    index.rebuild(store, root, grace=0)
    second = current_generation(root)
    index.rebuild(store, root, grace=0)
    third = current_generation(root)
    assert len({first, second, third}) == 3
    assert not first.exists()  # older than the previous one: removed
    assert second.exists() and third.exists()  # current and previous kept for lingering readers
    assert not list(root.glob(".CURRENT*"))  # no temp pointer left behind


def test_grace_period_keeps_young_generations(store, tmp_path):
    fill(store, 2)
    root = tmp_path / "ix"
    for _ in range(3):
        index.rebuild(store, root)  # default grace: every generation is young
    assert len(list(root.glob("gen-*"))) == 3


def test_loss_guard_refuses_swap_and_force_overrides(store, tmp_path):
    ids = fill(store, 10)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    before = current_generation(root)
    for article_id in ids[:5]:
        store.delete_article(article_id)
    with pytest.raises(KBError) as excinfo:
        index.rebuild(store, root)
    assert "--force" in excinfo.value.remedy
    assert current_generation(root) == before
    assert len(list(root.glob("gen-*"))) == 1  # the refused build was removed
    assert index.rebuild(store, root, force=True) == 5
    assert current_generation(root) != before


def test_small_loss_within_max_loss_is_accepted(store, tmp_path):
    ids = fill(store, 20)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    store.delete_article(ids[0])
    assert index.rebuild(store, root) == 19


def test_update_without_index_builds_first_generation(store, tmp_path):
    fill(store, 4)
    root = tmp_path / "ix"
    assert index.update(store, root) == (4, 0)
    assert current_generation(root) is not None
    assert index.update(store, root) == (0, 0)


def test_update_applies_changes_and_equals_full_rebuild(store, tmp_path):
    ids = fill(store, 8)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    generation = current_generation(root)
    store.save_article(article(2, text="Changed body: retinoids and melasma now."))  # update
    store.delete_article(ids[5])
    store.delete_article(ids[6])
    store.save_article(article(50, title="New article on melasma"))  # add
    indexed, deleted = index.update(store, root)
    assert (indexed, deleted) == (2, 2)
    assert current_generation(root) == generation  # updated in place, no swap
    assert schema.read_meta(generation)["seq"] == store.last_change()
    fresh = tmp_path / "fresh"
    index.rebuild(store, fresh)
    assert index.indexed_hashes(root) == index.indexed_hashes(fresh)
    assert index.indexed_hashes(root) == {
        int(r["id"]): r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}
    a, b = Searcher(root), Searcher(fresh)
    try:
        for q in ("melasma", "retinoids", "sunscreen", "word5", "skin", '"sunscreen protects"'):
            ra, rb = a.search(q, per_page=20), b.search(q, per_page=20)
            assert ra.total == rb.total, q
            assert [h.id for h in ra.hits] == [h.id for h in rb.hits], q
            assert ra.facets == rb.facets, q
    finally:
        a.close()
        b.close()


def test_update_replays_nothing_twice_and_deletes_vanished_upserts(store, tmp_path):
    ids = fill(store, 3)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    store.save_article(article(0, text="Edited once."))
    assert index.update(store, root) == (1, 0)
    assert index.update(store, root) == (0, 0)
    # an id asked for that is no longer in the store is removed from the index
    assert index.reindex_ids(store, root, upsert={ids[1], 999}, delete=set()) == (1, 0)
    store.db.execute("DELETE FROM articles WHERE id = ?", (ids[2],))  # gone without a change record
    assert index.reindex_ids(store, root, upsert={ids[2]}, delete=set()) == (0, 1)
    assert doc_ids(root) == {ids[0], ids[1]}


def test_update_rebuilds_when_schema_version_changes(store, tmp_path, monkeypatch):
    fill(store, 3)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    old = current_generation(root)
    monkeypatch.setattr(index, "SCHEMA_VERSION", index.SCHEMA_VERSION + 1)
    assert index.update(store, root) == (3, 0)
    assert current_generation(root) != old


def test_writer_lock_held_raises_lockheld(store, tmp_path, monkeypatch):
    fill(store, 2)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    monkeypatch.setattr(index, "WRITER_TIMEOUT", 0.2)
    lock = FileLock(str(root / index.WRITE_LOCK))
    assert lock.acquire()
    try:
        with pytest.raises(LockHeld) as excinfo:
            index.update(store, root)
        assert "another process" in excinfo.value.message.lower()
        with pytest.raises(LockHeld):
            index.rebuild(store, root)
    finally:
        lock.release()
    store.save_article(article(9))
    assert index.update(store, root) == (1, 0)


def test_whoosh_lock_error_becomes_lockheld(store, tmp_path, monkeypatch):
    fill(store, 2)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    monkeypatch.setattr(index, "WRITER_TIMEOUT", 0.1)
    ix = whoosh_index.open_dir(str(current_generation(root) / "public"))
    writer = ix.writer()
    try:
        store.save_article(article(7))
        with pytest.raises(LockHeld):
            index.update(store, root)
    finally:
        writer.cancel()
        ix.close()


def test_current_generation_rejects_missing_or_unsafe_pointers(tmp_path):
    root = tmp_path / "ix"
    assert current_generation(root) is None
    root.mkdir()
    (root / "CURRENT").write_text("../elsewhere\n")
    assert current_generation(root) is None
    (root / "CURRENT").write_text("gen-missing\n")
    assert current_generation(root) is None
    (root / "gen-empty").mkdir()
    (root / "CURRENT").write_text("gen-empty\n")
    assert current_generation(root) is None  # a directory without a Whoosh index


def test_article_document_maps_fields_and_section_offsets():
    text = "Intro words here. Treatment: apply metronidazole twice daily. Causes: unknown triggers."
    a = Article(id=7, url="https://x.example/r", title="Rosacea: Causes & Care", text=text,
                sections=[Section("Treatment", "treatment", "Treatment: apply metronidazole twice daily."),
                          Section("Causes", "causes", "Causes: unknown triggers.")],
                tags=["Redness", "redness", "a,b", " "], categories=["Conditions"], published="2021-06-05T10:00:00+02:00",
                description="About rosacea.")
    doc = schema.article_document(a)
    assert doc["id"] == "7" and doc["title_key"] == "rosacea causes care"
    assert doc["tags"] == "Redness,a b"  # duplicates (any case) and separators removed
    assert doc["year"] == "2021" and doc["published"].tzinfo is None and doc["published"].hour == 8
    assert doc["lead"].startswith("About rosacea. Intro words here.")
    sections = schema.section_offsets(a)
    assert sections == [["treatment", "Treatment", text.index("Treatment:")], ["causes", "Causes", text.index("Causes:")]]
    assert schema.section_at(sections, text.index("metronidazole")) == ("treatment", "Treatment")
    assert schema.section_at(sections, 0) == ("", "")
    assert schema.section_at(sections, len(text) - 1) == ("causes", "Causes")
    with pytest.raises(ValueError):
        schema.article_document(Article(url="u", title="t", text="x"))


def test_unparseable_dates_are_left_out():
    doc = schema.article_document(Article(id=1, url="u", title="t", text="x", published="sometime in May"))
    assert "published" not in doc and "year" not in doc and doc["pubdate"] == "sometime in May"


def test_stored_fields_written_by_the_index_decode_back_into_the_article(store, tmp_path):
    """kb.schema encodes stored fields for the writer and decodes them for the reader: one round trip on disk."""
    text = "Intro. Treatment: apply cream nightly. Causes: heat and sun. Caf\u00e9 \U0001f600 stays."
    a = Article(url="https://a.example/x", title="Rosacea care", text=text, site="a.example", audience="staff",
                kind="faq", sections=[Section("Treatment", "treatment", "Treatment: apply cream nightly."),
                                      Section("Causes", "causes", "Causes: heat and sun.")],
                tags=["Redness", "a,b"], categories=["Conditions", "Care"], published="2021-06-05")
    article_id = store.save_article(a)[0]
    root = tmp_path / "ix"
    index.rebuild(store, root)
    ix = whoosh_index.open_dir(str(schema.subindex_dirs(current_generation(root))["staff"]))
    try:
        with ix.searcher() as searcher:
            [stored] = list(searcher.all_stored_fields())
    finally:
        ix.close()
    assert schema.stored_body(stored) == text
    assert schema.stored_sections(stored) == schema.section_offsets(a)
    hit = schema.stored_hit(stored, score=1.5, snippet_html="<mark>x</mark>", anchor="causes", section="Causes")
    assert (hit.id, hit.url, hit.title, hit.site, hit.audience, hit.kind, hit.published) == (
        article_id, a.url, a.title, a.site, "staff", "faq", "2021-06-05")
    assert hit.tags == ["Redness", "a b"] and hit.categories == ["Conditions", "Care"] and hit.sources == []
    assert (hit.score, hit.snippet_html, hit.anchor, hit.section) == (1.5, "<mark>x</mark>", "causes", "Causes")
    a.id, a.sources = article_id, [{"url": "https://a.example/x", "site": "a.example", "title": "X"},
                                   {"url": "https://b.example/x", "site": "b.example", "title": "X"}]
    grouped = schema.stored_hit(schema.article_document(a), score=0, snippet_html="", anchor="", section="")
    assert grouped.sources == a.sources


def test_pointer_swap_is_atomic_replace(store, tmp_path, monkeypatch):
    fill(store, 2)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(index.os, "replace", spy)
    index.rebuild(store, root)
    assert any(dst == "CURRENT" and src.startswith(".CURRENT") for src, dst in replaced)


def test_full_build_writes_segments_and_updates_merge_only_small_ones(store, tmp_path, monkeypatch):
    monkeypatch.setattr(index, "SEGMENT_TEXT_MB", 0.0005)  # ~500 bytes of text per segment
    ids = fill(store, 12)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    ix = whoosh_index.open_dir(str(current_generation(root) / "public"))
    try:
        built = len(ix._segments())
    finally:
        ix.close()
    assert built >= 4  # several segments instead of one spilled sort
    monkeypatch.setattr(index, "SMALL_SEGMENT_DOCS", 2)
    for n, article_id in enumerate(ids[:5]):
        store.save_article(article(n, text=f"Edited {n}."))
        index.update(store, root)  # each update adds a one-document segment
    ix = whoosh_index.open_dir(str(current_generation(root) / "public"))
    try:
        sizes = [seg.doc_count_all() for seg in ix._segments()]
    finally:
        ix.close()
    assert sum(1 for n in sizes if n < 2) < index.MERGE_SMALL_COUNT  # small ones were folded together
    assert len(sizes) < built + 5
    assert index.indexed_hashes(root) == {
        int(r["id"]): r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}


# -- near-duplicate groups: one document per group, listing every source ------------------------------


ROSACEA = "Rosacea: triggers and laser treatment"


def _copy(store, host: str, text: str = ARTICLE) -> int:
    return store.save_article(Article(url=f"https://{host}/rosacea/", title=ROSACEA, text=text, site=host,
                                      sections=[Section("Triggers", "triggers", text[:120])]))[0]


def _search(root: Path, query: str):
    searcher = Searcher(root)
    try:
        return searcher.search(query, per_page=20)
    finally:
        searcher.close()


def test_rebuild_indexes_one_document_per_group_with_every_source(store, tmp_path):
    others = fill(store, 3)
    a = _copy(store, "clinic-a.example")
    b = _copy(store, "partner-b.example", REPOST_HEADER + ARTICLE + REPOST_FOOTER)
    root = tmp_path / "ix"
    assert index.rebuild(store, root) == 4  # 3 + one group; the count check compares with the primaries
    assert doc_ids(root) == {*others, a} and b not in doc_ids(root)
    results = _search(root, "ivermectin azelaic")
    assert results.total == 1
    hit = results.hits[0]
    assert hit.id == a and [s["url"] for s in hit.sources] == [
        "https://clinic-a.example/rosacea/", "https://partner-b.example/rosacea/"]
    assert [s["site"] for s in hit.sources] == ["clinic-a.example", "partner-b.example"]
    assert hit.to_json()["sources"] == hit.sources
    assert _search(root, "word1").hits[0].sources == []  # not merged: no source list


def test_update_follows_groups_and_equals_a_full_rebuild(store, tmp_path):
    fill(store, 2)
    a = _copy(store, "a.example")
    root = tmp_path / "ix"
    index.rebuild(store, root)
    assert _search(root, "ivermectin").hits[0].sources == []
    b = _copy(store, "b.example", ARTICLE + REPOST_FOOTER)  # a repost appears
    c = _copy(store, "c.example", REPOST_HEADER + ARTICLE)
    index.update(store, root)
    assert a in doc_ids(root) and not {b, c} & doc_ids(root)
    hit = _search(root, "ivermectin").hits[0]
    assert (hit.id, [s["site"] for s in hit.sources]) == (a, ["a.example", "b.example", "c.example"])
    store.delete_article(a)  # the first copy goes: the next one heads the group and gets the document
    index.update(store, root)
    results = _search(root, "ivermectin")
    assert results.total == 1 and results.hits[0].id == b
    assert [s["site"] for s in results.hits[0].sources] == ["b.example", "c.example"]
    fresh = tmp_path / "fresh"
    index.rebuild(store, fresh)
    assert index.indexed_hashes(root) == index.indexed_hashes(fresh)


def test_document_hash_covers_the_source_list(store, tmp_path):
    a = _copy(store, "a.example")
    article_a = store.get_article(a)
    assert schema.article_document(article_a)["hash"] == article_a.content_hash
    article_a.sources = [{"url": "https://a.example/rosacea/", "site": "a.example", "title": ROSACEA},
                         {"url": "https://b.example/rosacea/", "site": "b.example", "title": ROSACEA}]
    doc = schema.article_document(article_a)
    assert doc["hash"] != article_a.content_hash and json.loads(doc["sources"]) == article_a.sources


# -- audiences in separate sub-indexes ----------------------------------------------------------------

def sub_ids(root: Path, name: str) -> set[int]:
    """Article ids of the live documents in one sub-index of the current generation, read with Whoosh."""
    ix = whoosh_index.open_dir(str(schema.subindex_dirs(current_generation(root))[name]))
    try:
        with ix.searcher() as searcher:
            return {int(fields["id"]) for fields in searcher.all_stored_fields()}
    finally:
        ix.close()


def test_each_audience_has_its_own_sub_index_and_none_is_indexed_twice(store, tmp_path):
    public = fill(store, 4)
    staff = [store.save_article(article(n, audience="staff"))[0] for n in range(10, 13)]
    odd = store.save_article(article(20, audience="partners"))[0]  # unknown audiences count as staff
    root = tmp_path / "ix"
    assert index.rebuild(store, root) == 8
    assert sub_ids(root, "public") == set(public)
    assert sub_ids(root, "staff") == set(staff) | {odd}
    assert schema.read_meta(current_generation(root))["subindexes"] == {"public": 4, "staff": 4}
    assert schema.subindexes_for(("public",)) == ("public",)
    assert schema.subindexes_for(("public", "staff")) == schema.subindexes_for(("staff",)) == ("public", "staff")
    assert doc_ids(root) == set(public) | set(staff) | {odd}


def test_a_full_build_cuts_segments_in_both_sub_indexes(store, tmp_path, monkeypatch):
    monkeypatch.setattr(index, "SEGMENT_TEXT_MB", 0.0005)  # ~500 bytes of uncommitted text in all
    for n in range(16):
        store.save_article(article(n, audience="staff" if n % 2 else "public"))
    root = tmp_path / "ix"
    assert index.rebuild(store, root) == 16
    generation = current_generation(root)
    for name in schema.SUBINDEXES:
        ix = whoosh_index.open_dir(str(generation / name))
        try:
            assert len(ix._segments()) >= 2 and ix.doc_count() == 8
        finally:
            ix.close()
    assert index.indexed_hashes(root) == {
        int(r["id"]): r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}


def _toc(generation: Path, name: str) -> int:
    ix = whoosh_index.open_dir(str(generation / name))
    try:
        return ix.latest_generation()
    finally:
        ix.close()


def test_a_staff_only_update_does_not_commit_the_public_sub_index(store, tmp_path):
    fill(store, 3)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    generation = current_generation(root)
    public_toc, staff_toc = _toc(generation, "public"), _toc(generation, "staff")
    store.save_article(article(30, audience="staff"))
    assert index.update(store, root) == (1, 0)
    assert _toc(generation, "public") == public_toc  # anonymous readers see no commit, keep their caches
    assert _toc(generation, "staff") > staff_toc
    assert schema.read_meta(generation)["subindexes"] == {"public": 3, "staff": 1}


def _legacy_generation(store, root: Path) -> Path:
    """A generation as kb built it before SCHEMA_VERSION 3: one Whoosh index for every audience."""
    generation = root / "gen-20200101T000000000000"
    generation.mkdir(parents=True)
    ix = whoosh_index.create_in(str(generation), schema.build_schema())
    with ix.writer() as writer:
        for article_id in store.primary_ids():
            writer.add_document(**schema.article_document(store.get_article(article_id)))
    ix.close()
    (generation / schema.META).write_text(json.dumps({"seq": store.last_change(), "schema": 2, "docs": 3}))
    (root / schema.POINTER).write_text(generation.name + "\n")
    return generation


def test_an_old_single_index_generation_is_rebuilt_by_update_with_a_log_line(store, tmp_path, caplog):
    from kb.errors import IndexUnavailable

    fill(store, 2)
    store.save_article(article(9, audience="staff"))
    root = tmp_path / "ix"
    legacy = _legacy_generation(store, root)
    assert current_generation(root) is None and schema.is_legacy(legacy)
    searcher = Searcher(root)
    try:
        with pytest.raises(IndexUnavailable) as excinfo:
            searcher.search("sunscreen")
        assert "older kb" in excinfo.value.message and "kb reindex" in excinfo.value.remedy
        assert index.indexed_hashes(root) == {}  # `kb check` reports it missing, `--repair` rebuilds
        with caplog.at_level("WARNING", logger="kb.index"):
            assert index.update(store, root) == (3, 0)
        assert any(legacy.name in r.getMessage() and "older kb" in r.getMessage() for r in caplog.records)
        assert current_generation(root) not in (None, legacy)
        assert searcher.search("sunscreen").total == 2  # the same searcher picks the new layout up
        assert searcher.search("sunscreen", audiences=("public", "staff")).total == 3
    finally:
        searcher.close()


def test_an_old_single_index_generation_is_replaced_by_reindex(store, tmp_path, caplog):
    fill(store, 3)
    root = tmp_path / "ix"
    legacy = _legacy_generation(store, root)
    with caplog.at_level("WARNING", logger="kb.index"):
        assert index.rebuild(store, root) == 3
    assert any("older kb" in r.getMessage() for r in caplog.records)
    assert current_generation(root) != legacy and doc_ids(root) == set(store.primary_ids())


def test_kb_check_sees_a_document_filed_in_the_wrong_sub_index_and_repair_moves_it(store, tmp_path):
    from kb.maintenance import check

    fill(store, 2)
    staff_id = store.save_article(article(7, audience="staff"))[0]
    root = tmp_path / "ix"
    index.rebuild(store, root)
    assert check(store, root)["ok"]
    ix = whoosh_index.open_dir(str(current_generation(root) / "public"))
    with ix.writer() as writer:  # a staff document in the public index, as a faulty writer might leave it
        writer.add_document(**schema.article_document(store.get_article(staff_id)))
    ix.close()
    report = check(store, root)
    assert not report["ok"] and report["stale"] == [staff_id]
    assert check(store, root, repair=True)["repaired"]
    assert staff_id not in sub_ids(root, "public") and staff_id in sub_ids(root, "staff")


# -- a record leaving the public sub-index is purged from its segments -------------------------------------

def segments(root: Path, name: str) -> dict[str, tuple[int, int]]:
    """Segment name -> (documents including deleted ones, deleted ones) of one sub-index, read from its TOC."""
    ix = whoosh_index.open_dir(str(schema.subindex_dirs(current_generation(root))[name]))
    try:
        return {seg.segment_id(): (seg.doc_count_all(), seg.deleted_count()) for seg in ix._segments()}
    finally:
        ix.close()


def segment_files(root: Path, name: str) -> set[str]:
    """File names on disk of one sub-index's segments (the TOC and locks left out)."""
    path = schema.subindex_dirs(current_generation(root))[name]
    return {p.name for p in path.iterdir() if p.name.startswith("MAIN_") and not p.name.endswith(".toc")}


def test_an_ordinary_public_edit_or_deletion_rewrites_no_segment(store, tmp_path):
    ids = fill(store, 6)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    built, files = segments(root, "public"), segment_files(root, "public")
    store.save_article(article(1, text="Edited: sunscreen and melasma."))  # its old text was public
    store.delete_article(ids[4])
    assert index.update(store, root) == (1, 1)
    after = segments(root, "public")
    assert set(built) < set(after)  # the full build's segment is still there, one segment added
    assert [after[name] for name in built] == [(6, 2)]  # holding both old copies, marked deleted
    assert files < segment_files(root, "public")  # not one of its files was rewritten


def test_a_record_moving_to_staff_rewrites_only_the_public_segments_that_held_it(store, tmp_path):
    ids = fill(store, 6)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    (built,) = segments(root, "public")
    later = []
    for n in (20, 21):  # two updates: two small segments of one document each
        later.append(store.save_article(article(n))[0])
        assert index.update(store, root) == (1, 0)
    before = segments(root, "public")
    assert len(before) == 3 and before[built] == (6, 0)
    staff_toc = segments(root, "staff")
    store.save_article(article(2, audience="staff"))  # leaves the full build's segment
    store.save_article(article(21, audience="staff"))  # leaves a small one
    assert index.update(store, root) == (2, 0)
    after = segments(root, "public")
    assert all(deleted == 0 for _, deleted in after.values())  # no deleted copy of a staff record remains
    assert built not in after  # rewritten without it ...
    first, second = (name for name in before if name != built)  # the segments of article 20, then 21
    assert first in after and second not in after  # ... a segment that never held one was not
    assert sorted(after.values()) == [(1, 0), (5, 0)]  # 21's segment, all deleted, was dropped
    assert sub_ids(root, "public") == (set(ids) - {ids[2]}) | {later[0]}
    (rewritten,) = set(after) - {first}
    public = schema.subindex_dirs(current_generation(root))["public"]
    assert (public / f"{rewritten}.trm").exists()  # kept the full build's separate files (not one .seg)
    assert set(staff_toc) <= set(segments(root, "staff"))  # staff is only added to
    assert index.indexed_hashes(root) == {
        int(r["id"]): r["content_hash"] for r in store.db.execute("SELECT id, content_hash FROM articles")}


# -- an update that rewrites segments leaves running searches their files ------------------------------

def held_answers(searcher) -> tuple[list[dict], list[tuple[str, float]]]:
    """What a search holding `searcher` reads: every stored document, and BM25 scores of a body query."""
    stored = [searcher.stored_fields(n) for n in searcher.reader().all_doc_ids()]
    hits = searcher.search(Term("body", "sunscreen"), limit=None)
    return stored, [(hit["id"], hit.score) for hit in hits]


def hold_public_searcher(root: Path):
    """A public state and a searcher borrowed from it, as a web worker's running request holds them.

    Returns also what it should answer, read through another state: the held one has loaded nothing
    lazily yet (the race is with files a searcher opens after the commit).
    """
    generation = current_generation(root)
    reference = _State(generation, ("public",))
    searcher = reference.acquire()
    try:
        expected = held_answers(searcher)
    finally:
        reference.release(searcher)
        reference.retire()
    state = _State(generation, ("public",))
    return state, state.acquire(), expected


def test_a_search_opened_before_a_move_to_staff_keeps_its_files_and_scores(store, tmp_path):
    ids = fill(store, 6)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    old_generation = current_generation(root)
    state, held, before = hold_public_searcher(root)
    try:
        assert len(before[0]) == 6 and len(before[1]) == 6
        store.save_article(article(2, audience="staff"))  # its public segment is rewritten without it
        assert index.update(store, root) == (1, 0)
        assert held_answers(held) == before  # same stored fields, same scores: no file was taken away
        assert current_generation(root) != old_generation and old_generation.is_dir()
    finally:
        state.release(held)
        state.retire()
    fresh = Searcher(root)  # a new request reads the new generation
    try:
        results = fresh.search("sunscreen", per_page=20)
        assert sorted(int(h.id) for h in results.hits) == sorted(set(ids) - {ids[2]})
    finally:
        fresh.close()
    assert sub_ids(root, "public") == set(ids) - {ids[2]} and ids[2] in sub_ids(root, "staff")


def test_a_search_opened_before_small_segments_are_folded_keeps_its_files(store, tmp_path):
    fill(store, 3)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    for n in range(20, 20 + index.MERGE_SMALL_COUNT - 1):  # with the build's, MERGE_SMALL_COUNT small segments
        store.save_article(article(n))
        index.update(store, root)
    old_generation = current_generation(root)
    assert len(segments(root, "public")) == index.MERGE_SMALL_COUNT
    state, held, before = hold_public_searcher(root)
    try:
        store.save_article(article(1, text="Edited: sunscreen and melasma, sunscreen daily."))
        assert index.update(store, root) == (1, 0)
        assert held_answers(held) == before
        assert current_generation(root) != old_generation
        assert len(segments(root, "public")) == 1  # folded in the new generation
    finally:
        state.release(held)
        state.retire()


def test_an_update_that_only_adds_and_deletes_stays_in_its_generation(store, tmp_path):
    ids = fill(store, 4)
    root = tmp_path / "ix"
    index.rebuild(store, root)
    generation = current_generation(root)
    state, held, before = hold_public_searcher(root)
    try:
        store.save_article(article(1, text="Edited: sunscreen twice, sunscreen."))
        store.delete_article(ids[3])
        assert index.update(store, root) == (1, 1)
        assert current_generation(root) == generation  # no copy, no swap
        assert held_answers(held) == before  # deletions went to a new TOC; the old reader is untouched
    finally:
        state.release(held)
        state.retire()
