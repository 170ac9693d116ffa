"""The cron/systemd policy of scripts/: run one `kb` command silently, fail with one clear record.

Silent on success (cron sends no mail), one log record on stderr with the CLI's message, remedy and a
distinct exit code on failure. It drives the click group, so it sits above kb.cli; kb.logs stays below it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Sequence

import click

from kb.cli import cli
from kb.errors import KBError
from kb.logs import pinned, setup_logging

log = logging.getLogger(__name__)


def run_unattended(command: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Run `kb <command> ...` for cron/systemd and return its exit code.

    Silent on success: the command's stdout is logged at INFO (shown with -v), not printed, so cron
    sends no mail. On failure: one log record on stderr (a JSON line when not on a terminal) that
    carries the CLI's message and remedy, and the error's own exit code (75 for LockHeld).
    Global options (--data-dir DIR, -v) may appear anywhere in `argv`; they are moved before the command.
    """
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
    out, err = io.StringIO(), io.StringIO()
    code, message, remedy = 0, "", ""
    try:
        with pinned(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = cli.main([*front, *command, *rest], prog_name="kb", standalone_mode=False)
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
