"""LiDAR against independent computations: explicit per-sample scatters with a generalised eigensolve in numpy,
stable-pretraining's formula, and LDA's invariance to invertible linear maps of the features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import lidar
from ssl_toolkit.eval.lidar import lidar_eigenvalues


def _views(n: int = 60, v: int = 6, d: int = 12, rank: int = 5, noise: float = 0.4, seed: int = 0) -> np.ndarray:
    """n samples whose means span ``rank`` directions, v noisy views each, in d dimensions: (n, v, d)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    scale = np.linspace(0.5, 2.0, d)  # anisotropic view noise
    return means[:, None, :] + noise * scale * rng.standard_normal((n, v, d))


def _numpy_lidar(z: np.ndarray, delta: float, eps: float) -> float:
    """The paper's definition with loops over samples and a generalised eigenproblem (no inverse square root)."""
    n, v, d = z.shape
    mu = np.stack([z[i].mean(axis=0) for i in range(n)])
    grand = mu.mean(axis=0)
    s_b = sum(np.outer(mu[i] - grand, mu[i] - grand) for i in range(n)) / (n - 1)
    s_w = sum(np.outer(z[i, j] - mu[i], z[i, j] - mu[i]) for i in range(n) for j in range(v)) / (n * (v - 1))
    s_w = s_w + delta * np.eye(d)
    lam = np.clip(np.linalg.eigvals(np.linalg.solve(s_w, s_b)).real, 0, None)  # S_b x = lambda S_w x
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def _stable_pretraining_lidar(z: torch.Tensor, delta: float = 1e-4, epsilon: float = 1e-8) -> float:
    """stable-pretraining's LiDAR callback formula (callbacks/lidar.py), re-derived: unbiased scatters, S_w^-1/2
    by eigh, p_i = (lambda_i + eps) / sum_j (lambda_j + eps)."""
    n, v, d = z.shape
    mu = z.mean(dim=1)
    c = mu - mu.mean(dim=0)
    s_b = c.T @ c / (n - 1)
    w = (z - mu[:, None]).reshape(-1, d)
    s_w = w.T @ w / (n * (v - 1)) + delta * torch.eye(d, dtype=z.dtype)
    ev, vec = torch.linalg.eigh(s_w)
    inv_sqrt = (vec * ev.clamp(min=epsilon).rsqrt()) @ vec.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ s_b @ inv_sqrt).clamp(min=0) + epsilon
    p = lam / lam.sum()
    return float(torch.exp(-(p * p.log()).sum()))


@pytest.mark.parametrize(("delta", "rank"), [(1e-4, 5), (0.0, 5), (0.05, 12)])
def test_matches_the_generalised_eigenproblem(delta: float, rank: int) -> None:
    z = _views(rank=rank, seed=rank)
    assert lidar(z, delta=delta, eps=1e-7) == pytest.approx(_numpy_lidar(z, delta, 1e-7), rel=1e-9)
    assert lidar(torch.from_numpy(z).float(), delta=delta) == pytest.approx(_numpy_lidar(z, delta, 1e-7), rel=1e-4)


def test_matches_stable_pretraining_to_its_epsilon() -> None:
    z = torch.from_numpy(_views(n=200, v=8, d=32, rank=10, seed=3))
    # the same formula without the entropy epsilon ...
    assert lidar(z, eps=0.0) == pytest.approx(_stable_pretraining_lidar(z, epsilon=0.0), rel=1e-10)
    # ... and with each library's own: 1e-8 before vs 1e-7 after normalising moves it by ~2e-5 here
    assert lidar(z) == pytest.approx(_stable_pretraining_lidar(z), rel=1e-4)


def test_invariant_to_invertible_linear_maps_without_ridge() -> None:
    z = _views(seed=4)
    a = np.random.default_rng(5).standard_normal((12, 12)) + 3 * np.eye(12)  # invertible mixing
    assert lidar(z @ a, delta=0.0) == pytest.approx(lidar(z, delta=0.0), rel=1e-8)
    assert lidar(z @ a) != pytest.approx(lidar(z @ (100 * a)), rel=1e-3)  # the fixed ridge is not scale-free


def test_counts_the_directions_that_separate_samples() -> None:
    # means spread equally along 4 axes, isotropic view noise: about 4 equal eigenvalues
    rng = np.random.default_rng(6)
    means = np.zeros((400, 16))
    means[:, :4] = rng.standard_normal((400, 4))
    z = means[:, None, :] + 0.1 * rng.standard_normal((400, 10, 16))
    assert lidar(z) == pytest.approx(4.0, rel=0.1)
    assert lidar_eigenvalues(z)[4:].max() < 0.05 * lidar_eigenvalues(z)[:4].min()


def test_views_must_be_grouped_by_sample() -> None:
    z = _views(n=100, v=8, d=16, rank=4, noise=0.2, seed=7)
    mixed = z.reshape(-1, 16)[np.random.default_rng(8).permutation(800)].reshape(100, 8, 16)
    assert lidar(mixed) > lidar(z) + 3  # random groups: the between-group scatter is noise in every direction


def test_degenerate_and_bad_input() -> None:
    assert lidar(np.ones((5, 3, 4))) == 1.0  # every view identical: no between-sample spread
    with pytest.raises(ConfigError, match="3-D"):
        lidar(np.zeros((10, 4)))
    with pytest.raises(ConfigError, match=">= 2 samples with >= 2 views"):
        lidar(np.zeros((10, 1, 4)))
    with pytest.raises(ConfigError, match="singular"):
        lidar(np.ones((5, 3, 4)) + np.arange(5)[:, None, None], delta=0.0)
    with pytest.raises(ConfigError, match="NaN"):
        lidar(np.full((3, 2, 2), np.nan))
