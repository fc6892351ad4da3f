"""The EMA branch: starts as a copy, moves once per optimizer step by the scheduled momentum, feeds ctx.z_ema."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.model import SSLModel, ema_momentum
from ssl_toolkit.objectives import LossOutput, Objective, StepContext


class Recorder(Objective):
    """Sum of z (so there is a gradient), remembering the last context."""

    def forward(self, z, ctx=StepContext()):  # noqa: B008
        self.ctx = ctx
        return LossOutput(loss=sum(v.sum() for v in z))


def _model(momentum=(0.5, 0.9)) -> SSLModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    return SSLModel(encoder=encoder, projector=nn.Linear(6, 4), objective=Recorder(), ema_momentum=momentum)


def test_momentum_schedule_is_a_cosine_from_start_to_end() -> None:
    assert ema_momentum(0.0, 0.99, 1.0) == pytest.approx(0.99)
    assert ema_momentum(1.0, 0.99, 1.0) == pytest.approx(1.0)
    assert ema_momentum(1 / 3, 0.9, 1.0) == pytest.approx(1.0 - 0.1 * (math.cos(math.pi / 3) + 1) / 2)


def test_ema_moves_once_per_step_and_feeds_the_objective() -> None:
    model = _model()
    views = [torch.randn(3, 3, 2, 2) for _ in range(3)]
    model(views, StepContext(n_global=2))
    assert torch.equal(model.ema_encoder[1].weight, model.encoder[1].weight)  # a copy before any step
    z_ema = model.objective.ctx.z_ema
    assert len(z_ema) == 2 and not any(t.requires_grad for t in z_ema)
    assert torch.allclose(z_ema[1], model.projector(model.encoder(views[1])))

    old_ema = model.ema_encoder[1].weight.clone()
    with torch.no_grad():
        model.encoder[1].weight.add_(1.0)  # "an optimizer step"
    model.train_step += 1
    ctx = StepContext(n_global=2, progress=0.5)
    model(views, ctx)
    m = 0.9 - 0.4 * (math.cos(math.pi * 0.5) + 1) / 2  # 0.7
    expected = m * old_ema + (1 - m) * model.encoder[1].weight
    assert torch.allclose(model.ema_encoder[1].weight, expected)
    model(views, ctx)  # a second micro-batch of the same step: no second update
    assert torch.allclose(model.ema_encoder[1].weight, expected)


def test_ema_branch_is_outside_the_optimizer_and_inside_the_checkpoint() -> None:
    from omegaconf import OmegaConf

    from ssl_toolkit.builders import build_optimizer

    model = _model()
    train = OmegaConf.create({"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9})
    optimized = {id(p) for g in build_optimizer(model, train).param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in model.ema_encoder.parameters())
    assert {"ema_encoder.1.weight", "ema_projector.weight", "ema_step"} <= set(model.state_dict())


def test_bad_momentum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ema_momentum"):
        _model(momentum=(0.5, 1.5))
    with pytest.raises(ConfigError, match="two numbers"):
        _model(momentum=(0.99,))
