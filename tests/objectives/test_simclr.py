"""SimCLR against the reference values computed with lightly / SupCon (../shared/reference)."""

from __future__ import annotations

import pytest
import torch

from ssl_toolkit.objectives import StepContext, build_objective
from ssl_toolkit.objectives.simclr import multiview_ntxent
from tests.conftest import reference

TOL = 1e-5


def _case(name: str) -> dict:
    return reference("objectives_reference.json")["cases"][name]


def _inputs(case: dict) -> list[torch.Tensor]:
    names = [n for n, _ in case["inputs_order"]]
    return [torch.tensor(case["inputs"][n], dtype=torch.float32, requires_grad=True) for n in names], names


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


def _global_positive_loss_loop(z: list[torch.Tensor], tau: float, n_global: int) -> torch.Tensor:
    """Multi-crop SupCon L_out written per anchor in float64: positives are the other *global* views."""
    u = [torch.nn.functional.normalize(v.double(), dim=1) for v in z]
    n_views, batch = len(u), u[0].shape[0]
    everything = [(v, b) for v in range(n_views) for b in range(batch)]
    losses = []
    for v, b in everything:
        logits = {(w, c): (u[v][b] @ u[w][c]) / tau for w, c in everything if (w, c) != (v, b)}
        log_denominator = torch.logsumexp(torch.stack(list(logits.values())), dim=0)
        positives = [logits[(w, b)] - log_denominator for w in range(n_global) if w != v]
        losses.append(-torch.stack(positives).mean())
    return torch.stack(losses).mean()


def test_global_positives_pull_local_crops_to_global_views_only() -> None:
    g = torch.Generator().manual_seed(4)
    z = [torch.randn(5, 6, generator=g) for _ in range(5)]  # 2 global + 3 local views
    loss = build_objective("simclr", temperature=0.2)(z, StepContext(n_global=2)).loss
    assert loss.item() == pytest.approx(_global_positive_loss_loop(z, 0.2, 2).item(), abs=1e-5)
    every_view = build_objective("simclr", temperature=0.2, positives="all")(z, StepContext(n_global=2)).loss
    assert every_view.item() == pytest.approx(_global_positive_loss_loop(z, 0.2, 5).item(), abs=1e-5)
    with pytest.raises(ValueError, match="positives='all'"):
        build_objective("simclr")(z, StepContext(n_global=1))


def test_multiview_form_reduces_to_ntxent_at_two_views() -> None:
    g = torch.Generator().manual_seed(3)
    z = [torch.randn(16, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    lightly_loss = build_objective("simclr", temperature=0.3)(z).loss
    assert torch.allclose(multiview_ntxent(z, 0.3), lightly_loss.double(), atol=1e-6)


def test_float32_under_half_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(8, 16, generator=g).bfloat16() for _ in range(3)]
    out = build_objective("simclr")(z)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


@pytest.mark.parametrize("n_views", [2, 3])
def test_loss_is_float32_maths_under_autocast(n_views: int) -> None:
    # bf16 logits at τ = 0.1 would move the loss by ~1e-2; the objective must switch autocast off
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(64, 32, generator=g) for _ in range(n_views)]
    objective = build_objective("simclr", temperature=0.1)
    expected = objective(z).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = objective(z).loss
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_rejects_single_view() -> None:
    with pytest.raises(ValueError, match="at least 2 views"):
        build_objective("simclr")([torch.randn(4, 3)])
