"""The run folder of a recipe: where it is and what it holds.

``<train.output_dir>/<train.run_name or name>/`` holds ``recipe.yaml`` (the resolved recipe), ``metrics.csv``,
``tensorboard/``, ``checkpoints/`` and, at the end, the exported ``encoder/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RECIPE = "recipe.yaml"
CHECKPOINTS = "checkpoints"
ENCODER = "encoder"


def run_dir_of(cfg: Any) -> Path:
    """The run folder of a loaded recipe."""
    return Path(cfg.train.output_dir) / (cfg.train.run_name or cfg.name)
