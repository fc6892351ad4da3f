"""Singular values of an embedding matrix, in float64 and bounded memory: what RankMe and alpha-ReQ summarise.

Route: when ``N >= D``, the float64 Gram matrix ``ZᵀZ`` (D x D) is accumulated over row chunks, so ``Z`` is
never copied whole to float64, and ``torch.linalg.eigvalsh`` gives ``σ² = λ(ZᵀZ)``; when ``N < D``,
``torch.linalg.svdvals`` of the (then small) float64 matrix. The Gram route needs ``D²`` instead of ``N·D``
float64 memory and less work than a full SVD (``benchmarks/eval_scale.py`` measures the ratio).

Squaring costs resolution: an eigenvalue of ``ZᵀZ`` is only known to about ``D · eps₆₄ · λ_max``, so
singular values below ``sqrt(D · eps₆₄) · σ_max`` (about 1e-7 of the largest for D = 128, 7e-7 for D = 2048)
are indistinguishable from rounding noise and are returned as exactly 0 (the SVD would return values of
order ``eps₆₄ · σ_max`` there). Thresholding them is what keeps RankMe of collapsed (low-rank) matrices equal
to the SVD route to about 1e-13; without it the rounding noise, square-rooted, adds ~1e-8·σ_max per
dimension and moves RankMe of a rank-1 matrix by 7e-6. The Gram route must stay float64: in float32 the same
floor is ``sqrt(D · 1.2e-7) ≈ 4e-3`` of ``σ_max``, which erases real small singular values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval.arrays import as_tensor

_CHUNK_ELEMENTS = 1 << 22  # float64 values per row chunk of the Gram accumulation (32 MiB)


def _checked(z: Any, what: str) -> Tensor:
    z = as_tensor(z, f"{what} embedding matrix", ndim=2)
    if z.numel() == 0:
        raise ConfigError(f"{what} needs a non-empty embedding matrix, got shape {tuple(z.shape)}")
    if z.device.type == "mps":  # MPS has no float64
        z = z.cpu()
    if not z.is_floating_point():
        z = z.to(torch.float64)
    return z


def _row_chunks(z: Tensor) -> list[Tensor]:
    return list(z.split(max(1, _CHUNK_ELEMENTS // max(1, z.shape[1]))))


def column_mean(z: Tensor) -> Tensor:
    """Float64 mean of the rows of ``z``, accumulated over row chunks. Shape: z (N, D) -> (D,)."""
    total = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
    for chunk in _row_chunks(z):
        total += chunk.to(torch.float64).sum(dim=0)
    return total / z.shape[0]


def gram64(z: Tensor, mean: Tensor | None = None) -> Tensor:
    """``(Z - mean)ᵀ (Z - mean)`` in float64, one row chunk at a time; raises on NaN/inf.

    Shape:
        z: (N, D); mean: (D,) or None (no centring); returns (D, D) float64 on ``z.device``.
    """
    gram = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
    for chunk in _row_chunks(z):
        c = chunk.to(torch.float64)
        if mean is not None:
            c = c - mean
        if not torch.isfinite(c).all():
            raise ConfigError("the embedding matrix contains NaN or inf")
        gram.addmm_(c.T, c)  # (D, D)
    return gram


def singular_values(z: Any, *, center: bool = False, what: str = "spectrum") -> Tensor:
    """Singular values of ``z`` (optionally column-centred) in float64, descending, on the CPU.

    Args:
        z: the embedding matrix, one row per sample (numpy array or tensor).
        center: subtract the column mean first (covariance spectrum; RankMe does not centre, alpha-ReQ does).
        what: the caller's name, for error messages.

    Returns:
        The ``min(N, D)`` singular values; those below the Gram route's resolution are exactly 0 (module doc).

    Shape:
        z: (N, D); returns (min(N, D),).
    """
    z = _checked(z, what)
    n, d = z.shape
    mean = column_mean(z) if center else None
    if n < d:
        z64 = z.to(torch.float64)
        z64 = z64 - mean if mean is not None else z64
        if not torch.isfinite(z64).all():
            raise ConfigError(f"{what} input contains NaN or inf")
        return torch.linalg.svdvals(z64).cpu()  # (N,)
    try:
        lam = torch.linalg.eigvalsh(gram64(z, mean)).flip(0)  # (D,) descending
    except ConfigError as err:
        raise ConfigError(f"{what} input contains NaN or inf") from err
    floor = lam[0].clamp_min(0) * d * torch.finfo(torch.float64).eps
    lam = torch.where(lam > floor, lam, torch.zeros_like(lam))
    return lam.sqrt().cpu()
