"""Settings: layering order, type coercion, clear errors, and docs kept in sync (Datasette style)."""

from pathlib import Path

import pytest

from kb import config
from kb.errors import ConfigError


def test_defaults_without_environment(tmp_path: Path) -> None:
    s = config.load({"DATA_DIR": str(tmp_path)}, environ={})
    assert s["CRAWL_DELAY"] == 1.0
    assert s["OBEY_ROBOTS"] is True
    assert s["USER_AGENT"].startswith("kb/")


def test_layering_file_then_environment_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "kb.toml").write_text("crawl_delay = 3.0\nmax_pages = 7\nper_page = 20\n")
    env = {"KB_DATA_DIR": str(tmp_path), "KB_MAX_PAGES": "9", "KB_OBEY_ROBOTS": "false"}
    s = config.load({"PER_PAGE": 5}, environ=env)
    assert s["CRAWL_DELAY"] == 3.0  # from kb.toml
    assert s["MAX_PAGES"] == 9  # environment beats the file
    assert s["OBEY_ROBOTS"] is False
    assert s["PER_PAGE"] == 5  # explicit override beats both


def test_bad_environment_value_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KB_|CRAWL_DELAY"):
        config.load({"DATA_DIR": str(tmp_path)}, environ={"KB_CRAWL_DELAY": "soon"})


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "kb.toml").write_text("crawl_delay = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load({"DATA_DIR": str(tmp_path)}, environ={})


def test_settings_table_is_sorted_and_documented() -> None:
    names = [s.name for s in config.SETTINGS]
    assert names == sorted(names), "keep SETTINGS alphabetical"
    assert len(set(names)) == len(names)
    for s in config.SETTINGS:
        assert s.help.endswith((".", ")")) and len(s.help) > 15, s.name


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [s.name for s in config.SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"document these settings in README.md: {missing}"
