"""RankMe: the effective rank of an embedding matrix, a label-free proxy for representation quality.

Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the Downstream Performance of Pretrained
Self-Supervised Representations by Their Rank", ICML 2023, https://arxiv.org/abs/2210.02885, Eq. (1)::

    sigma = singular values of Z (N x D, no centring)
    p_k = sigma_k / ||sigma||_1 + eps
    RankMe(Z) = exp(-sum_k p_k log p_k)

It lies in about [1, min(N, D)]. The paper computes it on the projector output of about 25,600 clean
(eval-transform) source images and uses it only to compare runs of the *same* method; choosing the samples and
the matrix (projector or backbone) is the caller's job, and the caller should name the variant it reports.

Written by hand because it is three lines on top of ``torch.linalg.svdvals``; no dependency we use ships it.
The SVD runs in float64: a float32 SVD agrees to about 1e-4, and float64 makes the value reproducible to the
digits the reference tests check.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError


def singular_values(z: Tensor) -> Tensor:
    """Singular values of ``z`` in float64, descending, without centring (the spectrum RankMe summarises).

    Args:
        z: the embedding matrix, one row per sample.

    Returns:
        The ``min(N, D)`` singular values, float64, on the CPU.

    Shape:
        z: (N, D); returns (min(N, D),).
    """
    if z.ndim != 2:
        raise ConfigError(f"RankMe needs a 2-D (N, D) embedding matrix, got shape {tuple(z.shape)}")
    if z.numel() == 0:
        raise ConfigError(f"RankMe needs a non-empty embedding matrix, got shape {tuple(z.shape)}")
    z = z.detach()
    if z.device.type == "mps":  # MPS has no float64
        z = z.cpu()
    z = z.to(torch.float64)
    if not torch.isfinite(z).all():
        raise ConfigError("RankMe input contains NaN or inf")
    return torch.linalg.svdvals(z).cpu()  # (min(N, D),)


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe of ``z``: ``exp(entropy(p))`` with ``p = sigma / ||sigma||_1 + eps``, no centring, float64.

    An all-zero matrix (a fully collapsed embedding) has no spectrum to normalise and returns 1.0.

    Args:
        z: the embedding matrix, one row per sample (projector output by default in the paper's protocol).
        eps: added to every normalised singular value, as in the paper; 1e-7 is the common choice.

    Returns:
        The effective rank, a float in about ``[1, min(N, D)]``.

    Shape:
        z: (N, D).
    """
    sigma = singular_values(z)  # (min(N, D),)
    total = sigma.sum()
    if total == 0:
        return 1.0
    p = sigma / total + eps
    return float(torch.exp(-(p * p.log()).sum()))
