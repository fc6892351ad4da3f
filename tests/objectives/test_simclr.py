"""SimCLR against the reference values (lightly / SupCon, tests/reference), lightly's `NTXentLoss` wherever it
applies, and per-anchor float64 loops elsewhere (local crops, sample weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ssl_toolkit.objectives import StepContext, build_objective
from tests.conftest import reference

TOL = 1e-5


def _case(name: str) -> dict:
    return reference("objectives_reference.json")["cases"][name]


def _inputs(case: dict) -> tuple[list[torch.Tensor], list[str]]:
    names = [n for n, _ in case["inputs_order"]]
    return [torch.tensor(case["inputs"][n], dtype=torch.float32, requires_grad=True) for n in names], names


def _randn(n_views: int, batch: int = 16, dim: int = 8, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=torch.float64).requires_grad_() for _ in range(n_views)]


@pytest.mark.parametrize("name", ["ntxent_small_tau0.5", "ntxent_small_tau0.1"])
def test_two_view_ntxent_matches_reference(name: str) -> None:
    case = _case(name)
    z, names = _inputs(case)
    loss = build_objective({"name": "simclr", "temperature": case["params"]["temperature"]})(z).loss
    loss.backward()
    assert abs(loss.item() - case["loss"]) < TOL
    for t, n in zip(z, names):
        torch.testing.assert_close(t.grad, torch.tensor(case["grad"][n]), atol=TOL, rtol=0)


def test_multiview_supcon_l_out_matches_reference() -> None:
    case = _case("ntxent_multiview_small_V4_tau0.1")
    ref = case["variants"]["supcon_L_out"]
    for positives, n_global in (("global", 4), ("all", 2)):  # four global views; or all views positives
        z, names = _inputs(case)
        objective = build_objective("simclr", temperature=case["params"]["temperature"], positives=positives)
        loss = objective(z, StepContext(n_global=n_global)).loss
        loss.backward()
        assert abs(loss.item() - ref["loss"]) < TOL
        for t, n in zip(z, names):
            torch.testing.assert_close(t.grad, torch.tensor(ref["grad"][n]), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    ("temperature", "progress", "tau"),
    [
        (0.3, 0.0, 0.3),
        ({"kind": "cosine", "start": 0.5, "end": 0.1}, 1.0, 0.1),
        ({"kind": "learnable", "init": 0.2, "min": 0.05, "max": 1}, 0.0, 0.2),
    ],
)
@pytest.mark.parametrize("gather_distributed", [True, False])
def test_two_views_equal_lightly_ntxent(temperature, progress: float, tau: float, gather_distributed: bool) -> None:
    """lightly's loss is the reference wherever it applies: two views, a float τ (ours constant, scheduled or
    learnable at that value), one process."""
    z = _randn(2)  # float64: lightly computes in it, the objective in float32
    out = build_objective("simclr", temperature=temperature, gather_distributed=gather_distributed)(
        z, StepContext(progress=progress)
    )
    out.loss.backward()
    z_ref = [v.detach().clone().requires_grad_() for v in z]
    expected = NTXentLoss(temperature=tau, gather_distributed=gather_distributed)(*z_ref)
    expected.backward()
    assert abs(out.loss.item() - expected.item()) < 1e-6
    for got, want in zip(z, z_ref):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-7, rtol=1e-5)


def _per_anchor_loop(z: list[torch.Tensor], tau: float, n_positive_views: int) -> torch.Tensor:
    """Multi-crop SupCon L_out of each anchor (view-major), in float64: its positives are the same sample's
    other views among the first ``n_positive_views``; every other embedding is in the denominator."""
    u = [F.normalize(v.double(), dim=1) for v in z]
    n_views, batch = len(u), u[0].shape[0]
    everything = [(v, b) for v in range(n_views) for b in range(batch)]
    losses = []
    for v, b in everything:
        logits = {(w, c): (u[v][b] @ u[w][c]) / tau for w, c in everything if (w, c) != (v, b)}
        log_denominator = torch.logsumexp(torch.stack(list(logits.values())), dim=0)
        positives = [logits[(w, b)] - log_denominator for w in range(n_positive_views) if w != v]
        losses.append(-torch.stack(positives).mean())
    return torch.stack(losses)


def test_global_positives_pull_local_crops_to_global_views_only() -> None:
    z = [v.detach().float() for v in _randn(5, batch=5, dim=6, seed=4)]  # 2 global + 3 local views
    loss = build_objective("simclr", temperature=0.2)(z, StepContext(n_global=2)).loss
    assert loss.item() == pytest.approx(_per_anchor_loop(z, 0.2, 2).mean().item(), abs=1e-5)
    every_view = build_objective("simclr", temperature=0.2, positives="all")(z, StepContext(n_global=2)).loss
    assert every_view.item() == pytest.approx(_per_anchor_loop(z, 0.2, 5).mean().item(), abs=1e-5)
    with pytest.raises(ValueError, match="positives='all'"):
        build_objective("simclr")(z, StepContext(n_global=1))


@pytest.mark.parametrize("n_views", [2, 4])
def test_sample_weights_scale_each_anchor_term(n_views: int) -> None:
    """GenView's quality weights (mean 1, no gradient) weight the per-anchor loop's terms, loss and gradients."""
    z = _randn(n_views, batch=6)
    g = torch.Generator().manual_seed(3)
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    w = w * 6 / w.sum()
    objective = build_objective({"name": "simclr", "temperature": 0.2, "positives": "all"})
    loss = objective(z, StepContext(n_global=2, extras={"sample_weights": w})).loss
    loss.backward()
    z_ref = [v.detach().clone().requires_grad_() for v in z]
    expected = (_per_anchor_loop(z_ref, 0.2, n_views) * w.repeat(n_views)).mean()
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-6
    for got, want in zip(z, z_ref):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-7)
    ones = objective(z, StepContext(n_global=2, extras={"sample_weights": torch.ones(6)})).loss
    assert torch.equal(ones, objective(z, StepContext(n_global=2)).loss)
