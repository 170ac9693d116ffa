#!/usr/bin/env python3
"""Cron/systemd entry point for `kb reindex`: silent on success, one stderr message and a non-zero exit on failure.

Rebuilds the search index from the store only (no network) and swaps it in atomically, so the
web app keeps serving the previous generation until the new one is complete.
Usage: scripts/reindex.py [--data-dir DIR] [-v] [kb reindex options]
Exit codes: 0 done, 75 another writer holds the lock (try later), other non-zero: see the message.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runs from a checkout without installing

from kb.unattended import run_unattended  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_unattended(["reindex"]))
