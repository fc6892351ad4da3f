"""`Batch`: what every training loader yields, whatever the view backend or data source.

``views`` and ``ids`` are what every objective needs; ``extras`` carries per-sample signals of a particular
data source (``is_generated`` when a bank of generated images is mixed in, anything later) to the objectives
through ``StepContext.extras`` without the engine knowing their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """One training batch.

    Attributes:
        views: V tensors (B, C, H_v, W_v), global views first.
        ids: (B,) int64 dataset indices (identical for every view).
        extras: named (B,) per-sample tensors from the data source; empty for plain datasets.
    """

    views: list[Tensor]
    ids: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on ``device`` (accelerate's device placement calls this)."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch([move(v) for v in self.views], move(self.ids), {k: move(v) for k, v in self.extras.items()})

    def pin_memory(self) -> Batch:
        """Page-locked copies, for the DataLoader's ``pin_memory=True`` on GPU machines."""
        return Batch(
            [v.pin_memory() for v in self.views],
            self.ids.pin_memory(),
            {k: v.pin_memory() for k, v in self.extras.items()},
        )

    def __len__(self) -> int:
        return int(self.ids.shape[0])
