"""Logging for people and for machines: short lines on a terminal, JSON lines under cron/systemd.

A terminal gets concise messages and a live progress line; anything else (a pipe, the journal,
a cron mail) gets one JSON object per line ({"ts", "level", "logger", "msg", extra fields}) so
logs can be filtered without parsing prose. kb.unattended builds the cron policy of scripts/ on top.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterator, TextIO

log = logging.getLogger(__name__)

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_HANDLER_NAME = "kb-logs"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class JSONFormatter(logging.Formatter):
    """One JSON object per record; `extra=` fields become keys, so jq can filter on them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """Plain message for progress; a level prefix only where it matters (warnings, errors, debug)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        remedy = getattr(record, "remedy", "")
        if remedy:
            message = f"{message} {remedy}"
        if record.levelno >= logging.ERROR:
            message = f"Error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"Warning: {message}"
        elif record.levelno < logging.INFO:
            message = f"[{record.name}] {message}"
        if record.exc_info and record.levelno < logging.ERROR:
            message += "\n" + self.formatException(record.exc_info)
        return message


_pinned = False  # set through pinned(): an outer setup outlives the CLI's own setup_logging call


def setup_logging(verbose: bool | int = False, *, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Configure the root logger once per process: human on a TTY, JSON lines otherwise.

    Quiet by default (warnings and errors only) so cron stays silent on success; `verbose`
    shows kb's progress (INFO), twice (2) shows debug. Third-party libraries stay at WARNING.
    """
    if _pinned:
        return
    stream = stream if stream is not None else sys.stderr
    as_json = (not _is_tty(stream)) if json_lines is None else json_lines
    level = logging.WARNING if not verbose else logging.INFO if int(verbose) == 1 else logging.DEBUG
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JSONFormatter() if as_json else HumanFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("kb").setLevel(level)
    logging.captureWarnings(True)


class Progress:
    """Progress of a long job: a redrawn line on a TTY, an INFO record every `every` items otherwise.

    Call it with nothing or a label (one more item done, e.g. a crawled URL) or with
    (done, total) as `kb.index.rebuild` reports. Use as a context manager to end the line.
    """

    def __init__(self, total: int | None = None, *, label: str = "", every: int | None = None,
                 stream: TextIO | None = None, logger: logging.Logger | None = None) -> None:
        self.total = total or None
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)
        self.every = every or (max(1, self.total // 10) if self.total else 100)
        self.logger = logger or logging.getLogger("kb.progress")
        self._drawn = 0.0
        self._width = 0
        self._logged = 0
        self.started = time.monotonic()

    def __call__(self, done: int | str | None = None, total: int | None = None) -> None:
        item = ""
        if isinstance(done, int):
            self.done = done
        else:
            self.done += 1
            item = done or ""
        if total:
            self.total = total
        if self.tty:
            self._draw(item)
        elif self.done - self._logged >= self.every or (self.total and self.done >= self.total > self._logged):
            self._logged = self.done
            self.logger.info("%s%s", f"{self.label}: " if self.label else "", self._counts(),
                             extra={"done": self.done, "total": self.total, "item": item} if item
                             else {"done": self.done, "total": self.total})

    def _counts(self) -> str:
        if self.total:
            return f"{self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.done} done"

    def _draw(self, item: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1 and self.done != self.total:
            return
        self._drawn = now
        line = " ".join(p for p in (self.label, self._counts(), item) if p)[:100]
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """End the progress line so the next output starts on a fresh one."""
        if self.tty and self._width:
            self._draw("", force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None = None, **options: Any) -> Progress:
    """A progress callback for `total` items (None when unknown, as in a crawl)."""
    return Progress(total, **options)


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """Keep the current logging set-up while a CLI command runs inside (its own setup_logging is skipped)."""
    global _pinned
    _pinned = True
    try:
        yield
    finally:
        _pinned = False
