"""The layering of docs/architecture.md, checked on the import graph of dtagent/.

The table in the "Layers" section says which layer must not import which; this reads
every import (module level or inside a function) with ast, and fails on a forbidden
edge, on an import cycle, and on a collector that imports anything that forks or
touches the OS. There are no exceptions: an edge the table forbids is fixed, or the
table (and the design it states) is changed.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"

# What a collector must not import or call: it reads a snapshot, the sources fork and
# read files.
OS_MODULES = ("subprocess", "multiprocessing", "ctypes", "socket", "pty", "signal", "os",
              "pathlib", "shutil", "glob", "io", "tempfile")
OS_CALL = re.compile(r"^(fork|forkpty|system|popen|exec\w*|spawn\w*|posix_spawn\w*|kill\w*)$")


@dataclass(frozen=True)
class Layer:
    name: str
    prefixes: tuple[str, ...]
    forbidden: frozenset[str]


def layers(doc: Path = DOC) -> list[Layer]:
    """The rows of the table under "## Layers"."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        prefixes = tuple(re.findall(r"`([\w.]+)`", cells[1]))
        forbidden = frozenset(w.strip() for w in cells[2].split(",") if w.strip())
        out.append(Layer(cells[0], prefixes, forbidden))
    assert out, f"{doc}: no layer table found"
    return out


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path) -> dict[str, set[str]]:
    """Module → the dtagent modules it imports (``from pkg import mod`` counts as mod,
    not as an import of the package)."""
    modules = {module_name(root, p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                submodules = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                deps.update(submodules)
                if len(submodules) < len(node.names):
                    deps.add(base)  # names defined in the module (or package) itself
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def layer_of(module: str, table: list[Layer]) -> Layer:
    best: tuple[int, Layer] | None = None
    for layer in table:
        for prefix in layer.prefixes:
            named = module == prefix or module.startswith(prefix + ".")
            if named and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    assert best is not None, f"{module}: in no layer (the table names `dtagent`)"
    return best[1]


def forbidden_edges(graph: dict[str, set[str]], table: list[Layer]) -> set[tuple[str, str]]:
    out = set()
    for module, deps in graph.items():
        mine = layer_of(module, table)
        for dep in deps:
            if layer_of(dep, table).name in mine.forbidden:
                out.add((module, dep))
    return out


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def os_uses(root: Path) -> list[str]:
    """Imports of OS modules, calls of os.fork & co. and of open() in the collectors."""
    out = []
    for path in sorted((root / "collectors").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
                if node.module == "os":
                    names += [f"os.{a.name}" for a in node.names if OS_CALL.match(a.name)]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "open"
            ):
                names = ["open"]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and OS_CALL.match(node.attr)
            ):
                names = [f"os.{node.attr}"]
            for name in names:
                if name.split(".")[0] in OS_MODULES or name == "open":
                    out.append(f"{path.name}:{node.lineno}: {name}")
    return out


def check(root: Path) -> list[str]:
    """Every problem of the tree at ``root`` (a dtagent/ directory)."""
    table = layers()
    graph = imports(root)
    problems = [
        f"{a} imports {b}: layer {layer_of(a, table).name} must not import "
        f"{layer_of(b, table).name} (docs/architecture.md, Layers)"
        for a, b in sorted(forbidden_edges(graph, table))
    ]
    problems += ["import cycle: " + " <-> ".join(sorted(c)) for c in cycles(graph)]
    problems += [f"a collector touches the OS: {u}" for u in os_uses(root)]
    return problems


def test_the_import_graph_follows_the_layer_table() -> None:
    assert check(REPO / "dtagent") == []


def test_every_module_has_its_layer_and_the_graph_is_read() -> None:
    table = layers()
    graph = imports(REPO / "dtagent")
    assert {layer.name for layer in table} >= {"sources", "collectors", "server", "runtime", "cli"}
    assert layer_of("dtagent.collectors.link", table).name == "collectors"
    assert layer_of("dtagent.dtrace.cli", table).name == "cli"
    assert "dtagent.collectors.base" in graph["dtagent.collectors.link"]
    assert "dtagent.sources.libkstat" in graph["dtagent.runtime"]  # imported in a function
    for name in ("sources", "collectors"):
        assert "cli" in next(x for x in table if x.name == name).forbidden


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        (
            "collectors/link.py",
            "from dtagent.sources.commands import CommandRunner",
            "dtagent.collectors.link imports dtagent.sources.commands",
        ),
        (
            "collectors/zone_cpu.py",
            "import subprocess",
            "a collector touches the OS: zone_cpu.py",
        ),
        ("collectors/textfile.py", "open('x.prom')", "a collector touches the OS: textfile.py"),
        ("collectors/plugins.py", "import os", "a collector touches the OS: plugins.py"),
        ("sources/commands.py", "from dtagent.collectors import base", "layer sources"),
        ("metrics.py", "from dtagent import cli", "dtagent.metrics imports dtagent.cli"),
        ("snapshot.py", "from dtagent import bundle", "import cycle"),
        ("simulate/network.py", "from dtagent.collectors.link import LinkCollector", "simulate"),
        ("server.py", "from dtagent.reload import Change", "dtagent.server imports dtagent.reload"),
        (
            "collectors/plugins.py",
            "from dtagent.sources.plugins import LivePlugins",
            "dtagent.collectors.plugins imports dtagent.sources.plugins",
        ),
        (
            "collectors/textfile.py",
            "from dtagent.sources.textfile import read_directory",
            "dtagent.collectors.textfile imports dtagent.sources.textfile",
        ),
    ],
)
def test_a_forbidden_import_fails(tmp_path: Path, module: str, line: str, expected: str) -> None:
    root = tmp_path / "dtagent"
    shutil.copytree(REPO / "dtagent", root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / module
    added = f"\n\ndef _added() -> None:\n    {line}\n"
    target.write_text(target.read_text(encoding="utf-8") + added)
    problems = check(root)
    assert any(expected in p for p in problems), problems
