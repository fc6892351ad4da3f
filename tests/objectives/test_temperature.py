"""Temperature component: constant, cosine schedule, learnable (log-parametrised, clamped), and SimCLR with each."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective
from ssl_toolkit.objectives.simclr import multiview_ntxent
from ssl_toolkit.objectives.temperature import build_temperature


def test_constant_and_cosine_values() -> None:
    assert build_temperature(0.2)(0.7).item() == pytest.approx(0.2)
    cosine = build_temperature({"kind": "cosine", "start": 0.5, "end": 0.1})
    assert cosine(0.0).item() == pytest.approx(0.5)
    assert cosine(1.0).item() == pytest.approx(0.1)
    # half-way the cosine is at the mean; a quarter of the way, 0.1 + 0.4 * (1 + cos(pi/4)) / 2
    assert cosine(0.5).item() == pytest.approx(0.3)
    assert cosine(0.25).item() == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi / 4)) / 2)


def test_learnable_is_a_clamped_log_parameter_with_the_right_gradient() -> None:
    tau = build_temperature({"kind": "learnable", "init": 0.2, "min": 0.05, "max": 1.0})
    assert [name for name, _ in tau.named_parameters()] == ["log_tau"]
    value = tau()
    value.backward()
    assert value.item() == pytest.approx(0.2)
    assert tau.log_tau.grad.item() == pytest.approx(0.2)  # d exp(θ) / dθ = τ
    with torch.no_grad():
        tau.log_tau.fill_(math.log(5.0))
    assert tau().item() == pytest.approx(1.0)  # projected onto max
    assert tau.log_tau.item() == pytest.approx(0.0)  # the parameter itself, so momentum cannot carry it away


def test_a_learnable_tau_at_a_bound_comes_back_when_the_loss_prefers_inside() -> None:
    """SGD with momentum first pushes τ to its max (the loss prefers a large τ), then the loss changes to
    prefer τ 0.3: τ must leave the bound (with output clamping alone its gradient is zero there for good)."""
    tau = build_temperature({"kind": "learnable", "init": 0.5, "min": 0.05, "max": 1.0})
    optimizer = torch.optim.SGD(tau.parameters(), lr=0.5, momentum=0.9)
    for target in [5.0] * 30 + [0.3] * 200:
        optimizer.zero_grad()
        ((tau() - target) ** 2).backward()
        optimizer.step()
        if target == 5.0:
            at_max = tau().item()
    assert at_max == pytest.approx(1.0)
    assert tau().item() == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize(
    "spec, match",
    [
        (0, "number > 0"),
        ({"kind": "linear"}, "accepted"),
        ({"kind": "cosine", "start": 0.5}, "missing keys \\['end'\\]"),
        ({"kind": "learnable", "init": 2.0, "min": 0.05, "max": 1.0}, "min <= init <= max"),
    ],
)
def test_bad_specs_are_config_errors_through_the_registry(spec, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build_objective({"name": "simclr", "temperature": spec})


def test_simclr_follows_the_schedule_and_trains_a_learnable_tau() -> None:
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(16, 8, generator=g) for _ in range(2)]
    scheduled = build_objective({"name": "simclr", "temperature": {"kind": "cosine", "start": 0.5, "end": 0.1}})
    out = scheduled(z, StepContext(progress=1.0))
    assert out.logs["temperature"].item() == pytest.approx(0.1)
    assert torch.allclose(out.loss, build_objective("simclr", temperature=0.1)(z).loss, atol=1e-6)
    learnable = build_objective(
        {"name": "simclr", "temperature": {"kind": "learnable", "init": 0.3, "min": 0.05, "max": 1}}
    )
    zz = [v.clone().requires_grad_() for v in z]
    loss = learnable(zz).loss
    loss.backward()
    tau = torch.tensor(0.3, requires_grad=True)
    multiview_ntxent([v.detach() for v in z], tau).backward()
    assert learnable.temperature.log_tau.grad.item() == pytest.approx((tau.grad * 0.3).item(), rel=1e-4)
