"""The search space of a sweep: ``--param KEY=V1,V2,...`` (a list) or ``--param KEY=LOW..HIGH[:log]`` (a range).

Each value is checked by loading the recipe with it (`ssl_toolkit.config.load`), so an unknown key, a value that
does not parse or one out of range is refused before any trial runs, with the recipe's own one-line message
(which names close keys: ``did you mean 'lr'?``). The typed value is read back from the loaded recipe, so
``train.lr=1`` becomes the float 1.0 that training will see. Values are scalars (numbers, strings, booleans);
lists are what the grid sampler runs, and TPE samples them as categories; ranges are for TPE only.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from ssl_toolkit.errors import ConfigError, did_you_mean

# Keys the sweep sets itself for every trial.
RESERVED = ("train.max_steps", "train.output_dir", "train.run_name", "train.resume")
SAMPLERS = ("grid", "tpe")


@dataclass(frozen=True)
class Param:
    """One swept recipe key: either ``choices`` (a list) or ``low``/``high`` (a range, ``log`` scale or not)."""

    key: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def suggest(self, trial: Any) -> Any:
        """The value of this key for an Optuna trial (a stored value when the trial is a retry)."""
        if not self.is_range:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.is_range:
            return f"{self.key}={self.low:g}..{self.high:g}{':log' if self.log else ''}"
        return f"{self.key}={','.join(format_value(v) for v in self.choices)}"


def format_value(value: Any) -> str:
    """A value as it reads in a table (``0.3``, ``bn``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def override(key: str, value: Any) -> str:
    """``key=value`` with the value written as YAML reads it back (JSON scalars are YAML)."""
    return f"{key}={json.dumps(value)}"


def _split(text: str) -> tuple[str, str]:
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError(f"--param {text!r} is not KEY=V1,V2,... or KEY=LOW..HIGH[:log], e.g. train.lr=0.1,0.3,1")
    if key in RESERVED:
        raise ConfigError(f"--param {key}: the sweep sets {', '.join(RESERVED)} itself (--trial-steps, --out)")
    return key, values.strip()


def _typed(recipe: str, overrides: list[str], key: str, raw: str, text: str) -> Any:
    """The value of ``key`` in the recipe loaded with ``key=raw``, or a one-line error naming the --param."""
    from omegaconf import OmegaConf

    from ssl_toolkit import config

    try:
        cfg = config.load(recipe, [*overrides, f"{key}={raw}"])
    except ConfigError as err:
        about_key = "unknown key" in str(err) or "unknown argument" in str(err)
        raise ConfigError(f"--param {text}: {'' if about_key else f'value {raw!r}: '}{err}") from None
    value = OmegaConf.select(cfg, key)
    if OmegaConf.is_config(value) or isinstance(value, (list, dict)):
        raise ConfigError(f"--param {text}: {key} is a section or a list; sweep single values (numbers, names)")
    return value


def _number(raw: str, text: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"--param {text}: range end {raw!r} is not a number") from None


def _range(recipe: str, overrides: list[str], key: str, values: str, text: str) -> Param:
    spec, _, scale = values.partition(":")
    if scale not in ("", "log"):
        raise ConfigError(f"--param {text}: unknown scale {scale!r}{did_you_mean(scale, ['log'])}; write LOW..HIGH:log")
    low_text, _, high_text = spec.partition("..")
    low, high = _number(low_text, text), _number(high_text, text)
    if not low < high or (scale == "log" and low <= 0):
        raise ConfigError(f"--param {text}: needs LOW < HIGH (and LOW > 0 on a log scale)")
    ends = [_typed(recipe, overrides, key, raw, text) for raw in (low_text, high_text)]
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in ends)
    return Param(key, low=low, high=high, log=scale == "log", integer=integer)


def parse_param(text: str, *, recipe: str, overrides: list[str]) -> Param:
    """One ``--param`` argument, checked against the recipe (see the module docstring).

    Raises:
        ConfigError: not KEY=..., a reserved key, an unknown key, or a value the recipe refuses.
    """
    key, values = _split(text)
    if ".." in values and "," not in values:
        return _range(recipe, overrides, key, values, text)
    raws = [v.strip() for v in values.split(",")]
    if any(not raw for raw in raws):
        raise ConfigError(f"--param {text}: empty value in the list; write KEY=V1,V2,...")
    choices = tuple(dict.fromkeys(_typed(recipe, overrides, key, raw, text) for raw in raws))
    return Param(key, choices=choices)


def parse_space(texts: list[str], *, recipe: str, overrides: list[str], sampler: str) -> list[Param]:
    """Every ``--param``, checked for the sampler (grid: lists only) and for keys given twice."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown --sampler {sampler!r}{did_you_mean(sampler, SAMPLERS)}; accepted: grid, tpe")
    if not texts:
        raise ConfigError("give at least one --param KEY=V1,V2,..., e.g. --param train.lr=0.1,0.3,1,3")
    params = [parse_param(t, recipe=recipe, overrides=overrides) for t in texts]
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"--param {twice[0]} is given twice; list all its values in one --param")
    ranges = [p.describe() for p in params if p.is_range]
    if sampler == "grid" and ranges:
        raise ConfigError(
            f"--param {ranges[0]} is a range; the grid sampler needs a list of values (KEY=V1,V2,...), or use "
            "--sampler tpe"
        )
    return params


def grid(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the listed values (the grid sampler's points), in order."""
    keys = [p.key for p in params]
    return [dict(zip(keys, values)) for values in itertools.product(*(p.choices for p in params))]
