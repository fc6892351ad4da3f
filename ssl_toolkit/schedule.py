"""Learning rate as a pure function of the optimizer step: linear warm-up then cosine decay.

A function of the step (rather than a stateful scheduler) makes resume exact by construction and avoids
accelerate stepping a prepared scheduler once per process.
"""

from __future__ import annotations

import math
import warnings


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based), in [min_ratio, 1]."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(train, total_steps: int) -> int:  # noqa: ANN001 - the recipe's train section
    """Warm-up steps of a run of ``total_steps``: ``train.warmup_steps`` or ``train.warmup_fraction`` of the run.

    Warns when the warm-up is not shorter than the run (the learning rate would not reach ``train.lr`` in time).
    """
    steps = train.warmup_steps if train.warmup_fraction is None else round(train.warmup_fraction * total_steps)
    if steps >= total_steps > 0:
        warnings.warn(
            f"the warm-up ({steps} steps) is not shorter than the run ({total_steps} steps): the learning rate "
            "reaches train.lr only at the end, if at all; lower train.warmup_steps or use train.warmup_fraction",
            stacklevel=2,
        )
    return int(steps)
