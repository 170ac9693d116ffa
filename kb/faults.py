"""Fault injection for crash tests: pause a real process at a named step so a test can `kill -9` it there.

Writers call `checkpoint("reindex:before-swap")` (and the like) at the steps where a crash matters.
Nothing happens unless the environment names that step when the process starts:

    KB_PAUSE_AT=reindex:before-swap            pause the first time the step is reached
    KB_PAUSE_AT=crawl:stored@3,update:before-commit   "@N": pause the N-th time instead
    KB_PAUSE_FILE=/tmp/marker                  written (atomically) when the process pauses
    KB_PAUSE_SECONDS=60                        how long to wait for the kill before carrying on

The environment is read once, at import, so a production process pays one set lookup per step.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

log = logging.getLogger(__name__)

DEFAULT_PAUSE_SECONDS = 60.0


def _parse(value: str) -> dict[str, int]:
    """Step name -> which arrival pauses (1 = the first); malformed counts mean the first."""
    points: dict[str, int] = {}
    for item in value.split(","):
        name, _, nth = item.strip().partition("@")
        if not name:
            continue
        try:
            points[name] = max(1, int(nth)) if nth else 1
        except ValueError:
            points[name] = 1
    return points


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else DEFAULT_PAUSE_SECONDS
    except ValueError:
        return DEFAULT_PAUSE_SECONDS


_points: dict[str, int] = {}
_marker: str | None = None
_pause: float = DEFAULT_PAUSE_SECONDS
_arrivals: Counter[str] = Counter()


def configure(environ: dict[str, str] | None = None) -> None:
    """(Re)read KB_PAUSE_AT, KB_PAUSE_FILE and KB_PAUSE_SECONDS; done once at import, again only in tests."""
    global _points, _marker, _pause
    env = os.environ if environ is None else environ
    _points = _parse(env.get("KB_PAUSE_AT", ""))
    _marker = env.get("KB_PAUSE_FILE") or None
    _pause = _seconds(env.get("KB_PAUSE_SECONDS"))
    _arrivals.clear()


def checkpoint(name: str) -> None:
    """Pause here when the environment asked for this step (a no-op otherwise), so a test can kill us here."""
    if not _points or name not in _points:
        return
    _arrivals[name] += 1
    if _arrivals[name] != _points[name]:
        return
    log.warning("fault injection: pausing at %s (pid %d) for up to %.0f s", name, os.getpid(), _pause)
    if _marker:
        tmp = f"{_marker}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(f"{name} {os.getpid()}\n")
        os.replace(tmp, _marker)  # the test sees the marker whole or not at all
    time.sleep(_pause)


configure()
