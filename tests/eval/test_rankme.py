"""RankMe against the float64 reference cases in views_eval_reference.json, regenerated from recipes."""

from __future__ import annotations

import pytest
import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import rankme
from ssl_toolkit.eval.rankme import singular_values
from tests.conftest import reference


def _reference() -> dict:
    return reference("views_eval_reference.json")["rankme"]


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _regenerate(name: str) -> torch.Tensor:
    """The recipes of ``rankme.recipes``, one seeded float64 generator per case."""
    seeds = {
        "gauss_25600x128": 0,
        "gauss_2048x256": 1,
        "lowrank16_2048x128": 2,
        "rank1_2048x128": 3,
        "orthonormal_cols_1024x64": 4,
        "powerlaw_sv_1_over_k_2048x128": 5,
        "gauss_plus_mean5_4096x128_uncentered": 6,
    }
    g = torch.Generator().manual_seed(seeds[name])
    if name == "gauss_25600x128":
        return _randn(g, 25600, 128)
    if name == "gauss_2048x256":
        return _randn(g, 2048, 256)
    if name == "lowrank16_2048x128":
        return _randn(g, 2048, 16) @ _randn(g, 16, 128)
    if name == "rank1_2048x128":
        return _randn(g, 2048, 1) @ _randn(g, 1, 128)
    if name == "orthonormal_cols_1024x64":
        return torch.linalg.qr(_randn(g, 1024, 64))[0]
    if name == "powerlaw_sv_1_over_k_2048x128":
        u = torch.linalg.qr(_randn(g, 2048, 128))[0]
        v = torch.linalg.qr(_randn(g, 128, 128))[0]
        return u @ torch.diag(1.0 / torch.arange(1, 129, dtype=torch.float64)) @ v.T
    return _randn(g, 4096, 128) + 5.0


def _check_checksum(z: torch.Tensor, checksum: dict) -> None:
    assert list(z.shape) == checksum["shape"]
    assert z.sum().item() == pytest.approx(checksum["sum"], rel=1e-8, abs=1e-8)
    assert (z**2).sum().item() == pytest.approx(checksum["sum_sq"], rel=1e-8)
    assert z.flatten()[:3].tolist() == pytest.approx(checksum["first3"], rel=1e-8, abs=1e-12)


CASES = [
    "gauss_25600x128",
    "gauss_2048x256",
    "lowrank16_2048x128",
    "rank1_2048x128",
    "orthonormal_cols_1024x64",
    "powerlaw_sv_1_over_k_2048x128",
    "gauss_plus_mean5_4096x128_uncentered",
]


@pytest.mark.parametrize("name", CASES)
def test_rankme_matches_reference(name: str) -> None:
    ref = _reference()
    assert set(ref["cases"]) == set(CASES), "the reference gained or lost cases; update CASES and _regenerate"
    case = ref["cases"][name]
    z = _regenerate(name)
    _check_checksum(z, case["input_checksum"])
    assert rankme(z) == pytest.approx(case["rankme_eps1e-7_float64"], rel=1e-6)
    assert rankme(z, eps=0.0) == pytest.approx(case["rankme_eps0_float64"], rel=1e-6)
    # float32 input is cast to float64 before the SVD, so it lands within float32 rounding of the reference
    assert rankme(z.float()) == pytest.approx(case["rankme_eps1e-7_float64"], rel=1e-4)


def test_no_centring() -> None:
    case = _reference()["cases"]["gauss_plus_mean5_4096x128_uncentered"]
    z = _regenerate("gauss_plus_mean5_4096x128_uncentered")
    assert rankme(z) == pytest.approx(case["rankme_eps1e-7_float64"], rel=1e-6)  # 52.5: the mean dominates
    centred = rankme(z - z.mean(dim=0))
    assert centred == pytest.approx(case["rankme_after_centering_float64"], rel=1e-6)  # 127.5
    assert centred > 2 * rankme(z)


def test_spectrum_and_edge_cases() -> None:
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    sigma = singular_values(z)
    assert sigma.dtype == torch.float64 and sigma.shape == (8,)
    assert torch.all(sigma[:-1] >= sigma[1:])
    assert rankme(torch.zeros(10, 4)) == 1.0  # fully collapsed
    assert rankme(z[:3]) <= 3.0 + 1e-3  # bounded by min(N, D)


@pytest.mark.parametrize("bad", [torch.randn(5), torch.randn(2, 3, 4), torch.empty(0, 4)])
def test_rejects_bad_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="RankMe"):
        rankme(bad)


def test_rejects_non_finite() -> None:
    z = torch.randn(4, 3)
    z[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        rankme(z)


@pytest.mark.parametrize("name", CASES)
def test_gram_route_equals_a_float64_svd(name: str) -> None:
    """The Gram + eigvalsh route (N >= D) against torch's float64 SVD, collapsed matrices included."""
    z = _regenerate(name)
    sigma = torch.linalg.svdvals(z)
    p = sigma / sigma.sum() + 1e-7
    via_svd = float(torch.exp(-(p * p.log()).sum()))
    assert rankme(z) == pytest.approx(via_svd, rel=1e-12, abs=0)


def test_gram_is_accumulated_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssl_toolkit.eval import spectrum

    z = _regenerate("lowrank16_2048x128").float()
    whole = singular_values(z)
    monkeypatch.setattr(spectrum, "_CHUNK_ELEMENTS", 128 * 100)  # 100-row chunks, last one partial
    chunked = singular_values(z)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-9 * float(whole[0]))


def test_wide_matrices_take_the_svd_route() -> None:
    z = torch.randn(40, 300, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sigma = singular_values(z)
    assert sigma.shape == (40,)
    torch.testing.assert_close(sigma, torch.linalg.svdvals(z), rtol=1e-12, atol=0)


def test_numpy_input() -> None:
    import numpy as np

    z = _regenerate("gauss_2048x256")
    assert rankme(z.numpy()) == rankme(z)
    assert rankme(np.asarray(z.float().numpy())) == pytest.approx(rankme(z), rel=1e-4)
