"""Which processes an objective's batch spans, and gathering across them.

lightly provides the pieces: `lightly.utils.dist` (``world_size``, ``rank`` and ``gather``, an all-gather that
keeps gradients) and `lightly.models.utils.concat_all_gather` (the same without gradients, for queues and
tables). What it lacks is the rule every objective with ``gather_distributed`` applies, "(world, rank) of the
gather, or (1, 0) when each process keeps to its own batch", so that is written once here.
"""

from __future__ import annotations

import torch
from lightly.utils import dist as lightly_dist
from torch import Tensor


def gather_span(gather_distributed: bool) -> tuple[int, int]:
    """``(world, rank)`` of the gather; ``(1, 0)`` with one process or when each process keeps to its own batch."""
    if gather_distributed and lightly_dist.world_size() > 1:
        return lightly_dist.world_size(), lightly_dist.rank()
    return 1, 0


def gather_cat(t: Tensor, dim: int = 0) -> Tensor:
    """``t`` of every process concatenated along ``dim`` in rank order, gradients kept (lightly's gather).

    Shape:
        t: (..., B, ...) with B at ``dim``. Returns (..., W*B, ...).
    """
    return torch.cat(lightly_dist.gather(t.contiguous()), dim=dim)
