"""Lazy package attributes (PEP 562), so that importing a package costs nothing until a name is used.

``ssl-toolkit --help`` and recipe errors must answer in well under two seconds, while torch, timm and lightly
take several seconds to import; packages therefore export their public names through `lazy_exports`, which
imports the defining module on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` exporting ``name -> defining module (relative)``."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # next access is a plain attribute lookup
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
