"""Learning rate as a pure function of the optimizer step: linear warm-up then cosine decay.

A function of the step (rather than a stateful scheduler) makes resume exact by construction and avoids
accelerate stepping a prepared scheduler once per process.
"""

from __future__ import annotations

import math


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based), in [min_ratio, 1]."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
