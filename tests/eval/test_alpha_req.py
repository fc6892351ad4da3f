"""alpha-ReQ against independent computations: numpy.polyfit, the authors' (reptrix) fit, an exact power law."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import alpha_req, covariance_eigenvalues, power_law_fit


def _with_spectrum(eigenvalues: np.ndarray, n: int, seed: int) -> np.ndarray:
    """An (n, D) matrix whose sample covariance (centred, / (n - 1)) has exactly these eigenvalues."""
    rng = np.random.default_rng(seed)
    d = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, d + 1)))
    q = q - q.mean(axis=0)  # orthonormal columns orthogonal to the ones vector: already centred
    q, _ = np.linalg.qr(q[:, :d])
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return np.sqrt(n - 1) * q @ np.diag(np.sqrt(eigenvalues)) @ v.T + 3.0  # + a mean, which centring removes


def _numpy_spectrum(z: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False)))[::-1]


def _polyfit_alpha(eigenvalues: np.ndarray, first: int = 11, last: int = 100, weighted: bool = True) -> float:
    ranks = np.arange(first, min(last, len(eigenvalues)) + 1)
    values = eigenvalues[ranks - 1]
    # polyfit's w multiplies the residual; squared-residual weights 1/i need w = 1/sqrt(i)
    w = 1.0 / np.sqrt(ranks) if weighted else None
    slope, _ = np.polyfit(np.log(ranks), np.log(values), 1, w=w)
    return -slope


def _reptrix_alpha(z: np.ndarray, fit_range: np.ndarray) -> float:
    """reptrix (arnab39/reptrix, alpha.py get_alpha + get_powerlaw), re-derived: explained-variance ratios from
    a PCA of the centred data, normal equations with weights 1 / rank over 0-based indices ``fit_range``."""
    centred = z - z.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    eigen = sv**2 / (sv**2).sum()
    y = np.log(np.abs(eigen))[fit_range][:, None]
    ranks = (fit_range + 1).astype(float)
    x = np.stack([-np.log(ranks), np.ones_like(ranks)], axis=1)
    w = (1.0 / ranks)[:, None]
    return float(np.linalg.solve(x.T @ (x * w), (w * x).T @ y)[0, 0])


@pytest.mark.parametrize("alpha", [0.6, 1.0, 1.7])
def test_exact_power_law_is_recovered(alpha: float) -> None:
    lam = np.arange(1, 129, dtype=np.float64) ** -alpha
    z = _with_spectrum(lam, 1000, seed=int(10 * alpha))
    np.testing.assert_allclose(covariance_eigenvalues(z).numpy(), lam, rtol=1e-8)
    assert alpha_req(z) == pytest.approx(alpha, abs=1e-8)
    assert alpha_req(torch.from_numpy(z).float()) == pytest.approx(alpha, abs=2e-3)  # float32 input


def test_matches_polyfit_and_the_authors_fit_on_a_noisy_spectrum() -> None:
    rng = np.random.default_rng(0)
    lam = np.arange(1, 257, dtype=np.float64) ** -1.2 * np.exp(0.3 * rng.standard_normal(256))  # not sorted
    z = rng.standard_normal((3000, 256)) @ np.diag(np.sqrt(lam)) @ np.linalg.qr(rng.standard_normal((256, 256)))[0]
    spectrum = _numpy_spectrum(z)
    np.testing.assert_allclose(covariance_eigenvalues(z).numpy(), spectrum, rtol=1e-9)
    ours = alpha_req(z)
    assert ours == pytest.approx(_polyfit_alpha(spectrum), rel=1e-9)
    assert ours == pytest.approx(_reptrix_alpha(z, np.arange(10, 100)), rel=1e-9)
    unweighted = alpha_req(z, weighted=False)
    assert unweighted == pytest.approx(_polyfit_alpha(spectrum, weighted=False), rel=1e-9)
    assert abs(unweighted - ours) > 1e-3  # the weights matter, so the test above checks them
    assert alpha_req(z, fit_range=(6, 100)) == pytest.approx(_reptrix_alpha(z, np.arange(5, 100)), rel=1e-9)


def test_short_or_collapsed_spectra() -> None:
    rng = np.random.default_rng(1)
    narrow = rng.standard_normal((500, 64))  # fit over ranks 11..64
    assert alpha_req(narrow) == pytest.approx(_polyfit_alpha(_numpy_spectrum(narrow), 11, 64), rel=1e-9)
    assert math.isnan(alpha_req(rng.standard_normal((500, 12))))  # ranks 11..12: fewer than 3 points
    low_rank = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 128))
    assert math.isnan(alpha_req(low_rank))  # 5 directions: exact zeros from rank 6 on
    assert math.isnan(power_law_fit(torch.zeros(200))[0])


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="2-D"):
        alpha_req(np.zeros(10))
    with pytest.raises(ConfigError, match="at least 2 samples"):
        alpha_req(np.zeros((1, 20)))
    with pytest.raises(ConfigError, match="fit_range"):
        power_law_fit(np.ones(50), fit_range=(20, 10))
