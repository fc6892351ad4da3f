"""The temperature of an InfoNCE-family loss: a constant, a cosine schedule over training, or learnable.

Written here because neither lightly nor timm has one: lightly's losses take a fixed float. A recipe says

    temperature: 0.2                                        # constant
    temperature: {kind: cosine, start: 0.5, end: 0.1}       # follows ctx.progress from start to end
    temperature: {kind: learnable, init: 0.2, min: 0.05, max: 1.0}

A learnable τ is parametrised by its logarithm (as CLIP's logit scale) so gradient steps are relative, and
kept in [min, max] by projection, as CLIP clamps its logit scale: each forward first clamps the parameter
itself in place, then uses exp(θ) unclamped. The gradient therefore always flows, and a τ at a bound leaves
it as soon as the loss prefers a value inside. (Clamping only the output, exp(θ).clamp(min, max), zeroes the
gradient at a bound while SGD momentum carries θ further out, so τ can never come back: measured on the
default job, θ ended at 2.8 with the loss preferring τ 0.2 over the bound 1.0.) It is a parameter of the
objective, so the optimizer trains it, DDP reduces its gradient (the projection is the same on every
process) and checkpoints save it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ssl_toolkit.objectives.checks import check_number

TEMPERATURE_KINDS = ("constant", "cosine", "learnable")


class Temperature(nn.Module):
    """``temperature(progress) -> τ``, a 0-d float32 tensor (differentiable when learnable).

    Args:
        kind: "constant", "cosine" or "learnable".
        value: the constant τ, or the learnable τ's initial value.
        start: cosine: τ at progress 0.
        end: cosine: τ at progress 1.
        min: learnable: lower clamp.
        max: learnable: upper clamp.
    """

    def __init__(
        self,
        *,
        kind: str = "constant",
        value: float = 0.1,
        start: float | None = None,
        end: float | None = None,
        min: float = 0.01,  # noqa: A002 - the recipe's key
        max: float = 1.0,  # noqa: A002
    ) -> None:
        super().__init__()
        self.kind = kind
        self.start, self.end = start, end
        self.min, self.max = float(min), float(max)
        self.value = float(value)
        if kind == "learnable":
            self.log_tau = nn.Parameter(torch.tensor(math.log(self.value)))

    def forward(self, progress: float = 0.0) -> Tensor:
        if self.kind == "learnable":
            with torch.no_grad():  # projection onto [log min, log max]; the exp below keeps its gradient
                self.log_tau.clamp_(math.log(self.min), math.log(self.max))
            return self.log_tau.float().exp()
        if self.kind == "cosine":
            p = min(max(float(progress), 0.0), 1.0)
            tau = self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * p))  # type: ignore[operator]
            return torch.tensor(tau, dtype=torch.float32)
        return torch.tensor(self.value, dtype=torch.float32)

    def extra_repr(self) -> str:
        if self.kind == "cosine":
            return f"cosine, start={self.start}, end={self.end}"
        if self.kind == "learnable":
            return f"learnable, init={self.value}, min={self.min}, max={self.max}"
        return f"constant, {self.value}"


def _positive(value: Any, what: str) -> float:
    return check_number(value, what, 0.0, low_open=True)


def build_temperature(spec: float | Mapping[str, Any] | Temperature) -> Temperature:
    """A `Temperature` from a number or ``{kind: cosine|learnable, ...}``.

    Raises:
        ValueError: unknown kind or key, a missing key, a value <= 0, or ``min > init``/``init > max``;
            the message lists what is accepted (objectives turn it into a ConfigError).
    """
    if isinstance(spec, Temperature):
        return spec
    if not isinstance(spec, Mapping):
        return Temperature(kind="constant", value=_positive(spec, "temperature"))
    spec = dict(spec)
    kind = spec.pop("kind", None)
    keys = {"cosine": ("start", "end"), "learnable": ("init", "min", "max")}
    if kind not in keys:
        raise ValueError(
            f"temperature kind {kind!r} is not known; accepted: a number, {{kind: cosine, start, end}} or "
            "{kind: learnable, init, min, max}"
        )
    unknown, missing = sorted(set(spec) - set(keys[kind])), [k for k in keys[kind] if k not in spec]
    if unknown or missing:
        raise ValueError(f"temperature {kind}: unknown keys {unknown}, missing keys {missing}; needs {keys[kind]}")
    values = {k: _positive(v, f"temperature.{k}") for k, v in spec.items()}
    if kind == "cosine":
        return Temperature(kind="cosine", value=values["start"], start=values["start"], end=values["end"])
    if not values["min"] <= values["init"] <= values["max"]:
        raise ValueError(f"temperature learnable: needs min <= init <= max, got {values}")
    return Temperature(kind="learnable", value=values["init"], min=values["min"], max=values["max"])
