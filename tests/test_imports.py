"""Package boundaries and unsafe calls, checked on the source itself.

Leaf packages (``objectives/``, ``eval/``, ``data/``) must not import accelerate or the training side
(engine, checkpoint, cli, builders), so they stay usable on their own; see docs/architecture.md. Devices
come from accelerate (no ``.cuda(``), and nothing is unpickled (``torch.load`` only with
``weights_only=True``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ssl_toolkit"
LEAF_PACKAGES = ("objectives", "eval", "data")
FORBIDDEN_IN_LEAVES = (
    "accelerate",
    "ssl_toolkit.engine",
    "ssl_toolkit.checkpoint",
    "ssl_toolkit.cli",
    "ssl_toolkit.builders",
    "lightly.utils.benchmarking",  # pulls in Lightning (design, principle 2)
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module a source file imports: ``import a.b``, ``from a import b`` (as ``a`` and ``a.b``),
    relative imports resolved against ``module``, and literal ``importlib.import_module("x")`` calls."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for bad in FORBIDDEN_IN_LEAVES if m == bad or m.startswith(bad + "."))


def _leaf_files() -> list[Path]:
    files = [p for name in LEAF_PACKAGES for p in sorted((PACKAGE / name).rglob("*.py"))]
    assert len(files) >= len(LEAF_PACKAGES)  # the walk really found the packages
    return files


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("import accelerate", "ssl_toolkit.eval.knn", False, "accelerate"),
        ("from accelerate.utils import gather", "ssl_toolkit.eval.knn", False, "accelerate.utils"),
        ("from ..engine import train", "ssl_toolkit.objectives.simclr", False, "ssl_toolkit.engine"),
        ("from .. import builders", "ssl_toolkit.data", True, "ssl_toolkit.builders"),
        ("from ssl_toolkit import cli", "ssl_toolkit.data.views", False, "ssl_toolkit.cli"),
        ("import ssl_toolkit.checkpoint as c", "ssl_toolkit.eval.run", False, "ssl_toolkit.checkpoint"),
        ("importlib.import_module('accelerate')", "ssl_toolkit.eval.run", False, "accelerate"),
        ("from . import base\nfrom ..errors import ConfigError", "ssl_toolkit.objectives", True, None),
        ("import accelerated_thing\nfrom .engine_room import x", "ssl_toolkit.data.views", False, None),
    ],
)
def test_import_checker_flags_forbidden_imports(
    source: str, module: str, is_package: bool, expected: str | None
) -> None:
    """The checker itself: it must catch absolute, relative and ``from pkg import mod`` forms."""
    flagged = forbidden(imported_modules(source, module, is_package=is_package))
    assert (expected in flagged) if expected else flagged == []


@pytest.mark.parametrize("path", _leaf_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_leaf_packages_do_not_import_training_side(path: Path) -> None:
    modules = imported_modules(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
    assert forbidden(modules) == []


def test_leaf_packages_import_without_accelerate_or_engine() -> None:
    code = (
        "import sys\n"
        "import ssl_toolkit.objectives, ssl_toolkit.eval, ssl_toolkit.data\n"
        "import ssl_toolkit.eval.run  # ssl_toolkit.eval imports lazily; run.py pulls in every eval module\n"
        "bad = ('accelerate', 'ssl_toolkit.engine', 'ssl_toolkit.checkpoint', 'ssl_toolkit.cli',\n"
        "       'ssl_toolkit.builders')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'accelerate' or m in bad)))\n"
        "print('leaves loaded' if 'ssl_toolkit.eval.knn' in sys.modules else 'leaves missing')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded, status = proc.stdout.splitlines()
    assert status == "leaves loaded"
    assert loaded == "", f"leaf packages pulled in: {loaded}"


def _source_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "engine.py" in files
    return files


def test_no_cuda_calls() -> None:
    offenders = [str(p.relative_to(REPO)) for p in _source_files() if ".cuda(" in p.read_text()]
    assert offenders == [], "use accelerate / .to(device) instead of .cuda()"


def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of ``torch.load(...)`` calls without a literal ``weights_only=True``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id == "torch"):
            continue
        safe = any(
            kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in node.keywords
        )
        if not safe:
            lines.append(node.lineno)
    return lines


def test_torch_load_checker() -> None:
    source = (
        "import torch\n"
        "a = torch.load(p, weights_only=True)\n"
        "b = torch.load(p)\n"
        "c = torch.load(p, map_location='cpu', weights_only=False)\n"
        "d = json.load(f)\n"
    )
    assert unsafe_torch_loads(source) == [3, 4]


def test_every_torch_load_is_weights_only() -> None:
    offenders = {
        str(p.relative_to(REPO)): lines for p in _source_files() if (lines := unsafe_torch_loads(p.read_text()))
    }
    assert offenders == {}
    # The AST check only sees ``torch.load``; an alias (``from torch import load``) would escape it.
    aliased = [
        str(p.relative_to(REPO))
        for p in _source_files()
        if {"torch.load", "torch.serialization.load"} & imported_modules(p.read_text(), _module_name(p))
    ]
    assert aliased == []
