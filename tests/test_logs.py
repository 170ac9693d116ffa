"""Logging setup: JSON lines when not on a terminal, short human lines on one; the progress helper."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from kb.logs import progress, setup_logging


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, kb_level = list(root.handlers), root.level, logging.getLogger("kb").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("kb").setLevel(kb_level)
    logging.captureWarnings(False)


def test_json_lines_when_not_a_tty() -> None:
    stream = io.StringIO()
    setup_logging(True, stream=stream)
    logging.getLogger("kb.crawl").info("fetched %d pages", 3, extra={"site": "example.org", "fetched": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kb.index").error("swap failed", exc_info=True)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "INFO" and first["logger"] == "kb.crawl" and first["msg"] == "fetched 3 pages"
    assert first["site"] == "example.org" and first["fetched"] == 3
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_human_lines_on_a_tty() -> None:
    stream = FakeTTY()
    setup_logging(True, stream=stream)
    logging.getLogger("kb.crawl").info("fetched 3 pages")
    logging.getLogger("kb.lock").warning("recovered a stale lock")
    logging.getLogger("kb.cli").error("it failed", extra={"remedy": "Try again."})
    assert stream.getvalue().splitlines() == [
        "fetched 3 pages", "Warning: recovered a stale lock", "Error: it failed Try again."]


def test_quiet_by_default_and_third_parties_stay_quiet() -> None:
    stream = io.StringIO()
    setup_logging(False, stream=stream)
    logging.getLogger("kb.crawl").info("progress nobody asked for")
    logging.getLogger("kb.crawl").warning("worth knowing")
    setup_logging(True, stream=stream)  # calling again replaces, never duplicates, the handler
    logging.getLogger("httpx").info("HTTP Request: GET …")
    logging.getLogger("kb.crawl").info("now shown")
    msgs = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert msgs == ["worth knowing", "now shown"]


def test_progress_logs_every_n_items_when_not_a_tty(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="kb.progress"):
        with progress(100, label="reindex", stream=stream) as step:
            for done in range(1, 101):
                step(done, 100)
    assert stream.getvalue() == ""  # nothing drawn
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "reindex: 10/100 (10%)" and messages[-1] == "reindex: 100/100 (100%)"
    assert len(messages) == 10
    assert caplog.records[-1].done == 100


def test_progress_with_unknown_total_counts_items(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kb.progress"):
        step = progress(None, every=2, stream=io.StringIO())
        for url in ("https://a/1", "https://a/2", "https://a/3", "https://a/4"):
            step(url)
    assert [r.getMessage() for r in caplog.records] == ["2 done", "4 done"]
    assert caplog.records[-1].item == "https://a/4"


def test_progress_draws_one_line_on_a_tty(caplog: pytest.LogCaptureFixture) -> None:
    stream = FakeTTY()
    with caplog.at_level(logging.INFO, logger="kb.progress"):
        with progress(3, label="crawl", stream=stream) as step:
            for url in ("https://a/one", "https://a/two", "https://a/three"):
                step(url)
    out = stream.getvalue()
    assert out.startswith("\rcrawl 1/3 (33%) https://a/one") and out.endswith("\n")
    assert out.count("\n") == 1 and "crawl 3/3 (100%)" in out
    assert not caplog.records  # the line replaces log records on a terminal
