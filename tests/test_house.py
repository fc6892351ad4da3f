"""The house rules that can be checked on the source: size budgets, a method-free engine, no import cycles.

Budgets: ``engine.py`` <= 250 lines, every other module <= 400 (docs/architecture.md, "Principles"). The
engine names no objective, view source or data-source signal. The import graph of ``ssl_toolkit`` has no cycle,
neither between modules nor between packages (a package is a sub-package of ``ssl_toolkit`` or a top-level
module), counting imports inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_imports import PACKAGE, REPO, imported_modules

ENGINE_BUDGET, MODULE_BUDGET = 250, 400
# Words that would mean the engine knows a method or a data source (objective names are added from the registry).
METHOD_WORDS = ("genview", "adainf", "generated", "bank", "quality", "weighter", "sample_weights", "ema", "queue")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``a.b.func`` -> ``a.b``), or None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (and the parent packages that import runs, from outside them)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imported in imported_modules(path.read_text(), name, is_package=path.name == "__init__.py"):
            target = _resolve(imported, modules)
            if target is None or target == name or (name + ".").startswith(target + "."):
                continue  # outside the package, itself, or its own package's __init__ (already running)
            graph[name].add(target)
            parent = target.rpartition(".")[0]
            while parent and parent in modules and not (name + ".").startswith(parent + "."):
                graph[name].add(parent)  # importing a.b.c from outside a.b runs a.b/__init__ first
                parent = parent.rpartition(".")[0]
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or [] when it has none (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack, path = [(root, iter(sorted(graph[root])))], [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return []


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            pa, pb = _package_of(a), _package_of(b)
            if pa != pb and pb != "ssl_toolkit":  # the root __init__ runs before everything; it imports no module
                out[pa].add(pb)
    return out


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert "ssl_toolkit.engine" in graph and "ssl_toolkit.data.views" in graph  # the walk saw the package
    assert find_cycle(graph) == []


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph(import_graph())
    assert "ssl_toolkit.data" in graph
    assert find_cycle(graph) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_budget(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    budget = ENGINE_BUDGET if path == PACKAGE / "engine.py" else MODULE_BUDGET
    assert lines <= budget, f"{path.name} has {lines} lines (budget {budget}): split it by concept"


def test_engine_names_no_method() -> None:
    from ssl_toolkit.objectives import OBJECTIVES

    text = (PACKAGE / "engine.py").read_text().lower()
    words = set(re.findall(r"[a-z_]+", text))
    named = sorted(w for w in (*OBJECTIVES, *METHOD_WORDS) if w in words)
    assert named == [], f"engine.py names {named}; method knowledge belongs in objectives, builders or data"
