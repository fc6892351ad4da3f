"""LiDAR: the effective rank of the LDA matrix that separates each sample's cloud of augmented views.

Thilak, Huang, Saremi, Dinh, Goh, Nakkiran, Susskind, Littwin, "LiDAR: Sensing Linear Probing Performance in
Joint Embedding SSL Architectures", 2023, https://arxiv.org/abs/2312.04000. Each of N clean samples is a
"surrogate class" whose members are its V augmented views ``e_ij`` (the SSL task's own classes)::

    mu_i = mean_j e_ij                      mu = mean_i mu_i
    S_b = 1/(N-1)     sum_i (mu_i - mu)(mu_i - mu)^T                       between-class scatter
    S_w = 1/(N(V-1))  sum_ij (e_ij - mu_i)(e_ij - mu_i)^T  +  delta * I     within-class scatter, ridged
    lambda = eigenvalues of  S_w^(-1/2) S_b S_w^(-1/2)   (= generalised eigenvalues of S_b v = lambda S_w v)
    p_k = lambda_k / ||lambda||_1 + eps
    LiDAR = exp(-sum_k p_k log p_k)

High when many directions separate samples *relative to* how much augmentation moves them; RankMe (no
augmentations) cannot tell informative from nuisance variance. Compare runs of one method only.

Constants, checked against the public implementations (values in ``docs/evaluation.md``):
- ``delta = 1e-4``: stable-pretraining's ``LiDAR`` callback default (``callbacks/lidar.py``); reptrix
  (``lidar.py``, by alpha-ReQ's authors) uses 1e-6. delta is absolute, so it matters only for directions with
  within-sample variance near or below it (a collapsed or near-constant direction stops dividing by ~0).
- ``eps = 1e-7`` added after L1 normalisation, as RankMe's (the paper defines LiDAR's entropy like
  RankMe's); stable-pretraining adds ``1e-8`` before normalising, which moves LiDAR by about 2e-5 relative
  on a 32-d test case (equal to 1e-10 without either epsilon, ``tests/eval/test_lidar.py``).
- Unbiased scatters ``1/(N-1)`` and ``1/(N(V-1))``, as stable-pretraining; a common factor in S_b would not
  change LiDAR (the entropy of normalised eigenvalues is scale-free) but the one in S_w changes how much the
  fixed delta weighs.
reptrix takes a PCA of the LDA matrix's rows instead of its eigenvalues, which is not the paper's quantity;
we do not follow it there.

Input layout: the views of one sample are grouped, ``z[i, j]`` is view j of sample i, as our loader yields
them (stable-pretraining instead chunks a queue sequentially and warns that this only matches the paper
when a sample's views arrive together). Computed in float64 with ``eigh``; written by hand because neither
torch nor our dependencies ship LDA ranks (scikit-learn's LDA would need N·V labels and solves a classifier).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.arrays import as_tensor


def lidar_matrices(z: Any, *, delta: float = defaults.LIDAR_DELTA) -> tuple[Tensor, Tensor]:
    """Between-class scatter ``S_b`` and ridged within-class scatter ``S_w`` of grouped views, float64.

    Args:
        z: embeddings of V views of each of N samples, views of one sample in one row.
        delta: ridge added to the diagonal of ``S_w``.

    Shape:
        z: (N, V, D) with N >= 2 and V >= 2; returns two (D, D) float64 tensors on ``z.device`` (CPU for MPS).
    """
    z = as_tensor(z, "LiDAR embeddings", ndim=3)
    n, v, d = z.shape
    if n < 2 or v < 2 or d < 1:
        raise ConfigError(f"LiDAR needs >= 2 samples with >= 2 views each, got shape (N, V, D) = {tuple(z.shape)}")
    if not delta >= 0:
        raise ConfigError(f"LiDAR delta must be >= 0, got {delta}")
    if z.device.type == "mps":
        z = z.cpu()
    z = z.to(torch.float64)
    if not torch.isfinite(z).all():
        raise ConfigError("LiDAR input contains NaN or inf")
    means = z.mean(dim=1)  # (N, D)
    between = means - means.mean(dim=0)  # (N, D)
    s_b = between.T @ between / (n - 1)  # (D, D)
    within = (z - means[:, None, :]).reshape(n * v, d)  # (N V, D)
    s_w = within.T @ within / (n * (v - 1))  # (D, D)
    s_w.diagonal().add_(delta)
    return s_b, s_w


def lidar_eigenvalues(z: Any, *, delta: float = defaults.LIDAR_DELTA) -> Tensor:
    """Eigenvalues of ``S_w^(-1/2) S_b S_w^(-1/2)``, descending, clamped at 0. Shape: z (N, V, D) -> (D,)."""
    s_b, s_w = lidar_matrices(z, delta=delta)
    w, u = torch.linalg.eigh(s_w)  # S_w = U diag(w) U^T
    if not bool((w > 0).all()):
        raise ConfigError("LiDAR: the within-class scatter is singular; use delta > 0")
    inv_sqrt = (u * w.rsqrt()) @ u.T  # (D, D)
    m = inv_sqrt @ s_b @ inv_sqrt
    lam = torch.linalg.eigvalsh(0.5 * (m + m.T))  # symmetrise away rounding
    return lam.flip(0).clamp_min(0).cpu()


def lidar(z: Any, *, delta: float = defaults.LIDAR_DELTA, eps: float = defaults.LIDAR_EPS) -> float:
    """LiDAR of grouped view embeddings: the effective rank of the LDA matrix (module doc for the formula).

    Args:
        z: embeddings of V augmented views of each of N clean samples (numpy array or tensor), views of one
            sample grouped in one row.
        delta: ridge on the within-class scatter (1e-4).
        eps: added to the L1-normalised eigenvalues (1e-7).

    Returns:
        LiDAR, in about ``[1, min(D, N - 1)]``; 1.0 when every eigenvalue is 0 (no between-sample spread).

    Shape:
        z: (N, V, D).
    """
    lam = lidar_eigenvalues(z, delta=delta)
    total = lam.sum()
    if total == 0:
        return 1.0
    p = lam / total + eps
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))  # 0 log 0 = 0 (exact zeros with eps = 0)
