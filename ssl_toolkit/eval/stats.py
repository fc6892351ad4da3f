"""Embedding statistics for label-free checks: feature norms, per-dimension spread and dead dimensions.

Cheap signs of collapse that need no labels and no augmentations: a mean feature norm near 0, a tiny
per-dimension standard deviation (complete collapse: every sample maps to one point) or many dimensions that
never vary ("dead" dimensions, e.g. ReLU units that are always 0; dimensional collapse). A dimension is dead
when its standard deviation over the samples is below ``DEAD_DIM_RELATIVE_STD`` (1e-4) times the largest
dimension's, which makes the test independent of the features' scale.
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.arrays import as_tensor
from ssl_toolkit.eval.spectrum import column_mean


def embedding_stats(z: Any, *, dead_relative_std: float = defaults.DEAD_DIM_RELATIVE_STD) -> dict[str, float]:
    """Mean feature norm, per-dimension std (mean, min, max) and the fraction of dead dimensions.

    Args:
        z: the embedding matrix, one row per sample (numpy array or tensor).
        dead_relative_std: a dimension whose std is below this fraction of the largest std is dead.

    Returns:
        ``{"norm_mean", "dim_std_mean", "dim_std_min", "dim_std_max", "dead_fraction"}``; every std is the
        population std (divided by N) in the features' own units. All dimensions count as dead when no
        dimension varies at all.

    Shape:
        z: (N, D) with N >= 1.
    """
    z = as_tensor(z, "embedding-statistics matrix", ndim=2)
    if z.numel() == 0:
        raise ConfigError(f"embedding statistics need a non-empty matrix, got shape {tuple(z.shape)}")
    if z.device.type == "mps":
        z = z.cpu()
    if not z.is_floating_point():
        z = z.to(torch.float64)
    mean = column_mean(z)  # (D,)
    sq_dev = torch.zeros_like(mean)
    norm_sum = torch.zeros((), dtype=torch.float64, device=z.device)
    for chunk in z.split(max(1, (1 << 22) // z.shape[1])):
        c = chunk.to(torch.float64)
        if not torch.isfinite(c).all():
            raise ConfigError("embedding statistics: the matrix contains NaN or inf")
        sq_dev += (c - mean).square().sum(dim=0)
        norm_sum += torch.linalg.vector_norm(c, dim=1).sum()
    std = (sq_dev / z.shape[0]).sqrt()  # (D,)
    top = float(std.max())
    dead = std <= dead_relative_std * top if top > 0 else torch.ones_like(std, dtype=torch.bool)
    return {
        "norm_mean": float(norm_sum) / z.shape[0],
        "dim_std_mean": float(std.mean()),
        "dim_std_min": float(std.min()),
        "dim_std_max": top,
        "dead_fraction": float(dead.double().mean()),
    }
