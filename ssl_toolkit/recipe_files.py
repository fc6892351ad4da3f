"""Recipes by name or by path: the recipes that ship with the package, and any YAML file.

The repository keeps its recipes in the top-level ``recipes/`` (``pretrain/*.yaml``, ``tests/tiny.yaml``);
the wheel installs that folder as ``ssl_toolkit/recipes`` (pyproject.toml, ``package-dir``), so
``ssl-toolkit train simclr_fashion_mnist`` works from any directory after a plain ``pip install``. In a
source checkout (editable install, ``PYTHONPATH``) the package has no such folder and the repository's own is
used. A recipe's name is its file name without ``.yaml`` (``pretrain/<name>`` also works).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ssl_toolkit.errors import ConfigError, did_you_mean

SUFFIXES = (".yaml", ".yml")


def recipes_dir() -> Path | None:
    """The folder of shipped recipes: ``ssl_toolkit/recipes`` when installed, else the repository's ``recipes/``."""
    packaged = Path(str(importlib.resources.files("ssl_toolkit") / "recipes"))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "recipes"
    return checkout if checkout.is_dir() else None


def shipped_recipes() -> dict[str, Path]:
    """``name -> file`` of every shipped recipe; names are file stems, sorted (``pretrain/`` first)."""
    root = recipes_dir()
    if root is None:
        return {}
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    files.sort(key=lambda p: (p.parent.name != "pretrain", str(p.relative_to(root))))
    out: dict[str, Path] = {}
    for path in files:
        out.setdefault(path.stem, path)
    return out


def resolve_recipe(recipe: str | Path) -> Path:
    """The YAML file of ``recipe``: an existing file, or the name of a shipped recipe.

    Raises:
        ConfigError: neither (with the closest shipped name, if any).
    """
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    shipped = shipped_recipes()
    text = str(recipe)
    name = text[: -len(path.suffix)] if path.suffix in SUFFIXES else text
    name = name.removeprefix("pretrain/").removeprefix("tests/")
    if name in shipped and "/" not in name:
        return shipped[name]
    if path.is_dir():
        raise ConfigError(f"recipe {text!r} is a folder; give a YAML file or a recipe name (ssl-toolkit list recipes)")
    if path.suffix in SUFFIXES or "/" in text:
        if path.stem in shipped:
            hint = f"; the shipped recipe of that name runs with `ssl-toolkit train {path.stem}`"
        else:
            hint = did_you_mean(path.stem, shipped)
        raise ConfigError(f"recipe file not found: {text}{hint}")
    raise ConfigError(
        f"unknown recipe {text!r}{did_you_mean(name, shipped)}; give a YAML file or one of: {', '.join(shipped)}"
    )
