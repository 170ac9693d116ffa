"""A privacy-minded log of searches, kept in the SQLite store, to learn what readers fail to find.

What is recorded: time (to the second), the query text (normalised, with e-mail addresses and
long digit runs such as phone, record or birth-date numbers masked, and terminal escape sequences
and control characters removed), the number of results, the time taken and the audience
("public" or "staff"). Never an IP address, user id, session, cookie or user agent. Settings:
QUERY_LOG (off = record nothing), QUERY_LOG_DAYS (retention, pruned as rows are written),
QUERY_LOG_PUBLIC (off = public, i.e. patient, queries keep only their count and timing, text NULL;
staff queries always keep their text).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from kb.config import DEFAULTS
from kb.store import Store

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 200
_BUSY_MS = 250  # a search must not wait long behind a crawl's write just to be logged

SCHEMA = """
CREATE TABLE IF NOT EXISTS query_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    query TEXT,
    results INTEGER NOT NULL,
    elapsed_ms REAL NOT NULL,
    audience TEXT NOT NULL DEFAULT 'public'
);
CREATE INDEX IF NOT EXISTS query_log_at ON query_log(at);
"""

# Terminal escape sequences, whole: an OSC string (ESC ] ... ended by BEL or ESC \, or its 8-bit form) carries a
# hyperlink target or window title, a CSI (ESC [ params final) moves the cursor or colours; ESC + one character
# covers the rest. Then every control character left (C0 without ordinary space, DEL, C1) and the Unicode bidi
# overrides that reorder what a terminal shows.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, to its terminator (or the end)
    r"|(?:\x1b[P_^X]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, APC, PM, SOS strings
    r"|(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"  # CSI
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"  # any other escape
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_EMAIL = re.compile(r"\S+@\S+")
_DIGITS = re.compile(r"\d[\d ./-]{4,}\d")  # 6+ characters of digits and separators
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOPWORDS = frozenset(
    "and are can for from has have how not off the this that what when where which who why with you your "
    "does did get got its was were will".split()
)


def ensure_schema(db: sqlite3.Connection) -> None:
    """Create the query_log table; the store's own schema does not know about it."""
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            db.execute(statement)


def _utc(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).isoformat(timespec="seconds")


def printable(text: str) -> str:
    """Text without terminal escape sequences or control characters, so it cannot restyle, retitle or link an
    operator's terminal; tabs and line breaks become spaces."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", re.sub(r"[\t\n\r\f\v]", " ", text)))


def printable_tree(data: Any) -> Any:
    """`data` (dicts, lists, strings) with every string made printable: the last step before a terminal."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {printable_tree(k): printable_tree(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [printable_tree(v) for v in data]
    return data


def normalise(query: str) -> str:
    """Trimmed, single-spaced, masked, printable text: what is safe and useful to keep."""
    text = " ".join(printable(query).split())[:MAX_QUERY_CHARS]
    return _DIGITS.sub("#", _EMAIL.sub("[email]", text))


def log_query(store: Store, query: str, results_count: int, elapsed_ms: float, audience: str = "public",
              *, settings: Mapping[str, Any] | None = None, now: datetime | None = None) -> bool:
    """Record one search; returns whether a row was written. Never raises: logging must not break search."""
    settings = settings or DEFAULTS
    if not settings.get("QUERY_LOG", True):
        return False
    text: str | None = normalise(query)
    if audience != "staff" and not settings.get("QUERY_LOG_PUBLIC", True):
        text = None
    moment = now or datetime.now(timezone.utc)
    cutoff = _utc(moment - timedelta(days=float(settings.get("QUERY_LOG_DAYS", 90))))
    row = (_utc(moment), text, int(results_count), round(float(elapsed_ms), 1), audience)
    db = store.db
    busy = db.execute("PRAGMA busy_timeout").fetchone()[0]
    try:
        db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        try:
            _insert(store, row, cutoff)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            ensure_schema(db)
            _insert(store, row, cutoff)
    except sqlite3.Error as exc:
        log.warning("Query not logged: %s", exc)
        return False
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(busy)}")
    return True


def _insert(store: Store, row: tuple, cutoff: str) -> None:
    """Insert, and prune only when the oldest row (one index probe) is past retention."""
    with store.transaction() as db:
        if db.execute("SELECT 1 FROM query_log WHERE at < ? LIMIT 1", (cutoff,)).fetchone():
            db.execute("DELETE FROM query_log WHERE at < ?", (cutoff,))
        db.execute("INSERT INTO query_log (at, query, results, elapsed_ms, audience) VALUES (?, ?, ?, ?, ?)", row)


def terms(query: str) -> list[str]:
    """Lower-case words of a query worth proposing for the vocabulary (no digits, stopwords or 1–2 letters)."""
    return [w for w in (m.lower() for m in _WORD.findall(query)) if w not in _STOPWORDS]


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(store: Store, days: int = 30, *, known: Callable[[str], bool] | None = None, limit: int = 20,
           now: datetime | None = None) -> dict[str, Any]:
    """Top queries, zero-result queries and vocabulary candidates of the last `days` days.

    `known(term)` says whether the index vocabulary already has a word; words of zero-result queries
    it does not know are the lay terms worth adding to the vocabulary file (with a source).
    """
    since = _utc((now or datetime.now(timezone.utc)) - timedelta(days=days))
    try:
        rows = store.db.execute(
            "SELECT lower(query) AS q, results, elapsed_ms, audience FROM query_log WHERE at >= ?", (since,)
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        rows = []
    top: Counter[str] = Counter()
    zero: Counter[str] = Counter()
    results_sum: Counter[str] = Counter()
    by_audience: Counter[str] = Counter()
    for row in rows:
        by_audience[row["audience"]] += 1
        if row["q"] is None:
            continue
        query = " ".join(printable(row["q"]).split())  # rows logged before control characters were removed
        top[query] += 1
        results_sum[query] += row["results"]
        if row["results"] == 0:
            zero[query] += 1
    candidates: dict[str, dict[str, Any]] = {}
    for query, count in zero.most_common():
        for term in dict.fromkeys(terms(query)):
            if known is not None and known(term):
                continue
            entry = candidates.setdefault(term, {"term": term, "count": 0, "queries": []})
            entry["count"] += count
            if len(entry["queries"]) < 5:
                entry["queries"].append(query)
    elapsed = [row["elapsed_ms"] for row in rows]
    return {
        "days": days,
        "since": since,
        "searches": len(rows),
        "zero_result_searches": sum(1 for row in rows if row["results"] == 0),
        "without_text": sum(1 for row in rows if row["q"] is None),
        "by_audience": dict(by_audience),
        "elapsed_ms": {"p50": _percentile(elapsed, 0.5), "p95": _percentile(elapsed, 0.95)},
        "top": [{"query": q, "count": c, "avg_results": round(results_sum[q] / c, 1)}
                for q, c in top.most_common(limit)],
        "zero_results": [{"query": q, "count": c} for q, c in zero.most_common(limit)],
        "vocabulary_candidates": sorted(candidates.values(), key=lambda e: (-e["count"], e["term"]))[:limit],
    }
