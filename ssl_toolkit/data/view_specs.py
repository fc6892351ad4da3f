"""View groups as data: presets, defaults and validation shared by both view backends.

A recipe lists view groups (``views:``); `parse_view_groups` checks them and returns every group with every key
explicit (preset defaults filled in, ``global`` stated), so the saved recipe says exactly what runs. The
per-image backend (``views.py``, torchvision) and the batched backend (``batched_views.py``) build
transforms from the same checked arguments (`validated_view_args`), so they accept and reject the same recipes.
This module imports neither backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ssl_toolkit.errors import ConfigError

AUGMENTS = ("simclr", "simclr_weak", "none")
SOURCES = ("real", "generated")
GROUP_KEYS = ("name", "n", "size", "global", "augment", "scale", "strength", "jitter_p", "gray_p", "blur_p", "source")
TRANSFORM_KEYS = ("size", "augment", "scale", "strength", "jitter_p", "gray_p", "blur_p")

# Defaults of the keys a view group may leave out, per preset; a value the recipe gives always wins.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"scale": [0.08, 1.0], "strength": 1.0, "jitter_p": 0.8},
    # AdaInf's weaker SimCLR augmentation for inflated data (Wang, Zhang & Wang, ICLR 2024, symmetric_adainf.yaml):
    # min scale 0.08 -> 0.2, jitter p 0.8 -> 0.4, jitter (0.8, 0.8, 0.8, 0.2) -> (0.4, 0.4, 0.4, 0.1)
    "simclr_weak": {"scale": [0.2, 1.0], "strength": 0.5, "jitter_p": 0.4},
    "none": {"scale": [0.08, 1.0], "strength": 1.0, "jitter_p": 0.8},
}

# Named view-group lists a recipe can give as ``views: <name>`` (or the override ``views=<name>``).
VIEW_PRESETS: dict[str, list[dict[str, Any]]] = {
    # SwAV's multi-crop (official multicropdataset.py): 2 x 224 (0.14, 1) + 6 x 96 (0.05, 0.14)
    "multicrop": [
        {"name": "global", "n": 2, "size": 224, "scale": [0.14, 1.0], "augment": "simclr"},
        {"name": "local", "n": 6, "size": 96, "scale": [0.05, 0.14], "augment": "simclr"},
    ],
    # 32 px images (solo-learn cifar-multicrop swav.yaml): 2 x 32 (0.2, 1) with jitter 0.6 + 6 x 18 (0.08, 0.5)
    # with jitter 0.8 and blur 0.1; solo-learn's solarisation is not a preset option here
    "multicrop_small": [
        {"name": "global", "n": 2, "size": 32, "scale": [0.2, 1.0], "augment": "simclr", "strength": 0.75},
        {"name": "local", "n": 6, "size": 18, "scale": [0.08, 0.5], "augment": "simclr", "blur_p": 0.1},
    ],
    # 28 px greyscale images (the default Fashion-MNIST recipe, tuned in eval/RESULTS.md)
    "multicrop_28": [
        {"name": "global", "n": 2, "size": 28, "scale": [0.4, 1.0], "augment": "simclr", "strength": 0.5},
        {"name": "local", "n": 4, "size": 14, "scale": [0.1, 0.4], "augment": "simclr", "strength": 0.5},
    ],
}


def as_triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    """Return ``values`` (1 or 3 numbers) as a 3-tuple of floats, or raise ConfigError naming ``what``."""
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ConfigError(f"{what} must have 1 or 3 values (one per RGB channel), got {len(vals)}")
    if what == "std" and min(vals) <= 0:
        raise ConfigError(f"std must be positive, got {vals}")
    return vals  # type: ignore[return-value]


def view_preset(name: str) -> list[dict[str, Any]]:
    """A copy of the view groups of preset ``name`` (see `VIEW_PRESETS`).

    Raises:
        ConfigError: unknown name (the message lists the presets).
    """
    if name not in VIEW_PRESETS:
        raise ConfigError(f"unknown views preset {name!r}; accepted: {', '.join(VIEW_PRESETS)} or a list of groups")
    return [dict(group) for group in VIEW_PRESETS[name]]


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian-blur kernel of about 10 % of the image side (SimCLR), at least 3."""
    k = max(3, int(0.1 * size))
    return k + 1 - k % 2


def _probability(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _int_at_least(value: Any, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def validated_view_args(
    *,
    augment: str = "simclr",
    size: int,
    scale: Sequence[float] | None = None,
    strength: float | None = None,
    jitter_p: float | None = None,
    gray_p: float = 0.2,
    blur_p: float | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
) -> dict[str, Any]:
    """Check one view's settings and fill in the defaults; the arguments of either backend's view builder.

    Raises:
        ConfigError: unknown preset, ``size < 1``, bad scale, strength or probabilities.
    """
    if augment not in PRESET_DEFAULTS:
        raise ConfigError(f"unknown augment preset {augment!r}; accepted: {', '.join(AUGMENTS)}")
    defaults = PRESET_DEFAULTS[augment]
    scale = defaults["scale"] if scale is None else scale
    strength = defaults["strength"] if strength is None else strength
    jitter_p = defaults["jitter_p"] if jitter_p is None else jitter_p
    _int_at_least(size, 1, "view size")
    try:
        lo, hi = (float(x) for x in scale)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"scale must be two numbers with 0 < a <= b <= 1, got {list(scale)}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 2.5:
        raise ConfigError(f"strength must be in [0, 2.5] (hue jitter 0.2*strength <= 0.5), got {strength!r}")
    blur = (0.5 if size > 32 else 0.0) if blur_p is None else _probability(blur_p, "blur_p")
    return {
        "augment": augment,
        "size": size,
        "scale": (lo, hi),
        "strength": float(strength),
        "jitter_p": _probability(jitter_p, "jitter_p"),
        "gray_p": _probability(gray_p, "gray_p"),
        "blur_p": blur,
        "mean": as_triple(mean, "mean"),
        "std": as_triple(std, "std"),
        "greyscale": bool(greyscale),
    }


def _parse_group(group: Any, first: bool) -> dict[str, Any]:
    if not isinstance(group, Mapping):
        raise ConfigError(f"each view group must be a mapping like {{name: global, n: 2, size: 32}}, got {group!r}")
    unknown = sorted(set(group) - set(GROUP_KEYS))
    missing = [k for k in ("name", "n", "size") if group.get(k) is None]
    if unknown or missing:
        raise ConfigError(
            f"view group {dict(group)}: unknown keys {unknown}, missing keys {missing}; "
            f"accepted: {', '.join(GROUP_KEYS)}"
        )
    name = str(group["name"])
    source = group.get("source") or "real"
    if source not in SOURCES:
        raise ConfigError(f"view group {name!r}: unknown source {source!r}; accepted: {', '.join(SOURCES)}")
    is_global = group.get("global", first)
    if not isinstance(is_global, bool):
        raise ConfigError(f"view group {name!r}: global must be true or false, got {is_global!r}")
    _int_at_least(group["n"], 1, f"view group {name!r}: n")
    given = {k: group[k] for k in TRANSFORM_KEYS if group.get(k) is not None}
    try:
        args = validated_view_args(**given, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    except ConfigError as err:
        raise ConfigError(f"view group {name!r}: {err}") from None
    return {
        "name": name,
        "n": group["n"],
        "size": args["size"],
        "global": is_global,
        "augment": args["augment"],
        "scale": list(args["scale"]),
        "strength": args["strength"],
        "jitter_p": args["jitter_p"],
        "gray_p": args["gray_p"],
        "blur_p": args["blur_p"],
        "source": source,
    }


def parse_view_groups(groups: Any) -> list[dict[str, Any]]:
    """Check recipe view groups and return them with every key explicit.

    A group leaving out ``global`` is global when it is the first group; global groups must come first (the
    objectives read ``z[:n_global]``) and be the largest. A string names a preset (`VIEW_PRESETS`).

    Raises:
        ConfigError: one line naming the group and the problem.
    """
    if isinstance(groups, str):
        groups = view_preset(groups)
    if not isinstance(groups, Sequence) or not groups:
        raise ConfigError("views is empty; give at least one view group, e.g. [{name: global, n: 2, size: 32}]")
    parsed = [_parse_group(g, first=i == 0) for i, g in enumerate(groups)]
    flags = [g["global"] for g in parsed]
    if not flags[0] or flags != sorted(flags, reverse=True):
        raise ConfigError(f"global view groups must come first: global flags in order {flags}")
    sizes = [g["size"] for g in parsed]
    if sizes[0] < max(sizes):
        raise ConfigError(f"the first view group must have the largest size (global views first): {sizes}")
    if sum(g["n"] for g in parsed) < 2:
        raise ConfigError("the view groups produce fewer than 2 views; contrastive objectives need >= 2")
    return parsed


def count_views(groups: Sequence[Mapping[str, Any]]) -> int:
    """Views per sample."""
    return sum(int(g["n"]) for g in groups)


def count_global_views(groups: Sequence[Mapping[str, Any]]) -> int:
    """Global views per sample (groups marked ``global``; the first group when none says)."""
    return sum(int(g["n"]) for i, g in enumerate(groups) if g.get("global", i == 0))


def view_kinds(groups: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Per view, the name of its group."""
    return tuple(str(g["name"]) for g in groups for _ in range(int(g["n"])))


def view_sources(groups: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Per view, the image it is cut from: "real" or "generated" (the group's ``source``, default real)."""
    return tuple(str(g.get("source") or "real") for g in groups for _ in range(int(g["n"])))


def transform_args(group: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a group that its view transform takes (None values left out: the preset's default)."""
    args = {k: group[k] for k in TRANSFORM_KEYS if group.get(k) is not None}
    if "scale" in args:
        args["scale"] = tuple(args["scale"])
    return args
