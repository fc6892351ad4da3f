"""Objectives by name: where a name may come from, what a recipe may pass, and the one check of a recipe's objective.

A name resolves, in this order, to

1. an entry of `OBJECTIVES` (this package's objectives, one line each);
2. an installed package's entry point in the group ``ssl_toolkit.objectives`` (the standard Python plug-in
   mechanism; in its ``pyproject.toml``: ``[project.entry-points."ssl_toolkit.objectives"]`` then
   ``myloss = "mypkg.loss:MyLoss"``);
3. a ``"package.module:Class"`` string: a module already imported by this process (naming it runs nothing),
   or, only when the caller passes ``allow_import=True``, one to import: recipes a user gives to ``train``,
   never a recipe read from a run folder, so reading a run folder executes no code.

Whatever a name resolves to must be an `Objective` subclass before anything of it is called; importing the
module (entry point or ``allow_import``) is the only side effect. Keyword arguments are checked against the
constructor's signature without constructing anything (`check_objective`), and the facts of `facts.py` are
filled in (`build_objective`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives.base import Objective
from ssl_toolkit.objectives.dcl import DCL, DCLW
from ssl_toolkit.objectives.facts import FACTS
from ssl_toolkit.objectives.groco import GroCo
from ssl_toolkit.objectives.isogclr import ISogCLR
from ssl_toolkit.objectives.mochi import MoCHi
from ssl_toolkit.objectives.simclr import SimCLR
from ssl_toolkit.objectives.swav import SwAV

ENTRY_POINT_GROUP = "ssl_toolkit.objectives"

OBJECTIVES: dict[str, type[Objective]] = {
    "simclr": SimCLR,
    "dcl": DCL,
    "dclw": DCLW,
    "isogclr": ISogCLR,
    "swav": SwAV,
    "mochi": MoCHi,
    "groco": GroCo,
}


class _Required:
    """The value `objective_kwargs` shows for an argument without a default."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _accepted() -> str:
    return ", ".join(sorted({*OBJECTIVES, *_entry_points()}))


def resolve_objective(name: str, *, allow_import: bool = False) -> type[Objective]:
    """The `Objective` subclass called ``name`` (see the module docstring for where names come from).

    Raises:
        ConfigError: unknown name, a ``module:Class`` without ``allow_import``, an import that fails, or
            something that is not an `Objective` subclass (never called).
    """
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        try:
            found = entry_point.load()
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot load objective {name!r} ({entry_point.value}): {err}") from err
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        module = sys.modules.get(module_name)  # already imported: naming it runs nothing
        if module is None and not allow_import:
            raise ConfigError(
                f"objective {name!r} would import code, which only a recipe given to `train` may do; install it "
                f"as a package with an {ENTRY_POINT_GROUP!r} entry point, or use one of: {_accepted()}"
            )
        try:
            found = getattr(module or importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigError(f"cannot import objective {name!r}: {err}") from err
    else:
        raise ConfigError(f"unknown objective {name!r}; accepted: {_accepted()}")
    if not (isinstance(found, type) and issubclass(found, Objective)):
        raise ConfigError(f"objective {name!r} is {found!r}, not a subclass of ssl_toolkit.objectives.Objective")
    return found


def _parameters(cls: type[Objective]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {
        p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
        for p in params
        if p.name != "self" and p.kind in keyword
    }


def objective_kwargs(name: str, *, allow_import: bool = False) -> dict[str, Any]:
    """The keyword arguments objective ``name`` accepts, with their defaults (`REQUIRED`, shown as
    ``required``, for those without one: builder facts, filled in, or arguments a recipe must give)."""
    return _parameters(resolve_objective(name, allow_import=allow_import))


def _split(spec: Mapping[str, Any] | str, overrides: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"objective spec needs a 'name'; accepted: {_accepted()}")
    return name, {**spec, **overrides}


def _with_facts(name: str, cls: type[Objective], kwargs: dict[str, Any], known: Mapping[str, int]) -> dict[str, Any]:
    """``kwargs`` checked against the signature and with the known facts it declares filled in."""
    params = _parameters(cls)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(
            f"objective {name!r} got unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(params)}"
        )
    kwargs = dict(kwargs)
    for fact, value in known.items():
        if fact not in params:
            continue
        if fact in kwargs and kwargs[fact] != value:
            raise ConfigError(
                f"objective.{fact}={kwargs[fact]!r} contradicts {FACTS.get(fact, fact)}={value}; "
                "leave it out, it is filled in"
            )
        kwargs[fact] = value
    missing = [p for p, default in params.items() if default is REQUIRED and p not in kwargs and p not in FACTS]
    if missing:
        raise ConfigError(f"objective {name!r} needs {', '.join(missing)}; set objective.{missing[0]}=...")
    return kwargs


def check_objective(
    spec: Mapping[str, Any] | str,
    *,
    known: Mapping[str, int],
    ema: bool,
    sample_weights: bool,
    allow_import: bool = False,
) -> type[Objective]:
    """Check a recipe's objective against what the recipe gives, without constructing anything.

    Args:
        spec: ``{"name": ..., <kwarg>: <value>, ...}`` or a name.
        known: the facts known at validation (`builder_facts`); facts not given are filled in when building.
        ema: the model has an EMA branch (``model.ema``).
        sample_weights: per-sample weights will be passed (``quality_weights`` is set).
        allow_import: a ``module:Class`` name may be imported (recipes given to ``train`` only).

    Returns:
        The objective's class.

    Raises:
        ConfigError: one line naming the problem and the fix: unknown name or argument, an argument that
            contradicts a fact, a missing argument, or views / EMA / sample weights the objective cannot take.
    """
    name, kwargs = _split(spec, {})
    cls = resolve_objective(name, allow_import=allow_import)
    _with_facts(name, cls, kwargs, known)
    n_views, n_global = known.get("n_views"), known.get("n_global")
    if cls.requires_ema and not ema:
        raise ConfigError(f"objective {name!r} needs an EMA branch: set model.ema=true")
    if n_views is not None and n_views < cls.min_views:
        raise ConfigError(f"objective {name!r} needs >= {cls.min_views} views, the views give {n_views}")
    if n_global is not None and n_global < cls.min_global_views:
        raise ConfigError(f"objective {name!r} needs >= {cls.min_global_views} global views, the views give {n_global}")
    if n_views is not None and cls.max_views is not None and n_views > cls.max_views:
        raise ConfigError(
            f"objective {name!r} uses {cls.max_views} views, the views give {n_views}; drop the other view groups"
        )
    if sample_weights and not cls.accepts_sample_weights:
        takers = ", ".join(n for n, c in OBJECTIVES.items() if c.accepts_sample_weights)
        raise ConfigError(
            f"objective {name!r} does not take per-sample weights; use one that does ({takers}), or unset "
            "quality_weights.model_path"
        )
    return cls


def build_objective(
    spec: Mapping[str, Any] | str,
    *,
    known: Mapping[str, int] | None = None,
    allow_import: bool = False,
    **overrides: Any,
) -> Objective:
    """Build an objective from ``"simclr"`` or ``{"name": "simclr", "temperature": 0.2}``.

    Args:
        spec: the name, or the name and keyword arguments.
        known: builder facts (`builder_facts`), filled into the constructor arguments named after them.
        allow_import: a ``module:Class`` name may be imported (recipes given to ``train`` only).
        **overrides: keyword arguments that win over ``spec``'s.

    Raises:
        ConfigError: unknown name or keyword argument (the message lists what is accepted), a contradicted
            fact, a missing argument or a bad value.
    """
    name, kwargs = _split(spec, overrides)
    cls = resolve_objective(name, allow_import=allow_import)
    kwargs = _with_facts(name, cls, kwargs, known or {})
    missing = [p for p, default in _parameters(cls).items() if default is REQUIRED and p not in kwargs]
    if missing:
        fill = ", ".join(f"{m!r}: ..." for m in missing)
        raise ConfigError(f"objective {name!r} needs {', '.join(missing)}, filled in by the builders: known={{{fill}}}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"objective {name!r}: {err}") from err
