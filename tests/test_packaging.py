"""The wheel: a real, non-editable ``pip install --target`` ships every module and the recipes, which resolve by
name through ``importlib.resources`` from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ssl_toolkit"


def test_pyproject_lists_every_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    recipes = {
        "ssl_toolkit." + ".".join(p.relative_to(REPO).parts) for p in (REPO / "recipes").rglob("*") if p.is_dir()
    }
    listed, data = set(setuptools["packages"]), setuptools["package-data"]
    assert found | recipes <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert setuptools["package-dir"] == {"ssl_toolkit.recipes": "recipes"}
    assert all(data.get(folder) == ["*.yaml"] for folder in recipes), "list each recipes/ folder in package-data"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target`` of a copy of the source tree (pip builds in the tree it is given)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ssl_toolkit", "recipes"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    target = base / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not installed in this interpreter")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _in_install(target: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.slow
def test_wheel_ships_modules_and_recipes(installed: Path, tmp_path: Path) -> None:
    shipped = sorted(str(p.relative_to(REPO / "recipes")) for p in (REPO / "recipes").rglob("*.yaml"))
    packaged = sorted(str(p.relative_to(installed / "ssl_toolkit" / "recipes"))
                      for p in (installed / "ssl_toolkit" / "recipes").rglob("*.yaml"))  # fmt: skip
    assert packaged == shipped and "pretrain/simclr_fashion_mnist.yaml" in packaged
    modules = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py"))
    assert sorted(str(p.relative_to(installed)) for p in (installed / "ssl_toolkit").rglob("*.py")) == modules

    code = (
        "import importlib.resources, ssl_toolkit\n"
        "from ssl_toolkit.recipe_files import resolve_recipe\n"
        "text = (importlib.resources.files('ssl_toolkit') / 'recipes' / 'pretrain' / 'simclr_fashion_mnist.yaml')"
        ".read_text()\n"
        "assert 'name: simclr_fashion_mnist' in text, text[:200]\n"
        "print(ssl_toolkit.__file__)\n"
        "print(resolve_recipe('simclr_fashion_mnist'))\n"
    )
    proc = _in_install(installed, code, cwd=tmp_path)  # another directory: no recipes/ beside it
    assert proc.returncode == 0, proc.stderr[-2000:]
    module_file, recipe = proc.stdout.split()
    assert Path(module_file).is_relative_to(installed), "the test imported the source tree, not the install"
    assert Path(recipe) == installed / "ssl_toolkit" / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml"

    cli = "import sys; from ssl_toolkit.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", cli, "list", "recipes"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "simclr_fashion_mnist" in proc.stdout and str(installed) in proc.stdout
