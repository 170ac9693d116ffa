"""Cron entry points as cron runs them: subprocesses without a terminal, quiet on success, one line on failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kb.lock import writer_lock

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=60, stdin=subprocess.DEVNULL)


def _records(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


def test_reindex_of_an_empty_store_is_silent(data_dir: Path) -> None:
    done = _run("reindex.py", "--data-dir", str(data_dir))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (data_dir / "kb.sqlite3").is_file()


def test_verbose_logs_json_lines_and_still_nothing_on_stdout(data_dir: Path) -> None:
    done = _run("reindex.py", "-v", "--data-dir", str(data_dir))
    assert done.returncode == 0 and done.stdout == ""
    records = _records(done.stderr)
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"].startswith("reindex: 0 ") for r in records)


def test_lock_held_gives_exit_75_and_one_clear_line(data_dir: Path) -> None:
    with writer_lock(data_dir, "crawl"):
        done = _run("reindex.py", "--data-dir", str(data_dir))
    assert done.returncode == 75 and done.stdout == ""
    (record,) = _records(done.stderr)
    assert record["level"] == "ERROR" and record["exit_code"] == 75
    assert record["msg"].startswith(f"kb reindex failed: kb crawl is already running (pid {os.getpid()}")


def test_crawl_without_sources_fails_with_the_remedy(data_dir: Path) -> None:
    done = _run("crawl.py", f"--data-dir={data_dir}")
    assert done.returncode not in (0, 75) and done.stdout == ""
    (record,) = _records(done.stderr)
    assert "no sources file" in record["msg"] and "sources.toml" in record["msg"]


def test_bad_option_is_a_usage_error_not_a_traceback(data_dir: Path) -> None:
    done = _run("reindex.py", "--data-dir", str(data_dir), "--no-such-option")
    assert done.returncode == 2 and done.stdout == ""
    (record,) = _records(done.stderr)
    assert "--no-such-option" in record["msg"] and "Traceback" not in done.stderr


def test_scripts_run_from_any_directory(data_dir: Path, tmp_path: Path) -> None:
    done = _run("reindex.py", "--data-dir", str(data_dir), cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_crontab_example_calls_the_scripts_that_exist() -> None:
    text = (DEPLOY / "crontab.example").read_text()
    jobs = [line for line in text.splitlines() if re.match(r"^[\d*]", line)]
    assert len(jobs) >= 2
    for script in re.findall(r"/opt/kb/(scripts/\S+\.py)", text):
        assert (ROOT / script).is_file(), script


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd itself parses the units (with the install paths pointed at this checkout)."""
    for unit in DEPLOY.glob("kb-*.*"):
        text = unit.read_text().replace("/opt/kb/venv/bin/python", sys.executable)
        text = text.replace("/opt/kb/venv/bin/kb", sys.executable).replace("/opt/kb/scripts", str(ROOT / "scripts"))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert {Path(u).name for u in units} == {"kb-crawl.service", "kb-crawl.timer", "kb-reindex.service",
                                             "kb-reindex.timer", "kb-web.service"}
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                          env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"), timeout=60)
    problems = [line for line in done.stderr.splitlines() if "kb-" in line]
    assert done.returncode == 0 and not problems, done.stderr
