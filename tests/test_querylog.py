"""The query log: what it keeps (and never keeps), retention, settings, and the report."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kb import config
from kb.querylog import log_query, normalise, report
from kb.store import Store, open_store


def _rows(store: Store) -> list[dict]:
    return [dict(r) for r in store.db.execute("SELECT * FROM query_log ORDER BY id")]


def test_logs_only_what_is_needed_never_who_asked(store: Store) -> None:
    assert log_query(store, "  Rosacea   laser ", 4, 12.345, "public")
    columns = {r["name"] for r in store.db.execute("PRAGMA table_info(query_log)")}
    assert columns == {"id", "at", "query", "results", "elapsed_ms", "audience"}
    (row,) = _rows(store)
    assert row["query"] == "Rosacea laser" and row["results"] == 4 and row["elapsed_ms"] == 12.3
    assert row["audience"] == "public"


def test_personal_numbers_and_emails_are_masked() -> None:
    assert normalise("rash jane.doe@example.org 0612 345 678") == "rash [email] #"
    assert normalise("born 12/03/1980 eczema") == "born # eczema"
    assert normalise("co2 laser 1064 nm") == "co2 laser 1064 nm"  # short numbers are medical, keep them
    assert len(normalise("x" * 500)) == 200


def test_opt_out_records_nothing(store: Store, data_dir: Path) -> None:
    settings = config.load({"DATA_DIR": str(data_dir)}, environ={"KB_QUERY_LOG": "false"})
    assert not log_query(store, "acne", 3, 5.0, settings=settings)
    assert report(store)["searches"] == 0


def test_public_text_can_be_withheld_staff_text_is_kept(store: Store, data_dir: Path) -> None:
    settings = config.load({"DATA_DIR": str(data_dir)}, environ={"KB_QUERY_LOG_PUBLIC": "0"})
    log_query(store, "my child's eczema", 0, 8.0, "public", settings=settings)
    log_query(store, "dupilumab dosing", 2, 9.0, "staff", settings=settings)
    assert [r["query"] for r in _rows(store)] == [None, "dupilumab dosing"]
    rep = report(store)
    assert rep["searches"] == 2 and rep["without_text"] == 1
    assert rep["by_audience"] == {"public": 1, "staff": 1}
    assert [t["query"] for t in rep["top"]] == ["dupilumab dosing"]
    assert rep["zero_results"] == []  # the withheld query cannot be shown, only counted
    assert rep["zero_result_searches"] == 1


def test_old_rows_are_pruned_on_write(any_store: Store) -> None:
    settings = dict(config.DEFAULTS, QUERY_LOG_DAYS=7)
    now = datetime.now(timezone.utc)
    log_query(any_store, "old one", 1, 1.0, settings=settings, now=now - timedelta(days=10))
    log_query(any_store, "recent", 1, 1.0, settings=settings, now=now - timedelta(days=3))
    assert any_store.count_queries() == 2  # the old one was within retention when the second was written
    log_query(any_store, "today", 1, 1.0, settings=settings, now=now)
    assert sorted(r["query"] for r in any_store.queries_since("")) == ["recent", "today"]


def test_report_top_zero_results_and_vocabulary_candidates(any_store: Store) -> None:
    for q, n in [("acne", 5), ("Acne", 5), ("acne", 6), ("rosacea", 2),
                 ("zits on my chin", 0), ("zits on my chin", 0), ("zits back", 0), ("melasma", 0)]:
        log_query(any_store, q, n, 10.0)
    known_words = {"melasma", "back", "chin"}
    rep = report(any_store, known=known_words.__contains__)
    assert rep["searches"] == 8 and rep["zero_result_searches"] == 4
    assert rep["top"][0] == {"query": "acne", "count": 3, "avg_results": 5.3}
    assert rep["zero_results"][0] == {"query": "zits on my chin", "count": 2}
    cands = {c["term"]: c for c in rep["vocabulary_candidates"]}
    assert set(cands) == {"zits"}  # "on"/"my" are too short, the others are known
    assert cands["zits"]["count"] == 3
    assert cands["zits"]["queries"] == ["zits on my chin", "zits back"]
    assert rep["elapsed_ms"]["p50"] == 10.0


def test_report_window_excludes_older_queries(any_store: Store) -> None:
    now = datetime.now(timezone.utc)
    log_query(any_store, "last year", 0, 1.0, now=now - timedelta(days=60), settings=dict(config.DEFAULTS))
    log_query(any_store, "this week", 0, 1.0, now=now - timedelta(days=2))
    assert [z["query"] for z in report(any_store, days=30)["zero_results"]] == ["this week"]
    assert len(report(any_store, days=90)["zero_results"]) == 2


def test_report_on_a_store_that_never_logged(any_store: Store) -> None:
    rep = report(any_store)
    assert rep["searches"] == 0 and rep["top"] == [] and rep["elapsed_ms"]["p50"] is None


def test_a_busy_store_does_not_break_or_stall_search(store: Store) -> None:
    log_query(store, "warm up", 1, 1.0)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # a crawl in the middle of a write
        started = time.monotonic()
        assert log_query(store, "acne", 3, 5.0) is False
        assert time.monotonic() - started < 2
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # restored
    assert log_query(store, "acne", 3, 5.0)


# -- terminal escape sequences in patient-typed text -------------------------------------------------------------

ESC = "\x1b"
OSC8 = f"{ESC}]8;;https://evil.example/login{ESC}\\acne cream{ESC}]8;;{ESC}\\"  # a hyperlink to another site
TITLE = f"{ESC}]0;kb: all clear{chr(7)}rosacea laser"  # sets the terminal window title
CSI = f"{ESC}[2J{ESC}[31mmelasma{ESC}[0m \x9b1;1Hpeel\u202egnp.exe"  # clears the screen, colours, C1 CSI, bidi
BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _controls(text: str) -> set[str]:
    """Control characters other than the line breaks a report is made of (C0, DEL, C1, bidi overrides)."""
    return {c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f or c in BIDI}


def test_escape_sequences_and_control_characters_are_removed() -> None:
    assert normalise(OSC8) == "acne cream"
    assert normalise(TITLE) == "rosacea laser"
    assert normalise(CSI) == "melasma peelgnp.exe"
    assert normalise("acne\tcream\r\nbe\x07ll\x00") == "acne cream bell"
    assert normalise("café – naïve, CO₂ laser 10600 nm") == "café – naïve, CO₂ laser 10600 nm"  # text stays


def test_a_real_search_is_logged_without_escape_sequences(data_dir: Path) -> None:
    from kb import index
    from kb.models import Article, Section
    from kb.web import create_app

    paths = config.data_paths(data_dir)
    with open_store(paths["store"]) as store:
        text = "Acne cream with adapalene: apply a thin layer at night."
        store.save_article(Article(url="https://clinic.example/acne", title="Acne cream", text=text,
                                   sections=[Section("", "", text)], site="clinic.example"), source="clinic.example")
        index.rebuild(store, paths["index"])
    app = create_app({"DATA_DIR": str(data_dir), "TESTING": True})
    try:
        with app.test_client() as client:
            for query in (OSC8, TITLE):
                assert client.get("/search", query_string={"q": query}).status_code == 200
    finally:
        app.extensions["kb"].close()  # writes what the query-log thread holds
    with open_store(paths["store"]) as store:
        assert [r["query"] for r in _rows(store)] == ["acne cream", "rosacea laser"]


def test_report_queries_prints_old_rows_without_control_characters(data_dir: Path, runner) -> None:
    from kb.cli import cli

    with open_store(config.data_paths(data_dir)["store"]) as store:
        log_query(store, "warm up", 1, 1.0)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for raw in (OSC8, OSC8, TITLE, CSI):  # rows an older kb logged as typed (the store keeps what it is given)
            store.add_query(raw, 0, 1.0, "public", at=now, prune_before="1970-01-01", wait=1.0)
    text = runner.invoke(cli, ["--data-dir", str(data_dir), "report", "queries"])
    assert text.exit_code == 0, text.output
    assert _controls(text.output) == set() and "evil.example" not in text.output
    assert "query=acne cream, count=2" in text.output and "query=rosacea laser, count=1" in text.output
    as_json = runner.invoke(cli, ["--data-dir", str(data_dir), "report", "queries", "--json"])
    data = json.loads(as_json.output)
    assert {z["query"] for z in data["zero_results"]} == {"acne cream", "rosacea laser", "melasma peelgnp.exe"}
    assert _controls(json.dumps(data, ensure_ascii=False)) == set()
