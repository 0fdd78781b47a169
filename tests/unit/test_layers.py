"""The packages import one way only: read from the source (AST), every import counted.

Function-level imports count like module-level ones, so none can hide a
cycle. The layers below are the ones docs/architecture.md draws; a new module
gets a place in them before it can import anything of the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import ROOT

PROGRAMS = ("common", "engine", "sink", "proxy", "cli")

# Which top-level package may import which (itself always).
MAY_IMPORT = {
    "common": set(),  # shared by the three programs, knows none of them
    "sink": {"common"},
    "proxy": {"common"},
    "engine": {"common"},
    "cli": {"common", "engine", "sink", "proxy"},
}

# engine's layers, lowest first: a module imports only from its own layer or
# below. A name matches a module and everything under it ("engine" itself:
# only its __init__).
ENGINE_LAYERS = [
    # foundations: no engine imports above this line
    [
        "engine",
        "engine.interrupt",
        "engine.limits",
        "engine.http.payload",
        "engine.measure.statuses",
        "engine.measure.timing",
        "engine.embedded",
        "engine.measure.units",
        "engine.procfs",
        "engine.outputs",
        "engine.measure.thresholds",
        "engine.report.charts",
        "engine.beam",
        "engine.load.executors",
        "engine.load.scenarios",
        "engine.load",
        "engine.http",  # the packages' faces: docstrings only
        "engine.measure",
    ],
    # configuration and measurement
    [
        "engine.config",
        "engine.measure.metrics",
        "engine.measure.result",
        "engine.measure.merge",
        "engine.measure.compare",
        "engine.measure.saturation",
        "engine.observers",
        "engine.lightning.setup",
        "engine.lightning.timing",
        "engine.report",
    ],
    # the HTTP client and the targets
    ["engine.http.http1", "engine.http.client", "engine.http.pool", "engine.target"],
    # one process's load; the Lightning node
    ["engine.drive", "engine.lightning"],
    # which target a run has, and its observers; what is done with a result
    ["engine.opening", "engine.deliver"],
    # the load over several processes
    ["engine.workers"],
    # one run, from target to result
    ["engine.runner"],
    # the seven scenarios in a row
    ["engine.suite"],
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` (module ``name``) imports, anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports pkg.mod when that is a module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PROGRAMS:
                found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {
        module_name(p, root): p
        for top in PROGRAMS
        if (root / top).is_dir()
        for p in sorted((root / top).rglob("*.py"))
    }
    known = set(files)
    return {name: imports_of(path, name, known) for name, path in files.items()}


def layer_of(module: str) -> int | None:
    """The index of the most specific layer entry that covers ``module``."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, layer in enumerate(ENGINE_LAYERS):
        for entry in layer:
            covers = module == entry or (
                "." in entry and module.startswith(entry + ".")
            )
            if covers and (
                best is None or len(entry) > best[0]
            ):
                best = (len(entry), index)
    return None if best is None else best[1]


def violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        top = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != top and other not in MAY_IMPORT[top]:
                problems.append(f"{module} imports {target}: {top} may not import {other}")
            elif top == other == "engine":
                mine, theirs = layer_of(module), layer_of(target)
                if mine is None or theirs is None:
                    unplaced = module if mine is None else target
                    problems.append(f"{unplaced} has no place in ENGINE_LAYERS")
                elif theirs > mine:
                    problems.append(
                        f"{module} (layer {mine}) imports {target} (layer {theirs}): upward"
                    )
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_package_imports_upward_or_across():
    assert violations(import_graph(ROOT)) == []


def test_no_two_modules_import_each_other():
    assert cycles(import_graph(ROOT)) == []


def test_every_engine_module_has_a_layer():
    unplaced = [m for m in import_graph(ROOT) if m.startswith("engine") and layer_of(m) is None]
    assert unplaced == []


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sink/a.py": "from proxy import b\n", "proxy/b.py": ""}, "sink may not import proxy"),
        ({"common/a.py": "import engine.config\n", "engine/config.py": ""}, "common may not"),
        (
            {
                "engine/config.py": "def f():\n    from engine import runner\n",
                "engine/runner.py": "",
            },
            "engine.config (layer 1) imports engine.runner (layer",
        ),
        ({"engine/nowhere.py": "from engine import config\n", "engine/config.py": ""}, "no place"),
    ],
)
def test_the_checker_catches_what_it_forbids(tmp_path, files, expected):
    write(tmp_path, files)
    found = violations(import_graph(tmp_path))
    assert any(expected in line for line in found), found


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    write(
        tmp_path,
        {
            "engine/runner.py": "from engine.workers import go\n",
            "engine/workers.py": "def go():\n    from engine.runner import x\n",
        },
    )
    assert cycles(import_graph(tmp_path)) == [["engine.runner", "engine.workers"]]


PATH_IN_DOCS = re.compile(r"\b((?:common|engine|sink|proxy|cli|bench|tests)/[\w./-]*\w)")


def test_every_path_the_architecture_names_exists():
    # docs/architecture.md is the map a newcomer reads: no module in it may be
    # somewhere else, or gone.
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = sorted(set(PATH_IN_DOCS.findall(text)))
    assert len(named) > 20
    missing = [p for p in named if not (ROOT / p).exists()]
    assert missing == []


def test_every_engine_layer_entry_exists():
    graph = import_graph(ROOT)
    stale = [
        entry for layer in ENGINE_LAYERS for entry in layer if not any(
            m == entry or m.startswith(entry + ".") for m in graph
        )
    ]
    assert stale == []
