"""The built-in objectives' constructor arguments, read from their source files without importing them.

`ssl-toolkit list objectives` should answer as fast as ``--help``; importing the objectives imports torch
(3-6 s on 2 cores). `inspect.signature` needs the import, so this module reads the same signatures with the
standard library's `ast`: the ``OBJECTIVES`` table and its imports in ``objectives/registry.py``, ``FACTS`` in
``objectives/facts.py`` and each class's ``__init__``. Nothing is executed. Anything it cannot read (a default
that is not a literal, a class without its own ``__init__``) raises `LookupError` and the caller falls back to
`ssl_toolkit.objectives.objective_kwargs`. tests/test_cli.py checks both paths agree for every objective.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent / "objectives"


class _Missing:
    def __repr__(self) -> str:
        return "required"


MISSING: Any = _Missing()  # an argument without a default


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def _assigned(tree: ast.Module, name: str) -> ast.expr:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            if node.value is not None:
                return node.value
    raise LookupError(f"no assignment to {name}")


def builtin_objectives() -> dict[str, tuple[str, str]]:
    """name -> (module in ``ssl_toolkit/objectives/``, class name), in the registry's order."""
    tree = _tree("registry")
    prefix = "ssl_toolkit.objectives."
    modules = {
        alias.asname or alias.name: node.module[len(prefix) :]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(prefix)
        for alias in node.names
    }
    table = _assigned(tree, "OBJECTIVES")
    if not isinstance(table, ast.Dict):
        raise LookupError("OBJECTIVES is not a dict literal")
    found = {}
    for key, value in zip(table.keys, table.values, strict=True):
        if key is None or not isinstance(value, ast.Name) or value.id not in modules:
            raise LookupError("OBJECTIVES has an entry this reader does not follow")
        found[ast.literal_eval(key)] = (modules[value.id], value.id)
    return found


def entry_point_group() -> str:
    """``ssl_toolkit.objectives.ENTRY_POINT_GROUP``: where installed packages register plug-in objectives."""
    return ast.literal_eval(_assigned(_tree("registry"), "ENTRY_POINT_GROUP"))


def facts() -> dict[str, str]:
    """``ssl_toolkit.objectives.FACTS``: the constructor arguments the builders fill in."""
    return ast.literal_eval(_assigned(_tree("facts"), "FACTS"))


def constructor_kwargs(module: str, class_name: str) -> dict[str, Any]:
    """The keyword arguments of ``class_name.__init__`` in ``objectives/<module>.py`` with their defaults
    (`MISSING` for none), as `inspect.signature` would list them (positional-only and ``*args`` left out)."""
    for node in _tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            if init is None:
                raise LookupError(f"{class_name} has no __init__ of its own")
            args = init.args
            defaults = [MISSING] * (len(args.args) - len(args.defaults)) + list(args.defaults)
            pairs = [*zip(args.args, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
            try:
                return {
                    arg.arg: MISSING if default is MISSING or default is None else ast.literal_eval(default)
                    for arg, default in pairs
                    if arg.arg != "self"
                }
            except ValueError as err:
                raise LookupError(f"{class_name}: a default that is not a literal") from err
    raise LookupError(f"no class {class_name} in {module}.py")
