"""Logging for people and for machines: short lines on a terminal, JSON lines under cron/systemd.

A terminal gets concise messages and a live progress line; anything else (a pipe, the journal,
a cron mail) gets one JSON object per line ({"ts", "level", "logger", "msg", extra fields}) so
logs can be filtered without parsing prose. `run_unattended` is the cron policy shared by the
scripts in scripts/: silent on success, one clear stderr message and a distinct exit code on failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

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


_pinned = False  # set by run_unattended: its stream and level outlive the CLI's own setup_logging call


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


def run_unattended(command: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Run `kb <command> ...` for cron/systemd and return its exit code.

    Silent on success: the command's stdout is logged at INFO (shown with -v), not printed, so cron
    sends no mail. On failure: one log record on stderr (a JSON line when not on a terminal) that
    carries the CLI's message and remedy, and the error's own exit code (75 for LockHeld).
    Global options (--data-dir DIR, -v) may appear anywhere in `argv`; they are moved before the command.
    """
    global _pinned
    import click

    from kb.errors import KBError

    args = list(sys.argv[1:] if argv is None else argv)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--data-dir" and i + 1 < len(args):
            front += args[i:i + 2]
            i += 1
        elif args[i].startswith("--data-dir=") or args[i] in ("-v", "--verbose"):
            front.append(args[i])
        else:
            rest.append(args[i])
        i += 1
    name = " ".join(command)
    setup_logging("-v" in front or "--verbose" in front)
    _pinned = True
    out, err = io.StringIO(), io.StringIO()
    code, message, remedy = 0, "", ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = _cli_main([*front, *command, *rest])
        code = result if isinstance(result, int) else 0
    except KBError as exc:
        code, message, remedy = exc.exit_code, exc.message, exc.remedy
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        code, message = exc.exit_code, exc.format_message()
    except click.exceptions.Abort:
        code, message = 130, "interrupted"
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        message = exc.code if isinstance(exc.code, str) else ""
    except Exception as exc:  # a bug: one record, the traceback inside it
        log.error("kb %s failed unexpectedly: %s", name, exc, exc_info=True, extra={"exit_code": 1})
        return 1
    finally:
        _pinned = False
    for line in out.getvalue().splitlines():
        if line.strip():
            log.info("%s", line, extra={"command": name})
    said = " ".join(line.strip() for line in err.getvalue().splitlines() if line.strip())
    if code:
        text = message or said.removeprefix("Error: ") or f"exit status {code}"
        log.error("kb %s failed: %s", name, text, extra={"exit_code": code} | ({"remedy": remedy} if remedy else {}))
    elif said:
        log.warning("%s", said, extra={"command": name})
    return code


def _cli_main(args: list[str]) -> Any:
    """The `kb` click group run without click's own exit handling (imported late: the CLI imports us)."""
    from kb.cli import cli

    return cli.main(args, prog_name="kb", standalone_mode=False)
