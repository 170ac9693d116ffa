"""Whoosh analyzers: how text becomes index terms (placeholder; the medical chain replaces it)."""

from __future__ import annotations

from functools import lru_cache

from whoosh.analysis import Analyzer, StandardAnalyzer, StemmingAnalyzer


@lru_cache(maxsize=None)
def text_analyzer() -> Analyzer:
    """Stemming analyzer for title, headings and body."""
    return StemmingAnalyzer()


@lru_cache(maxsize=None)
def plain_analyzer() -> Analyzer:
    """Unstemmed analyzer for the spelling field: fuzzy suggestions need real words."""
    return StandardAnalyzer()
