"""The objective interface shared by every loss: `Objective`, `StepContext`, `LossOutput`.

The engine calls ``objective(z, ctx)`` and knows nothing else about the method; see docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class StepContext:
    """What an objective may need to know about the current step besides the embeddings.

    Attributes:
        step: optimizer steps taken so far.
        progress: ``step / total_steps`` in [0, 1]; drives schedules (temperature, queue start, warm-up).
        n_global: ``z[:n_global]`` come from full-size (global) views.
        ids: (B,) dataset indices of the batch, identical for every view.
        view_kinds: one tag per view, e.g. ``("crop", "crop", "local", ...)``.
        z_ema: projector outputs of the model's EMA (momentum) branch for the global views, without
            gradient, one (B, D) tensor per global view; empty when the model has no EMA branch.
        extras: named (B,) per-sample tensors from the data source and the model's signals, passed through
            untouched by the engine. Known names: ``is_generated`` (bool; a bank of generated images is mixed
            in: GenView, the sample's ``source: generated`` view was cut from a bank variant; AdaInf, the sample
            is a bank image) and ``sample_weights`` (float, mean 1, no gradient: GenView's quality weights,
            ``quality_weights`` in the recipe; objectives with ``accepts_sample_weights`` scale each sample's
            terms).
    """

    step: int = 0
    progress: float = 0.0
    n_global: int = 2
    ids: Tensor | None = None
    view_kinds: tuple[str, ...] = ()
    z_ema: tuple[Tensor, ...] = ()
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def sample_weights(self) -> Tensor | None:
        """``extras["sample_weights"]``, or None when the batch is unweighted."""
        return self.extras.get("sample_weights")


@dataclass
class LossOutput:
    """A scalar differentiable loss plus detached scalars to log under ``logs``."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


@contextmanager
def float32_region(z: list[Tensor]) -> Iterator[list[Tensor]]:
    """Autocast off and ``z`` cast to float32, for the loss maths.

    Casting the inputs alone is not enough: under autocast a float32 matmul still runs (and rounds) in
    bf16/fp16, and at temperature 0.1 a bf16 logit is off by up to ~0.03.
    """
    device_type = z[0].device.type if z else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        yield [v.float() for v in z]


def unit_views(z: Sequence[Tensor], eps: float = 1e-12) -> Tensor:
    """The views as unit vectors, stacked, so that a dot product is a cosine similarity.

    Shape:
        z: V tensors of shape (B, D). Returns (V, B, D).
    """
    return F.normalize(torch.stack(list(z)), dim=-1, eps=eps)


class Objective(nn.Module):
    """Base class of every self-supervised objective.

    Subclasses take keyword-only constructor arguments, normalise and compute in float32 themselves
    (``with float32_region(z) as z:``), keep state
    (queues, per-sample tables) in persistent buffers and learnable things in parameters.

    What an objective needs from the recipe it declares, and `check_objective` checks it once, at
    validation (forward never re-checks):

    - constructor arguments named like a builder fact (``proj_dim``, ``n_global``, ``n_views``,
      ``dataset_size``; see `facts.py`) are filled in by `build_objective`; leave them without a default;
    - the class attributes below.

    Attributes:
        requires_ema: forward reads ``ctx.z_ema``, the model's EMA branch (``model.ema: true``).
        min_views: the fewest views forward takes.
        min_global_views: the fewest global views forward takes.
        max_views: forward uses only the first ``max_views`` views; None: every view.
        accepts_sample_weights: forward honours ``ctx.sample_weights``.
    """

    requires_ema: ClassVar[bool] = False
    min_views: ClassVar[int] = 2
    min_global_views: ClassVar[int] = 1
    max_views: ClassVar[int | None] = None
    accepts_sample_weights: ClassVar[bool] = False

    def histograms(self) -> dict[str, Tensor]:
        """Value distributions worth a TensorBoard histogram (e.g. per-sample temperatures); none by default."""
        return {}

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Compute the loss.

        Args:
            z: ``z[v]`` is the un-normalised projector output of view ``v``, global views first.
            ctx: step information (see `StepContext`).

        Shape:
            z: V tensors of shape (B, D).
        """
        raise NotImplementedError
