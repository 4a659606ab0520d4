"""Imports only run downward, and no module imports itself back through others.

``LAYERS`` lists fedactors' packages, lowest first. A module may import its
own package's modules and any package of a lower layer, never one of its own
layer or above; imports inside functions count too (a lazy import is still a
dependency). docs/architecture.md shows the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedactors"

LAYERS: list[set[str]] = [
    {"errors"},
    {"validation", "seeding", "messages", "arrays"},
    {"runtime", "reporting"},  # the virtual clock and network; the event log and run directories
    {"aggregation", "secagg", "training", "data"},
    {"privacy"},  # DP stages are aggregation stages; accounting reads their declared release
    {"devices"},
    {"server"},  # knows the fleet (who is online), never a device's data
    {"scenarios"},
    {"simulation"},
    {"experiments", "cli"},
    {"fedactors", "__main__"},  # the package's public names; ``python -m fedactors``
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_ALL = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every fedactors module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import module`` depends on the module; ``from module import
            # name`` on the module (a package's own __init__ is then a dependency too).
            modules = [f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in _ALL]
            names = modules if len(modules) == len(node.names) else [node.module, *modules]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "fedactors")
    return found


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fedactors"


def test_every_package_has_a_layer() -> None:
    assert {_package(m) for m in MODULES} <= set(LAYER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_run_downward(module: str) -> None:
    mine = _package(module)
    upward = sorted(i for i in GRAPH[module]
                    if _package(i) != mine and LAYER[_package(i)] >= LAYER[mine])
    assert not upward, f"{module} ({mine}) imports from its own layer or above: {upward}"


def test_no_import_cycle() -> None:
    # Depth-first search; a back edge is a cycle (inside a package as well).
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(GRAPH[module]):
            if state.get(other) == 1:
                cycle = path[path.index(other):] + [other]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_checks_see_an_upward_import_and_a_cycle() -> None:
    # The walk itself must not be blind: a planted upward import and cycle are found.
    assert "fedactors.simulation" in _imports(PACKAGE / "cli.py")
    assert LAYER[_package("fedactors.cli")] > LAYER[_package("fedactors.simulation")]
    assert "fedactors.privacy.participation" in GRAPH["fedactors.privacy.budget"]
