"""alpha-ReQ: the power-law decay coefficient of the embedding covariance's eigenspectrum, label-free.

Agrawal, Mondal, Ghosh, Richards, "alpha-ReQ: Assessing Representation Quality in Self-Supervised Learning by
measuring eigenspectrum decay", NeurIPS 2022 (arXiv 2202.05808,
https://proceedings.neurips.cc/paper_files/paper/2022/hash/70596d70542c51c8d9b4e423f4bf2736-Abstract-Conference.html)::

    lambda_1 >= lambda_2 >= ... : eigenvalues of Cov(Z) (column-centred embeddings)
    lambda_i ~ c * i^(-alpha)          fitted by least squares on log(lambda_i) = log c - alpha * log(i)
                                       over the ranks i in [11, 100], each point weighted 1/i

The paper reports that good downstream linear performance sits in a band of alpha around 1: alpha much
below 1 means a flat (noise-like, white) spectrum, much above 1 a fast decay (towards collapse). Like
RankMe it is a within-method comparison tool.

Fit details, as the authors' code does them (reptrix, https://github.com/arnab39/reptrix, ``alpha.py``,
written by co-author A. K. Mondal; itself taken from Stringer et al. 2019's code): weighted least squares
in log-log with weights ``1/i`` (the ranks are denser at the top of a log axis), fit range ranks 11..100
(reptrix's ``np.arange(10, 100)`` on 0-based indices; an older reptrix version started at rank 6). Only the
abstract of the paper was readable from here, so the range and weights follow that code. Ranks beyond the
available spectrum are dropped, and so are eigenvalues that are exactly 0 (below float64 resolution, see
`ssl_toolkit.eval.spectrum`): log(0) has no place in the fit. With fewer than 3 usable ranks the result is
NaN (not defined: a matrix narrower than 13 dimensions, or one collapsed to fewer than 13 directions).

Written by hand because reptrix pulls in scikit-learn and matplotlib and fits on a full PCA; the fit is a
2 x 2 weighted least-squares solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.arrays import as_tensor
from ssl_toolkit.eval.spectrum import singular_values


def covariance_eigenvalues(z: Any) -> Tensor:
    """Eigenvalues of the sample covariance of ``z`` (rows = samples, centred, divided by N - 1), descending.

    Shape:
        z: (N, D) with N >= 2; returns (min(N, D),) float64 on the CPU.
    """
    z = as_tensor(z, "alpha-ReQ embedding matrix", ndim=2)
    if z.shape[0] < 2:
        raise ConfigError(f"alpha-ReQ needs at least 2 samples, got shape {tuple(z.shape)}")
    sigma = singular_values(z, center=True, what="alpha-ReQ")
    return sigma.square() / (z.shape[0] - 1)


def power_law_fit(
    eigenvalues: Any, *, fit_range: Sequence[int] = defaults.ALPHA_REQ_FIT_RANGE, weighted: bool = True
) -> tuple[float, float]:
    """Fit ``lambda_i = c * i^(-alpha)`` by (weighted) least squares in log-log over ranks ``fit_range``.

    Args:
        eigenvalues: the spectrum, descending (rank 1 first).
        fit_range: first and last 1-based rank of the fit, both included.
        weighted: weight each point ``1/i`` (the authors' code) instead of uniformly.

    Returns:
        ``(alpha, log c)``; ``(nan, nan)`` when fewer than 3 ranks with a positive eigenvalue are in range.

    Shape:
        eigenvalues: (K,).
    """
    lam = as_tensor(eigenvalues, "eigenvalues", ndim=1).to(torch.float64).cpu()
    first, last = (int(r) for r in fit_range)
    if not 1 <= first < last:
        raise ConfigError(f"alpha-ReQ fit_range must be two 1-based ranks first < last, got {tuple(fit_range)}")
    ranks = torch.arange(first, max(first, min(last, lam.numel()) + 1), dtype=torch.float64)  # (M,), maybe 0
    values = lam[first - 1 : first - 1 + ranks.numel()]
    keep = values > 0
    if int(keep.sum()) < 3:
        return math.nan, math.nan
    x, y = ranks[keep].log(), values[keep].log()
    w = 1.0 / ranks[keep] if weighted else torch.ones_like(x)
    design = torch.stack([-x, torch.ones_like(x)], dim=1)  # (M, 2): y = alpha * (-log i) + log c
    normal = design.T @ (design * w[:, None])  # (2, 2)
    alpha, log_c = torch.linalg.solve(normal, design.T @ (w * y)).tolist()
    return alpha, log_c


def alpha_req(z: Any, *, fit_range: Sequence[int] = defaults.ALPHA_REQ_FIT_RANGE, weighted: bool = True) -> float:
    """alpha-ReQ of ``z``: the decay coefficient of its covariance eigenspectrum (module doc for the fit).

    Args:
        z: the embedding matrix, one row per sample (numpy array or tensor); column-centred here.
        fit_range: first and last 1-based eigenvalue rank of the fit (default 11..100).
        weighted: weights ``1/i`` in the least-squares fit, as the authors' code.

    Returns:
        alpha (about 1 for good representations in the paper's experiments), or NaN when undefined.

    Shape:
        z: (N, D).
    """
    return power_law_fit(covariance_eigenvalues(z), fit_range=fit_range, weighted=weighted)[0]
