"""kb's one notion of "now": timezone-aware UTC, written as ISO 8601 to the second.

Stored times (pages, articles, crawls, sessions, the query log, locks, index metadata) compare as strings
only when every writer formats them the same way, so every writer formats them here.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current moment, timezone-aware (naive datetimes cannot be compared with stored ones)."""
    return datetime.now(timezone.utc)


def utc_iso(moment: datetime | None = None) -> str:
    """`moment` (default: now) as the ISO 8601 UTC string, to the second, that kb stores."""
    return (moment or utc_now()).astimezone(timezone.utc).isoformat(timespec="seconds")
