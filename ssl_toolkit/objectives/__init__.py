"""Self-supervised objectives behind one interface, and the registry that builds them by name.

Adding an objective: its file, one line in `OBJECTIVES`, its test, its recipe. The engine never changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext
from ssl_toolkit.objectives.dcl import DCL, DCLW
from ssl_toolkit.objectives.isogclr import ISogCLR
from ssl_toolkit.objectives.simclr import SimCLR
from ssl_toolkit.objectives.swav import SwAV

OBJECTIVES: dict[str, type[Objective] | str] = {
    "simclr": SimCLR,
    "dcl": DCL,
    "dclw": DCLW,
    "isogclr": ISogCLR,
    "swav": SwAV,
    "mochi": "ssl_toolkit.objectives.mochi:MoCHi",
    "groco": "ssl_toolkit.objectives.groco:GroCo",  # imported on use: diffsort stays out of the package import
}

__all__ = ["OBJECTIVES", "LossOutput", "Objective", "StepContext", "build_objective", "objective_kwargs"]


def _resolve(name: str) -> type[Objective]:
    if name not in OBJECTIVES and ":" not in name:
        raise ConfigError(f"unknown objective {name!r}; accepted: {', '.join(sorted(OBJECTIVES))}")
    entry = OBJECTIVES.get(name, name)
    if isinstance(entry, str):  # "package.module:Class" plug-in
        import importlib

        module_name, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import objective {entry!r}: {err}") from err
    return entry


def objective_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments objective `name` accepts, with their defaults."""
    params = inspect.signature(_resolve(name).__init__).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY or (p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD)
    }


def build_objective(spec: Mapping[str, Any] | str, **overrides: Any) -> Objective:
    """Build an objective from ``"simclr"`` or ``{"name": "simclr", "temperature": 0.2}``.

    Raises:
        ConfigError: unknown name or keyword argument (the message lists what is accepted).
    """
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"objective spec needs a 'name'; accepted: {', '.join(sorted(OBJECTIVES))}")
    kwargs = {**spec, **overrides}
    cls = _resolve(name)
    accepted = objective_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"objective {name!r} got unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"objective {name!r}: {err}") from err
