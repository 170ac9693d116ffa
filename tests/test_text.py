"""kb.text and kb.clock: the one home of paragraphs, slugs and stored timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kb.clock import utc_iso, utc_now
from kb.text import paragraphs, slugify


def test_paragraphs_split_on_blank_lines_of_any_whitespace() -> None:
    assert paragraphs("One\nstill one.\n\n  Two  \n \t \nThree\n\n\n") == ["One\nstill one.", "Two", "Three"]
    assert paragraphs("") == [] and paragraphs(None) == []  # type: ignore[arg-type]


def test_slugify_drops_accents_and_punctuation_and_bounds_length() -> None:
    assert slugify("Laser & Light: Ästhetik") == "laser-light-asthetik"
    assert slugify("  --  ") == "section" and slugify("!!", default="other") == "other"
    assert len(slugify("word " * 40)) <= 80 and not slugify("word " * 40).endswith("-")


def test_timestamps_are_utc_to_the_second_whatever_the_zone_given() -> None:
    assert utc_now().tzinfo is not None
    moment = datetime(2024, 5, 1, 14, 30, 15, 999, tzinfo=timezone(timedelta(hours=2)))
    assert utc_iso(moment) == "2024-05-01T12:30:15+00:00"
    assert utc_iso().endswith("+00:00") and len(utc_iso()) == len("2024-05-01T12:30:15+00:00")
