"""RankMe: the effective rank of an embedding matrix, a label-free proxy for representation quality.

Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the Downstream Performance of Pretrained
Self-Supervised Representations by Their Rank", ICML 2023, https://arxiv.org/abs/2210.02885, Eq. (1)::

    sigma = singular values of Z (N x D, no centring)
    p_k = sigma_k / ||sigma||_1 + eps
    RankMe(Z) = exp(-sum_k p_k log p_k)

It lies in about [1, min(N, D)]. The paper computes it on the projector output of about 25,600 clean
(eval-transform) source images and uses it only to compare runs of the *same* method; choosing the samples and
the matrix (projector or backbone) is the caller's job, and the caller should name the variant it reports.

Written by hand because it is three lines on top of the spectrum; no dependency we use ships it. The
singular values come from `ssl_toolkit.eval.spectrum` (float64 Gram + ``eigvalsh`` when N >= D, ``svdvals``
otherwise); they equal a float64 SVD's to about 1e-13 in RankMe, collapsed matrices included.
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.spectrum import singular_values as _spectrum


def singular_values(z: Any) -> torch.Tensor:
    """Singular values of ``z`` in float64, descending, without centring (the spectrum RankMe summarises).

    Args:
        z: the embedding matrix, one row per sample (numpy array or tensor).

    Returns:
        The ``min(N, D)`` singular values, float64, on the CPU.

    Shape:
        z: (N, D); returns (min(N, D),).
    """
    return _spectrum(z, center=False, what="RankMe")


def rankme(z: Any, eps: float = defaults.RANKME_EPS) -> float:
    """RankMe of ``z``: ``exp(entropy(p))`` with ``p = sigma / ||sigma||_1 + eps``, no centring, float64.

    An all-zero matrix (a fully collapsed embedding) has no spectrum to normalise and returns 1.0.

    Args:
        z: the embedding matrix, one row per sample (projector output by default in the paper's protocol);
            a numpy array or a tensor.
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
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))  # 0 log 0 = 0 (exact zeros with eps = 0)
