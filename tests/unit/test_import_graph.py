"""The import graph of operator/terrasnap, read with `ast` (no module is imported): no cycles, and the layers
point one way — api/ at the bottom (pure), planner/ and engine/ on it, controller/ on planner/, cli.py on top.

Imports inside functions count as much as those at module level: a lazy import hides a cycle from the
interpreter only until someone moves it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "terrasnap"
Graph = dict[str, set[str]]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path, is_package)
    return out


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(imported module, name imported from it or None) for every import anywhere in the tree."""
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name


@cache
def graph() -> Graph:
    """Module → the terrasnap modules it imports (`from pkg import mod` is an edge to pkg.mod)."""
    modules = _modules()
    edges: Graph = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        out: set[str] = set()
        for target, name in _imports(tree, module, is_package):
            if target != "terrasnap" and not target.startswith("terrasnap."):
                continue
            sub = f"{target}.{name}" if name else None
            out.add(sub if sub in modules else target)
        out.discard(module)
        edges[module] = out
    return edges


def third_party(module: str) -> set[str]:
    path, is_package = _modules()[module]
    tree = ast.parse(path.read_text())
    roots = {t.split(".")[0] for t, _ in _imports(tree, module, is_package) if t}
    return {r for r in roots if r not in sys.stdlib_module_names and r not in ("__future__", "terrasnap")}


def cycles(edges: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> str:
    """terrasnap.engine.gc.run → engine; terrasnap.cli → cli; terrasnap → (root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def crossings(source: str, targets: set[str]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, outs in graph().items() if layer(m) == source
                  for t in outs if layer(t) in targets)


def test_the_graph_sees_every_module_and_lazy_imports() -> None:
    edges = graph()
    assert {"terrasnap.cli", "terrasnap.api.contract", "terrasnap.engine.gc.run", "terrasnap.controller.handlers",
            "terrasnap.planner.job"} <= set(edges)
    # imported inside functions only: the graph must see them, or the cycle check below proves nothing
    assert {"terrasnap.engine.gc.cluster", "terrasnap.engine.snapshot"} <= edges["terrasnap.cli"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_there_is_no_import_cycle_inside_terrasnap() -> None:
    assert cycles(graph()) == []


def test_the_engine_never_imports_the_operator() -> None:
    assert crossings("engine", {"controller", "planner", "cli"}) == []


def test_the_api_imports_nothing_above_it() -> None:
    assert crossings("api", {"engine", "planner", "controller", "cli", "(root)"}) == []


def test_the_planner_is_pure_planning_on_the_api() -> None:
    assert crossings("planner", {"engine", "controller", "cli"}) == []


def test_the_controller_runs_no_engine_code() -> None:
    # snapshots run in Jobs; the operator only plans them and reads their results
    assert crossings("controller", {"engine", "cli"}) == []


def test_the_contract_depends_on_nothing_but_the_standard_library() -> None:
    # the policy schema is part of the contract and lives beside it, as pure as it is
    for module in ("terrasnap.api.contract", "terrasnap.api.policy"):
        assert third_party(module) == set(), module
    assert graph()["terrasnap.api.contract"] == {"terrasnap.api.policy"}
    assert graph()["terrasnap.api.policy"] == set()
