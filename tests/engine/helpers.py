"""Fixtures for engine tests: a generated labelled image folder and a loss that turns NaN on cue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_toolkit.objectives import LossOutput, Objective, StepContext
from ssl_toolkit.objectives.simclr import SimCLR


def make_image_folder(root: Path, *, per_class: int = 16, size: int = 16, classes: int = 2) -> Path:
    """``root/{train,test}/class_k/*.png``: noisy class-dependent patterns, deterministic."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3), np.float32)
                base[:, : size // 2 if c == 0 else size, c % 3] = 180
                img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


class NanAfter(Objective):
    """SimCLR until optimizer step ``nan_step``, then a NaN loss."""

    def __init__(self, *, nan_step: int = 2) -> None:
        super().__init__()
        self.nan_step = nan_step
        self.inner = SimCLR(temperature=0.2, gather_distributed=False)

    def forward(self, z: list[torch.Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        out = self.inner(z, ctx)
        return LossOutput(loss=out.loss * float("nan")) if ctx.step >= self.nan_step else out
