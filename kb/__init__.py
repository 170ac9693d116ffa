"""kb: a searchable dermatology knowledge base."""

from __future__ import annotations

from typing import Any, Mapping

__version__ = "0.1.0"


def create_app(test_config: Mapping[str, Any] | None = None):
    """Build the Flask app: defaults, then data-dir kb.toml and KB_* environment, then `test_config`."""
    from kb.web import create_app as _create_app

    return _create_app(test_config)
