"""The boundaries of DESIGN.md, read from kb's source with `ast`: a change that crosses one fails here.

Data flows one way (sources -> crawl -> fetch -> extract -> store -> index -> search -> web); only the fetch
module touches the network, only the store speaks SQL, only the search package's postings module touches
Whoosh internals, and the pure stages (extract, crawl, querylang) import no I/O. Function-level imports count:
an import cycle hidden inside a function is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

KB = Path(__file__).parents[1] / "kb"

# The one module that reads Whoosh's posting blocks, stored columns and segment files directly.
POSTINGS = "kb.search.postings"
# Whoosh modules that are internals (file formats, codecs, compiled readers), not the classic 2.7 API.
WHOOSH_INTERNALS = ("whoosh.codec", "whoosh.filedb.compound", "whoosh.filedb.structfile", "whoosh.filedb.filetables",
                    "whoosh.system", "whoosh.util.numlists", "whoosh.util.varints", "whoosh.matching.mcore")
HTTP_CLIENTS = ("httpx", "requests", "urllib3", "aiohttp", "urllib.request", "http.client")
# Benchmarks load-test kb's own server on 127.0.0.1; they are measuring tools, not part of the pipeline.
HTTP_ALLOWED = ("kb.fetch", "kb.bench.")
# The competitors kb is measured against (SQLite FTS5, plain Whoosh) build their own indexes, in one module.
BASELINES = "kb.bench.baselines"
DATABASE_DRIVERS = ("sqlite3", "psycopg", "psycopg_pool")
STORE = "kb.store"
PURE = ("kb.extract", "kb.extract.charset", "kb.extract.tree", "kb.extract.metadata", "kb.extract.content",
        "kb.extract.blocks", "kb.extract.markup", "kb.extract.page", "kb.extract.faq", "kb.disclaimer", "kb.crawl",
        "kb.querylang")
IO_MODULES = HTTP_CLIENTS + DATABASE_DRIVERS + ("socket", "http.server", "subprocess", "shutil", "tempfile",
                                                "sqlite3", "pathlib", "io.open", "whoosh")
SQL = re.compile(r"^\s*(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIRTUAL|TRIGGER|VIEW)|ALTER\s+TABLE|DROP\s+(TABLE|INDEX)|PRAGMA)\b",
                 re.IGNORECASE | re.DOTALL)
MAX_LINES = 1000


def module_name(path: Path) -> str:
    parts = list(path.relative_to(KB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(KB.rglob("*.py")) if "demo_site" not in p.parts}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text("utf-8"), filename=str(modules()[name]))


def imported(name: str) -> set[str]:
    """Every module `name` imports, at any depth of the file (functions included), fully qualified."""
    found: set[str] = set()
    is_package = modules()[name].name == "__init__.py"
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
            found.update(targets)
            if any(target not in modules() for target in targets):  # `from kb import x` imports kb only for a non-module x
                found.add(prefix)
    return found


def kb_imports(name: str) -> set[str]:
    """The kb modules `name` depends on (`from kb import x` names the module kb.x when x is one)."""
    known = modules()
    deps = set()
    for target in imported(name):
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            deps.add(target)
    return deps


def uses(name: str, prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in imported(name) for p in prefixes if m == p or m.startswith(p + ".")}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: sorted(kb_imports(name)) for name in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_the_rules_see_the_whole_package():
    names = set(modules())
    assert {"kb.fetch", "kb.extract", "kb.crawl", "kb.querylang", "kb.cli"} <= names
    assert any(n == STORE or n.startswith(STORE + ".") for n in names)
    assert kb_imports("kb.cli"), "the import reader found nothing: the rules below would pass vacuously"


def test_no_import_cycles():
    assert cycles() == []


def test_only_fetch_speaks_http():
    offenders = {name: sorted(uses(name, HTTP_CLIENTS)) for name in modules()
                 if not name.startswith(HTTP_ALLOWED) and uses(name, HTTP_CLIENTS)}
    assert offenders == {}


def test_only_the_store_speaks_sql():
    offenders: dict[str, list[str]] = {}
    for name in modules():
        if name == STORE or name.startswith(STORE + ".") or name == BASELINES:
            continue
        found = sorted(uses(name, DATABASE_DRIVERS))
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                found.append(f"line {node.lineno}: {node.value.strip()[:40]!r}")
        if found:
            offenders[name] = found
    assert offenders == {}


def _private_whoosh_access(name: str) -> list[str]:
    """`obj._attr` on anything but self/cls, in a module that imports whoosh: reading Whoosh's insides."""
    found = []
    for node in ast.walk(tree(name)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_only_the_postings_module_touches_whoosh_internals():
    offenders: dict[str, list[str]] = {}
    for name in modules():
        if name == POSTINGS or not uses(name, ("whoosh",)):
            continue
        found = sorted(uses(name, WHOOSH_INTERNALS)) + _private_whoosh_access(name)
        if found:
            offenders[name] = found
    assert offenders == {}
    assert uses(POSTINGS, ("whoosh",)), "the postings module is where Whoosh internals are read"


@pytest.mark.parametrize("name", PURE)
def test_pure_stages_import_no_io(name):
    assert name in modules(), f"{name} does not exist: the rule would check nothing"
    assert sorted(uses(name, IO_MODULES)) == []
    assert not {m for m in kb_imports(name) if m in ("kb.fetch", "kb.store") or m.startswith("kb.store.")}


def test_only_the_index_module_writes_the_index():
    writers = {name for name in modules()
               for node in ast.walk(tree(name))
               if isinstance(node, ast.Attribute) and node.attr in ("writer", "create_in", "AsyncWriter")}
    assert writers <= {"kb.index", BASELINES}


def test_no_module_is_over_a_thousand_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text("utf-8").splitlines())) > MAX_LINES}
    assert long == {}
