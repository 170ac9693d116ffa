"""sources.toml: the documented format loads, and every mistake names its line, field and remedy."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb import sources as sources_module
from kb.errors import ConfigError
from kb.sources import Source, default_include, load_sources, path_under, source_from_url


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text, "utf-8")
    return path


def test_documented_example_loads(tmp_path: Path) -> None:
    """The example in the module docstring (copied to the README) is valid as written."""
    doc = sources_module.__doc__ or ""
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    example = "\n".join(line[4:] for line in block.splitlines())
    [site] = load_sources(write(tmp_path, example))
    assert site == Source(
        name="derm-blog", url="https://blog.example.org/", include=["/"], exclude=["/shop/", "/wp-admin/"],
        audience="public", staff_paths=["/protocols/"], staff_categories=["Staff Protocols"], max_pages=2000,
        delay=2.0,
    )


def test_minimal_site_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[[site]]\nurl = "https://Blog.Example.org"\n\n[[site]]\nname = "b"\n'
                           'url = "https://other.example.org/blog/"\naudience = "staff"\n')
    first, second = load_sources(path)
    assert first.name == "blog.example.org"
    assert first.url == "https://Blog.Example.org/"
    assert first.include == ["/"] and first.exclude == [] and first.audience == "public"
    assert first.max_pages is None and first.delay is None
    assert second.include == ["/blog/"] and second.audience == "staff"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[site]]\nurl = "https://a.org/"\n\n[[site]]\nname = "x"\nurl = "ftp://b.org/"\n', 6, ["url", "http"]),
        ('[[site]]\nurl = "https://a.org/"\naudiance = "staff"\n', 3, ["audiance", "Did you mean 'audience'"]),
        ('[[site]]\nurl = "https://a.org/"\naudience = "doctors"\n', 3, ["audience", "'public'", "'staff'"]),
        ('[[site]]\nurl = "https://a.org/"\ninclude = ["blog/"]\n', 3, ["include", 'start with "/"']),
        ('[[site]]\nurl = "https://a.org/"\nexclude = "/shop/"\nmax_pages = 0\n', 4, ["max_pages", "at least 1"]),
        ('[[site]]\nurl = "https://a.org/"\ndelay = -1\n', 3, ["delay", "at least 0"]),
        ('[[site]]\nurl = "https://a.org/"\ndelay = true\n', 3, ["delay"]),
        ('[[site]]\nname = "a"\nurl = "https://a.org/"\n[[site]]\nname = "a"\nurl = "https://b.org/"\n', 5,
         ["already used", "different name"]),
        ('[[site]]\nname = "a"\n', 1, ["no url", "url ="]),
        ('[[site]]\nurl = "https://a.org/"\nstaff_categories = [1, 2]\n', 3, ["staff_categories", "list"]),
    ],
)
def test_mistakes_name_line_field_and_remedy(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_sources(write(tmp_path, text))
    message = str(info.value)
    assert f"line {line}" in message
    for word in words:
        assert word in message
    assert info.value.remedy


def test_exclude_as_a_single_string_is_accepted(tmp_path: Path) -> None:
    [site] = load_sources(write(tmp_path, '[[site]]\nurl = "https://a.org/"\nexclude = "/shop/"\n'))
    assert site.exclude == ["/shop/"]


def test_missing_file_bad_toml_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No sources file") as info:
        load_sources(tmp_path / "nope.toml")
    assert "[[site]]" in info.value.remedy
    with pytest.raises(ConfigError, match="not valid TOML.*line 2"):
        load_sources(write(tmp_path, '[[site]]\nurl = https://a.org/\n'))
    with pytest.raises(ConfigError, match="lists no sites"):
        load_sources(write(tmp_path, "# nothing yet\n"))
    with pytest.raises(ConfigError, match="unknown top-level key 'sites'"):
        load_sources(write(tmp_path, '[[sites]]\nurl = "https://a.org/"\n'))


def test_source_from_url() -> None:
    s = source_from_url("https://Derm.Example.org:443/blog/post.html")
    assert s.name == "derm.example.org" and s.include == ["/blog/"]
    assert source_from_url("http://127.0.0.1:8080").url == "http://127.0.0.1:8080/"
    assert source_from_url("http://127.0.0.1:8080").name == "127.0.0.1:8080"
    for bad in ("example.org", "ftp://example.org/", "http://", "http://host:99999/"):
        with pytest.raises(ConfigError, match="start URL"):
            source_from_url(bad)


def test_paths_and_audience() -> None:
    assert path_under("/blog", "/blog/") and path_under("/blog/x", "/blog/") and not path_under("/blogroll", "/blog/")
    assert path_under("/anything", "/")
    assert default_include("https://a.org/blog") == "/blog"
    assert default_include("https://a.org/blog/index.html") == "/blog/"
    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"], staff_categories=["Staff Protocols"])
    assert s.audience_for("https://a.org/protocols/lasers/") == "staff"
    assert s.audience_for("https://a.org/acne/", ["staff protocols"]) == "staff"
    assert s.audience_for("https://a.org/acne/", ["Acne"]) == "public"
    assert Source(name="b", url="https://b.org/", audience="staff").audience_for("https://b.org/x/") == "staff"


def test_configured_prefixes_are_normalised_like_urls(tmp_path: Path) -> None:
    [site] = load_sources(write(tmp_path, '[[site]]\nurl = "https://a.org/"\nstaff_paths = ["/%70rotocols//"]\n'
                                          'exclude = ["//shop/./x/", "/a/../Members/"]\ninclude = ["/%62log/"]\n'))
    assert site.staff_paths == ["/protocols/"] and site.exclude == ["/shop/x/", "/Members/"]
    assert site.include == ["/blog/"]
    assert Source(name="b", url="https://b.org/", staff_paths=["/%2e/protocols"]).staff_paths == ["/protocols"]
    assert site.audience_for("https://a.org/blog/PROTOCOLS/") == "public"  # under /blog/, not /protocols/
    assert site.audience_for("https://a.org//protocols/x") == "staff"
    assert site.excluded("/members/x") == "/Members/" and site.excluded("/shop/y") is None


def test_audience_covers_every_address_of_the_fetch() -> None:
    s = Source(name="a", url="https://a.org/", staff_paths=["/protocols/"])
    assert s.audience_for("https://a.org/public/") == "public"
    assert s.audience_for("https://a.org/public/", via=["https://a.org/landing/", "https://a.org/%70rotocols/x"]) \
        == "staff"  # a redirect hop or a declared canonical under a staff path
    assert s.audience_for("https://a.org/public/", via=["", "https://a.org/other/"]) == "public"
    assert s.audience_for("https://a.org/PROTOCOLS/x", ["Acne"]) == "staff"
