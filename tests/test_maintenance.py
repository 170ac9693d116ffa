"""Backup while writing, verified restore that never loses data, stats, and store/index consistency checks.

Every behaviour both backends have runs on both (`each_indexed_backend`: SQLite + Whoosh, and PostgreSQL with its
search generation and streaming replica); tests of SQLite files or Whoosh directories say why they stay embedded.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tarfile
import threading
import time
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


# Embedded only: copies the SQLite file with SQLite's online backup API (PostgreSQL: pg_dump).
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


# Embedded only: looks for the SQLite file in the data directory.
def test_backup_without_a_store_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KBError, match="no store to back up"):
        backup(data_dir, tmp_path / "b")


# Embedded only: restores a SQLite file (PostgreSQL refusal: see the restore-then-rebuild test).
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


# Embedded only: replaces a SQLite file under an open connection.
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


# Embedded only: a restore of a SQLite backup and its *.toml files.
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


# Embedded only: a .tar.gz of a SQLite backup.
def test_archive_backup_restores(store: Store, data_dir: Path, tmp_path: Path) -> None:
    _fill(store)
    made = backup(data_dir, tmp_path / "b", archive=True)
    assert made.name.endswith(".tar.gz") and tarfile.is_tarfile(made)
    assert [p.name for p in made.parent.iterdir()] == [made.name], "no partial files left behind"
    restore(made, tmp_path / "fresh", reindex=False)
    assert _count(data_paths(tmp_path / "fresh")["store"]) == len(TOPICS)
    assert not list((tmp_path / "fresh").glob(".restore-*")), "the unpacked copy is cleaned up"


# Embedded only: checksums of SQLite backup files.
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


# Embedded only: corrupts a SQLite b-tree page.
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


# Embedded only: a restore of a SQLite backup (PostgreSQL refuses before taking the lock).
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


def test_stats_counts_sites_audiences_crawls_and_sizes(indexed_store: Store, each_indexed_backend) -> None:
    _fill(indexed_store)
    crawl = indexed_store.start_crawl("clinic")
    indexed_store.finish_crawl(crawl, {"fetched": 6})
    result = stats(indexed_store, each_indexed_backend.index_root)
    assert result["articles"] == len(TOPICS)
    assert result["by_audience"] == {"public": 5, "staff": 1}
    assert result["by_site"] == {"clinic.example": {"public": 3}, "derm.example": {"public": 2, "staff": 1}}
    assert result["last_crawl"]["source"] == "clinic" and result["last_crawl"]["stats"] == {"fetched": 6}
    assert result["index"]["generation"] is None and result["index"]["size_bytes"] == 0
    assert result["store"]["size_bytes"] > 0
    assert result["writer"] is None
    json.dumps(result)  # `kb stats --json` prints it as is


# -- with the index --------------------------------------------------------------------------------

def test_check_finds_missing_orphaned_and_stale_then_repairs(indexed_store: Store, each_indexed_backend) -> None:
    from kb.index import rebuild

    store, index_root = indexed_store, each_indexed_backend.index_root
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


@pytest.mark.parametrize("part", ["postings", "documents"])
def test_check_reads_the_index_as_searches_do_and_repair_rebuilds(indexed_store: Store, each_indexed_backend,
                                                                  part: str) -> None:
    """Damage the hashes do not show (a Whoosh file cut in half, a generation table dropped) used to pass
    `kb check` while searches failed."""
    from kb import index

    store, index_root = indexed_store, each_indexed_backend.index_root
    _fill(store)
    index.rebuild(store, index_root)
    damaged = each_indexed_backend.damage(part)
    with pytest.raises(KBError):  # what check must see: anonymous searches fail
        each_indexed_backend.results(["rosacea"], ("public",))
    found = check(store, index_root)
    assert not found["ok"] and found["generation"] == damaged
    assert found["damaged"] and all(isinstance(p, str) and p for p in found["damaged"])
    if each_indexed_backend.name == "sqlite":
        assert all(p.startswith(("public/", "staff/")) for p in found["damaged"])
    assert found["index_documents"] == 0  # a damaged index counts as none

    fixed = check(store, index_root, repair=True)
    assert fixed["repaired"] and fixed["after"]["damaged"] == [] and fixed["after"]["generation"] != damaged
    assert [len(hits) for hits in each_indexed_backend.results(["rosacea", "eczema"], ("public",))] == [1, 0]
    assert check(store, index_root)["ok"]


# Embedded only: empties Whoosh's table-of-contents files (PostgreSQL's /healthz searches the generation instead).
def test_health_counts_an_unreadable_index_as_none(store: Store, data_dir: Path) -> None:
    from kb.index import rebuild
    from kb.search.check import current_generation

    _fill(store)
    rebuild(store, data_paths(data_dir)["index"])
    for toc in current_generation(data_paths(data_dir)["index"]).rglob("_MAIN_*.toc"):
        toc.write_bytes(b"")
    assert health(data_dir) == {"ok": False, "store": "ok", "index": "unreadable", "writer": None}


def test_stats_report_the_index_generation(indexed_store: Store, each_indexed_backend) -> None:
    from kb.index import rebuild

    index_root = each_indexed_backend.index_root
    _fill(indexed_store)
    rebuild(indexed_store, index_root)
    indexed_store.save_article(_article(60))
    result = stats(indexed_store, index_root)
    assert result["index"]["generation"].startswith(each_indexed_backend.generation_prefix)
    assert result["index"]["documents"] == len(TOPICS)
    assert result["index"]["pending_changes"] == 1
    assert result["index"]["size_bytes"] > 0 and result["index"]["built_at"]


def test_health_needs_a_readable_store_and_an_index(indexed_store: Store, each_indexed_backend) -> None:
    from kb.index import rebuild

    data_dir = each_indexed_backend.dir
    _fill(indexed_store)
    before = health(data_dir)
    assert {k: before[k] for k in ("ok", "store", "index", "writer")} == {
        "ok": False, "store": "ok", "index": "missing", "writer": None}
    assert before.get("replicas", []) == [] and not before.get("degraded")  # none configured here
    rebuild(indexed_store, each_indexed_backend.index_root)
    with writer_lock(data_dir, "crawl"):
        during = health(data_dir)
    assert during["ok"] and during["index"].startswith(each_indexed_backend.generation_prefix)
    assert during["writer"]["command"] == "crawl"
    assert str(data_dir) not in json.dumps(during), "no paths on a public endpoint"
    assert not health(data_dir.parent / "elsewhere")["ok"]


def test_restore_then_rebuild_reproduces_the_same_search_results(indexed_store: Store, each_indexed_backend,
                                                                  tmp_path: Path) -> None:
    """On PostgreSQL, backup and restore are pg_dump's and pg_restore's: kb says so and touches nothing."""
    from kb.index import rebuild
    from kb.search import Searcher

    _fill(indexed_store)
    rebuild(indexed_store, each_indexed_backend.index_root)
    queries = ["rosacea", "laser", "skin", "botox", "facial", "eczema treatment"]
    original = each_indexed_backend.results(queries)
    assert sum(map(len, original)) >= len(queries), "the queries find something to compare"
    data_dir = each_indexed_backend.dir
    if each_indexed_backend.name == "postgresql":
        with pytest.raises(KBError, match="SQLite store only") as refused:
            backup(data_dir, tmp_path / "b", archive=True)
        assert "pg_dump" in refused.value.remedy
        with pytest.raises(KBError, match="SQLite store only") as refused:
            restore(tmp_path / "nope", data_dir, force=True)
        assert "pg_restore" in refused.value.remedy and "kb reindex" in refused.value.remedy
        assert not (tmp_path / "b").exists() and not data_paths(data_dir)["store"].exists()
        assert each_indexed_backend.results(queries) == original
        return
    made = backup(data_dir, tmp_path / "b", archive=True)
    info = restore(made, tmp_path / "restored")
    assert info["reindexed"] and info["indexed"] == len(TOPICS)
    searcher = Searcher(data_paths(tmp_path / "restored")["index"])
    try:
        assert [[(h.id, h.url, h.title, h.anchor, round(h.score, 6)) for h in
                 searcher.search(q, audiences=("public", "staff")).hits] for q in queries] == original
    finally:
        searcher.close()


def test_check_agrees_after_a_boilerplate_change_and_update(indexed_store: Store, each_indexed_backend) -> None:
    """The index holds the hash of the article as read (boilerplate stripped); check compares like with like."""
    from kb.index import rebuild, update

    store, index_root = indexed_store, each_indexed_backend.index_root
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
    each_indexed_backend.set_disclaimer_flag(store, plain)
    assert rebuild(store, index_root) == len(TOPICS) + 1
    assert check(store, index_root)["ok"]


def test_check_compares_the_index_with_near_duplicate_groups(indexed_store: Store, each_indexed_backend) -> None:
    """One document per group: a copy is not "missing", and a primary whose source list is out of date is stale."""
    from kb.index import rebuild
    from tests.texts import ARTICLE, REPOST_FOOTER

    store, index_root = indexed_store, each_indexed_backend.index_root
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


# -- replicas (PostgreSQL only: the embedded backend has none) ---------------------------------------------------

ON_POSTGRESQL = pytest.mark.parametrize("data_backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)],
                                        indirect=True)


def _with_replicas(data_backend, primary_url: str, replica_urls: list[str]) -> None:
    """Point the data directory's kb.toml at `primary_url` and its replicas, as an operator's settings would."""
    (data_backend.dir / "kb.toml").write_text(
        f'database_url = "{primary_url}"\ndatabase_replica_urls = "{",".join(replica_urls)}"\n', encoding="utf-8")


def _on_port(url: str, port: int) -> str:
    """`url` with another port: the same credentials and database on a server that is not there."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}").geturl()


def _healthz(data_dir: Path) -> tuple[int, dict]:
    from kb.web import create_app

    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True, "QUERY_LOG": False})
    try:
        response = app.test_client().get("/healthz")
        return response.status_code, response.get_json()
    finally:
        app.extensions["kb"].close()


@ON_POSTGRESQL
def test_health_and_stats_report_each_replica_and_a_stopped_one_only_degrades(data_backend, pg_database,
                                                                               pg_cluster, monkeypatch) -> None:
    from urllib.parse import urlsplit

    from kb.index import rebuild
    from kb.store.postgres_pool import redact
    from tests.pgcluster import connect

    monkeypatch.setattr("kb.maintenance.REPLICA_PROBE_TTL", 0.0)  # every call probes: the test watches changes
    _with_replicas(data_backend, pg_database.url, pg_database.replica_urls)
    with data_backend.open_store() as store:
        _fill(store)
        rebuild(store, data_backend.paths["index"])
    pg_cluster.wait_for_replay()
    status, up = _healthz(data_backend.dir)
    assert status == 200 and up["ok"] and up["degraded"] is False
    [replica] = up["replicas"]
    assert replica["replica"] == 1 and replica["reachable"] is True
    assert replica["lag_seconds"] >= 0 and replica["lag_bytes"] >= 0
    public = json.dumps(up)
    assert urlsplit(pg_database.replica_urls[0]).port and str(urlsplit(pg_database.replica_urls[0]).port) not in public
    assert urlsplit(pg_database.url).password not in public, "no host, port or password on a public endpoint"

    # Replay paused on the replica while the primary writes: the lag shows, in bytes and then in seconds.
    [replica_admin] = pg_cluster.replica_admin_urls
    with connect(replica_admin) as admin:
        admin.execute("SELECT pg_wal_replay_pause()")
        try:
            with data_backend.open_store() as store:
                store.save_article(_article(90, "Vitiligo", "Vitiligo is a loss of pigment in patches."))
            behind = health(data_backend.dir)["replicas"][0]
            deadline = time.monotonic() + 10
            while not behind["lag_seconds"] and time.monotonic() < deadline:  # until the WAL has arrived
                time.sleep(0.05)
                behind = health(data_backend.dir)["replicas"][0]
        finally:
            admin.execute("SELECT pg_wal_replay_resume()")
    assert behind["reachable"] and behind["lag_bytes"] > 0 and behind["lag_seconds"] > 0

    pg_cluster.stop_replica()
    try:
        status, down = _healthz(data_backend.dir)  # /healthz searches too: through the primary now
        with data_backend.open_store() as store:
            listed = stats(store, data_backend.paths["index"])["store"]["replicas"]
    finally:
        pg_cluster.start_replica()
    assert status == 200 and down["ok"] and down["degraded"] is True, "a stopped replica is not an outage"
    assert down["replicas"] == [{"replica": 1, "reachable": False, "lag_seconds": None, "lag_bytes": None}]
    [entry] = listed
    assert entry["url"] == redact(pg_database.replica_urls[0]) and ":***@" in entry["url"]
    assert entry["reachable"] is False and entry["error"] and entry["lag_bytes"] is None

    pg_cluster.wait_for_replay()
    with data_backend.open_store() as store:
        [back] = stats(store, data_backend.paths["index"])["store"]["replicas"]
    assert back["reachable"] and back["standby"] is True and back["lag_bytes"] >= 0


def test_healthz_probes_replicas_at_most_once_per_interval_whatever_the_request_rate(monkeypatch) -> None:
    """/healthz is public and polled: a flood of requests must not open a flood of database connections."""
    from kb import maintenance

    probes: list[tuple[str, tuple[str, ...]]] = []

    def probe(url, replicas):
        probes.append((url, tuple(replicas)))
        return [{"url": "x", "reachable": True, "standby": True, "lag_seconds": 0.0, "lag_bytes": 0}]

    monkeypatch.setattr("kb.store.postgres_pool.replica_status", probe)
    replicas = ("postgresql://kb@replica.invalid/kb",)
    clock = [1000.0]
    monkeypatch.setattr(maintenance.time, "monotonic", lambda: clock[0])
    answers = [maintenance._replica_health("postgresql://kb@primary.invalid/kb", replicas) for _ in range(50)]
    assert len(probes) == 1 and all(a == [{"replica": 1, "reachable": True, "lag_seconds": 0.0, "lag_bytes": 0}]
                                     for a in answers)
    clock[0] += maintenance.REPLICA_PROBE_TTL + 0.1
    maintenance._replica_health("postgresql://kb@primary.invalid/kb", replicas)
    assert len(probes) == 2, "a stale probe is renewed"


@ON_POSTGRESQL
def test_a_down_primary_fails_health_even_with_a_replica_answering(data_backend, pg_database, free_port) -> None:
    from kb.index import rebuild

    with data_backend.open_store() as store:
        _fill(store)
        rebuild(store, data_backend.paths["index"])
    gone = _on_port(pg_database.url, free_port)  # nobody listens there: the primary is down
    _with_replicas(data_backend, gone, pg_database.replica_urls)
    facts = health(data_backend.dir)
    assert facts["ok"] is False and facts["store"] == "unavailable" and facts["index"] == "missing"
    [replica] = facts["replicas"]
    assert replica["reachable"] is True and replica["lag_bytes"] is None  # behind what? the primary is silent
    assert facts["degraded"] is False
    status, body = _healthz(data_backend.dir)
    assert status == 503 and body["store"] == "unavailable" and body["replicas"][0]["reachable"] is True
