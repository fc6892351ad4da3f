"""Checks of constructor arguments shared by the objectives: one message style, one place.

Each raises `ValueError` naming the argument, what it accepts and what it got; `build_objective` turns that
into a one-line `ConfigError`. A recipe's YAML gives ``true``/``1``/``1.0`` as bool/int/float, so bools are
never accepted as numbers and integers are checked as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_bool(value: object, what: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def check_int(value: object, what: str, low: int = 0) -> int:
    """``value`` if it is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def check_number(value: object, what: str, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a float if it is a number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (low < value if low_open else low <= value) or not value <= high:  # type: ignore[operator]
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        raise ValueError(f"{what} must be a number {bounds}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_choice(value: object, what: str, accepted: Sequence[str]) -> str:
    """``value`` if it is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{what} must be one of {', '.join(accepted)}; got {value!r}")
    return value  # type: ignore[return-value]
