"""Backup while writing, verified restore that never loses data, stats, and store/index consistency checks."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest

from kb.config import data_paths
from kb.errors import KBError, LockHeld
from kb.lock import writer_lock
from kb.maintenance import backup, check, health, restore, stats
from kb.models import Article, Section
from kb.store import Store, open_store

TOPICS = [
    ("Rosacea", "Rosacea causes facial redness and flushing; pulsed dye laser (VBeam) reduces visible vessels."),
    ("Acne vulgaris", "Acne (zits) responds to topical retinoids, benzoyl peroxide and isotretinoin."),
    ("Melasma", "Melasma is brown facial pigmentation; sun protection and hydroquinone help."),
    ("Melanoma", "Melanoma is a skin cancer; the ABCDE rule helps spot a changing mole."),
    ("Botulinum toxin", "Botox (onabotulinumtoxinA) relaxes frown lines for three to four months."),
    ("Eczema", "Atopic dermatitis (eczema) needs emollients; dupilumab treats severe disease."),
]


def _article(n: int, title: str = "", text: str = "", audience: str = "public",
             site: str = "clinic.example") -> Article:
    title = title or f"Article {n}"
    return Article(url=f"https://{site}/a/{n}", title=title, text=text or f"Body of article {n}.", site=site,
                   audience=audience, sections=[Section(f"{title} treatment", f"s{n}", f"Treatment of {title}.")])


def _fill(store: Store) -> None:
    for n, (title, text) in enumerate(TOPICS):
        store.save_article(_article(n, title, text, audience="staff" if n == 5 else "public",
                                    site="derm.example" if n % 2 else "clinic.example"))


def _count(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        count = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
    conn.close()
    return count


def test_backup_while_another_connection_writes(data_dir: Path, tmp_path: Path) -> None:
    store_path = data_paths(data_dir)["store"]
    with open_store(store_path) as s:
        for n in range(300):
            s.save_article(_article(n, text="word " * 400))
    (data_dir / "sources.toml").write_text('[[site]]\nurl = "https://clinic.example/"\n')
    (data_dir / "vocabulary.toml").write_text('[terms]\nzits = "acne"\n')
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        with open_store(store_path) as w:
            n = 1000
            while not stop.is_set():
                w.save_article(_article(n, text="fresh " * 400))
                written.append(n)
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 5:
            threading.Event().wait(0.01)
        made = backup(data_dir, tmp_path / "backups")
        made_too = backup(data_dir, tmp_path / "backups")
    finally:
        stop.set()
        thread.join()
    assert len(written) > 5, "the writer kept writing during the backup"
    assert made != made_too and made.name.startswith("kb-backup-")
    manifest = json.loads((made / "manifest.json").read_text())
    assert set(manifest["files"]) == {"kb.sqlite3", "sources.toml", "vocabulary.toml"}
    copy = made / "kb.sqlite3"
    assert not Path(f"{copy}-wal").exists(), "the backup is one self-contained file"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        articles, sections = conn.execute(
            "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM sections)").fetchone()
    conn.close()
    assert manifest["articles"] == articles
    assert 300 < articles <= 300 + len(written)
    assert sections == articles, "a consistent snapshot: every article has its section"


def test_backup_without_a_store_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KBError, match="no store to back up"):
        backup(data_dir, tmp_path / "b")


def test_restore_into_an_empty_directory_and_refusal_to_overwrite(store: Store, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    _fill(store)
    (data_dir / "sources.toml").write_text("# sites\n")
    made = backup(data_dir, tmp_path / "b")
    fresh = tmp_path / "fresh"
    info = restore(made, fresh, reindex=False)
    assert info["articles"] == len(TOPICS) and info["safety_backup"] is None
    assert _count(data_paths(fresh)["store"]) == len(TOPICS)
    assert (fresh / "sources.toml").read_text() == "# sites\n"
    with pytest.raises(KBError, match="already has a store") as refused:
        restore(made, fresh, reindex=False)
    assert "--force" in refused.value.remedy


def test_forced_restore_keeps_a_safety_backup_and_live_readers_see_it(store: Store, data_dir: Path,
                                                                       tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b")
    for n in range(10, 15):
        store.save_article(_article(n))  # written after the backup: must survive in the safety copy
    assert store.count_articles() == len(TOPICS) + 5
    info = restore(made, data_dir, force=True, reindex=False)
    assert store.count_articles() == len(TOPICS), "an open connection sees the restored store"
    safety = Path(info["safety_backup"])
    assert safety.parent == data_dir / "backups"
    assert _count(safety / "kb.sqlite3") == len(TOPICS) + 5
    again = restore(safety, data_dir, force=True, reindex=False)  # and the safety copy restores
    assert store.count_articles() == len(TOPICS) + 5 and again["safety_backup"]


def test_differing_config_files_are_not_overwritten_without_force(store: Store, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    _fill(store)
    (data_dir / "sources.toml").write_text("# old\n")
    made = backup(data_dir, tmp_path / "b")
    other = tmp_path / "other"
    other.mkdir()
    (other / "sources.toml").write_text("# hand-edited, not in any backup\n")
    with pytest.raises(KBError, match="sources.toml"):
        restore(made, other, reindex=False)
    assert (other / "sources.toml").read_text() == "# hand-edited, not in any backup\n"
    assert not data_paths(other)["store"].exists()


def test_archive_backup_restores(store: Store, data_dir: Path, tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b", archive=True)
    assert made.name.endswith(".tar.gz") and tarfile.is_tarfile(made)
    assert [p.name for p in made.parent.iterdir()] == [made.name], "no partial files left behind"
    restore(made, tmp_path / "fresh", reindex=False)
    assert _count(data_paths(tmp_path / "fresh")["store"]) == len(TOPICS)
    assert not list((tmp_path / "fresh").glob(".restore-*")), "the unpacked copy is cleaned up"


def test_damaged_or_foreign_backups_are_refused_before_anything_changes(store: Store, data_dir: Path,
                                                                         tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b")
    with (made / "kb.sqlite3").open("r+b") as fh:
        fh.seek(5000)
        fh.write(b"\x00garbage\x00" * 50)
    with pytest.raises(KBError, match="damaged"):
        restore(made, data_dir, force=True, reindex=False)
    assert store.count_articles() == len(TOPICS)
    assert not (data_dir / "backups").exists(), "refused before even the safety backup"
    with pytest.raises(KBError, match="not a kb backup"):
        restore(tmp_path, data_dir, force=True, reindex=False)
    with pytest.raises(KBError, match="no backup at"):
        restore(tmp_path / "nope", data_dir)


def test_corrupt_store_fails_the_integrity_check(store: Store, data_dir: Path, tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b")
    db = made / "kb.sqlite3"
    with sqlite3.connect(db) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sections'").fetchone()[0]
    conn.close()
    raw = bytearray(db.read_bytes())
    start = (page - 1) * 4096
    raw[start:start + 8] = b"\xff" * 8  # an invalid b-tree page header; then re-sign the manifest
    db.write_bytes(bytes(raw))
    manifest = json.loads((made / "manifest.json").read_text())
    manifest["files"]["kb.sqlite3"] = hashlib.sha256(bytes(raw)).hexdigest()
    (made / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KBError, match="integrity"):
        restore(made, tmp_path / "fresh", reindex=False)
    assert not data_paths(tmp_path / "fresh")["store"].exists()


def test_restore_waits_for_no_writer(store: Store, data_dir: Path, tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b")
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            restore(made, data_dir, force=True, reindex=False)
        except LockHeld as exc:
            errors.append(exc)

    with writer_lock(data_dir, "crawl"):
        t = threading.Thread(target=attempt)
        t.start()
        t.join()
    assert errors and "kb crawl is already running" in errors[0].message


def test_stats_counts_sites_audiences_crawls_and_sizes(store: Store, data_dir: Path) -> None:
    _fill(store)
    crawl = store.start_crawl("clinic")
    store.finish_crawl(crawl, {"fetched": 6})
    result = stats(store, data_paths(data_dir)["index"])
    assert result["articles"] == len(TOPICS)
    assert result["by_audience"] == {"public": 5, "staff": 1}
    assert result["by_site"] == {"clinic.example": {"public": 3}, "derm.example": {"public": 2, "staff": 1}}
    assert result["last_crawl"]["source"] == "clinic" and result["last_crawl"]["stats"] == {"fetched": 6}
    assert result["index"]["generation"] is None and result["index"]["size_bytes"] == 0
    assert result["store"]["size_bytes"] > 0
    assert result["writer"] is None
    json.dumps(result)  # `kb stats --json` prints it as is


# -- with the index --------------------------------------------------------------------------------

def test_check_finds_missing_orphaned_and_stale_then_repairs(store: Store, data_dir: Path) -> None:
    from kb.index import rebuild

    index_root = data_paths(data_dir)["index"]
    _fill(store)
    first = check(store, index_root)
    assert not first["ok"] and first["generation"] is None and len(first["missing"]) == len(TOPICS)
    assert check(store, index_root, repair=True)["repaired"]
    assert rebuild(store, index_root) == len(TOPICS)
    assert check(store, index_root)["ok"]

    new_id, _ = store.save_article(_article(50, "Psoriasis", "Psoriasis plaques respond to phototherapy."))
    gone = store.article_ids()["https://clinic.example/a/2"]
    store.delete_article(gone)
    changed = store.get_article_by_url("https://derm.example/a/1")
    changed.text += " Azelaic acid also helps."
    store.save_article(changed)
    found = check(store, index_root)
    assert (found["missing"], found["orphaned"], found["stale"]) == ([new_id], [gone], [changed.id])
    assert not found["ok"] and not found["repaired"]

    fixed = check(store, index_root, repair=True)
    assert fixed["repaired"] and fixed["after"]["missing"] == fixed["after"]["stale"] == []
    again = check(store, index_root)
    assert again["ok"] and again["index_documents"] == store.count_articles()


@pytest.mark.parametrize("pattern", ["*.pst", "*_stored.col"])
def test_check_reads_the_index_as_searches_do_and_repair_rebuilds(store: Store, data_dir: Path, pattern: str) -> None:
    """A file cut in half used to pass `kb check` (hashes come from a column) while searches crashed."""
    from kb import index
    from kb.search import Searcher

    index_root = data_paths(data_dir)["index"]
    _fill(store)
    index.rebuild(store, index_root)
    damaged = index.current_generation(index_root)
    for path in damaged.rglob(pattern):
        os.truncate(path, path.stat().st_size // 2)
    found = check(store, index_root)
    assert not found["ok"] and found["generation"] == damaged.name
    assert found["damaged"] and all(p.startswith(("public/", "staff/")) for p in found["damaged"])
    assert found["index_documents"] == 0  # a damaged index counts as none

    fixed = check(store, index_root, repair=True)
    assert fixed["repaired"] and fixed["after"]["damaged"] == [] and fixed["after"]["generation"] != damaged.name
    searcher = Searcher(index_root)
    try:
        assert searcher.search("rosacea", audiences=("public",)).total >= 1
    finally:
        searcher.close()


def test_health_counts_an_unreadable_index_as_none(store: Store, data_dir: Path) -> None:
    from kb.index import rebuild
    from kb.search.check import current_generation

    _fill(store)
    rebuild(store, data_paths(data_dir)["index"])
    for toc in current_generation(data_paths(data_dir)["index"]).rglob("_MAIN_*.toc"):
        toc.write_bytes(b"")
    assert health(data_dir) == {"ok": False, "store": "ok", "index": "unreadable", "writer": None}


def test_stats_report_the_index_generation(store: Store, data_dir: Path) -> None:
    from kb.index import rebuild

    index_root = data_paths(data_dir)["index"]
    _fill(store)
    rebuild(store, index_root)
    store.save_article(_article(60))
    result = stats(store, index_root)
    assert result["index"]["generation"].startswith("gen-")
    assert result["index"]["documents"] == len(TOPICS)
    assert result["index"]["pending_changes"] == 1
    assert result["index"]["size_bytes"] > 0 and result["index"]["built_at"]


def test_health_needs_a_readable_store_and_an_index(store: Store, data_dir: Path) -> None:
    from kb.index import rebuild

    _fill(store)
    before = health(data_dir)
    assert before == {"ok": False, "store": "ok", "index": "missing", "writer": None}
    rebuild(store, data_paths(data_dir)["index"])
    with writer_lock(data_dir, "crawl"):
        during = health(data_dir)
    assert during["ok"] and during["index"].startswith("gen-") and during["writer"]["command"] == "crawl"
    assert str(data_dir) not in json.dumps(during), "no paths on a public endpoint"
    assert not health(data_dir.parent / "elsewhere")["ok"]


def test_restore_then_rebuild_reproduces_the_same_search_results(store: Store, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    from kb.index import rebuild
    from kb.search import Searcher

    _fill(store)
    rebuild(store, data_paths(data_dir)["index"])
    queries = ["rosacea", "laser", "skin", "botox", "facial", "eczema treatment"]

    def results(root: Path) -> list[list[tuple]]:
        searcher = Searcher(data_paths(root)["index"])
        try:
            return [[(h.id, h.url, h.title, h.anchor, round(h.score, 6)) for h in
                     searcher.search(q, audiences=("public", "staff")).hits] for q in queries]
        finally:
            searcher.close()

    original = results(data_dir)
    assert sum(map(len, original)) >= len(queries), "the queries find something to compare"
    made = backup(data_dir, tmp_path / "b", archive=True)
    info = restore(made, tmp_path / "restored")
    assert info["reindexed"] and info["indexed"] == len(TOPICS)
    assert results(tmp_path / "restored") == original


def test_check_agrees_after_a_boilerplate_change_and_update(store: Store, data_dir: Path) -> None:
    """The index holds the hash of the article as read (boilerplate stripped); check compares like with like."""
    from kb.index import rebuild, update

    index_root = data_paths(data_dir)["index"]
    cta = "Book a consultation today with our friendly dermatology team at Riverside Clinic."
    ids = [store.save_article(_article(n, title, f"{text}\n\n{cta}"))[0] for n, (title, text) in enumerate(TOPICS)]
    plain = store.save_article(_article(70, "Vitiligo", "Vitiligo is a loss of pigment in patches."))[0]
    assert rebuild(store, index_root) == len(TOPICS) + 1
    assert check(store, index_root)["ok"]
    store.refresh_boilerplate("clinic.example", min_share=0.5, min_pages=3)
    found = check(store, index_root)
    assert not found["ok"] and found["stale"] == sorted(ids)  # indexed with the call to book still in
    assert update(store, index_root) == (len(ids), 0)
    assert check(store, index_root)["ok"]
    assert plain not in found["stale"]
    # A disclaimer flag set by the schema-2 backfill (hash taken before the flag existed) reads consistently too.
    store.db.execute("UPDATE articles SET disclaimer = 1 WHERE id = ?", (plain,))
    assert rebuild(store, index_root) == len(TOPICS) + 1
    assert check(store, index_root)["ok"]


def test_check_compares_the_index_with_near_duplicate_groups(store: Store, data_dir: Path) -> None:
    """One document per group: a copy is not "missing", and a primary whose source list is out of date is stale."""
    from kb.index import rebuild
    from tests.texts import ARTICLE, REPOST_FOOTER

    index_root = data_paths(data_dir)["index"]
    _fill(store)
    title = "Rosacea: triggers and laser treatment"
    first = store.save_article(_article(60, title, ARTICLE))[0]
    rebuild(store, index_root)
    assert check(store, index_root)["ok"]
    copy = store.save_article(_article(61, title, ARTICLE + REPOST_FOOTER, site="partner.example"))[0]  # not indexed yet
    assert store.copies(copy)[0]["id"] == first
    found = check(store, index_root)
    assert (found["missing"], found["orphaned"], found["stale"]) == ([], [], [first])
    assert found["store_articles"] == len(TOPICS) + 2 and found["store_duplicates"] == 1
    assert check(store, index_root, repair=True)["repaired"]
    again = check(store, index_root)
    assert again["ok"] and again["index_documents"] == store.count_articles() - 1
