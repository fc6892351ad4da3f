"""`model.build_projector` and ``model.projector_last_norm``: the default head is lightly's SimCLR head, unchanged
(names, shapes and random initialisation), and ``bn_noaffine`` builds the head GroCo's authors describe."""

from __future__ import annotations

import pytest
import torch
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from ssl_toolkit import config
from ssl_toolkit.builders import build_model
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.model import build_projector


def _state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("layers", [2, 3])
def test_default_head_is_lightlys_simclr_head(layers: int) -> None:
    torch.manual_seed(0)
    ours = build_projector(24, hidden_dim=32, out_dim=16, num_layers=layers)
    torch.manual_seed(0)
    lightly_head = SimCLRProjectionHead(input_dim=24, hidden_dim=32, output_dim=16, num_layers=layers)
    assert _state_shapes(ours) == _state_shapes(lightly_head)  # checkpoints load as before
    for key, value in lightly_head.state_dict().items():  # same seed, same initial weights: runs reproduce
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(8, 24)
    torch.testing.assert_close(ours(x), lightly_head(x))


def _authors_head(input_dim: int, output_dim: int, num_layers: int) -> nn.Sequential:
    """GroCo's projector as ninatu/learning_by_sorting describes it (models/projection/regular_projection.py):
    (num_layers - 1) x [Linear(d, d, bias=False), BatchNorm1d(d), ReLU], then Linear(d, out) whose bias is frozen,
    then BatchNorm1d(out, affine=False); d is the encoder's width."""
    layers: list[nn.Module] = []
    for _ in range(num_layers - 1):
        layers += [nn.Linear(input_dim, input_dim, bias=False), nn.BatchNorm1d(input_dim), nn.ReLU()]
    last = nn.Linear(input_dim, output_dim, bias=True)
    last.bias.requires_grad = False
    return nn.Sequential(*layers, last, nn.BatchNorm1d(output_dim, affine=False))


def test_bn_noaffine_builds_the_groco_authors_head() -> None:
    ours = build_projector(64, hidden_dim=64, out_dim=48, num_layers=3, last_norm="bn_noaffine")
    theirs = _authors_head(64, 48, 3)
    kinds = [type(m) for m in ours.modules() if not list(m.children())]
    assert kinds == [type(m) for m in theirs]
    linears = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(64, 64), (64, 64), (48, 64)]
    norms = [m for m in ours.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [(m.num_features, m.affine) for m in norms] == [(64, True), (64, True), (48, False)]
    # Same weights, same outputs in training mode: their frozen last bias is removed again by the norm.
    mine = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    for src, dst in zip(mine, [m for m in theirs if isinstance(m, nn.Linear)]):
        dst.weight.data.copy_(src.weight.data)
    x = torch.randn(32, 64)
    out = ours.train()(x)
    torch.testing.assert_close(out, theirs.train()(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.mean(0), torch.zeros(48), rtol=0, atol=1e-5)  # standardised, no shift


def test_none_ends_in_a_linear_with_bias() -> None:
    head = build_projector(8, hidden_dim=16, out_dim=4, num_layers=2, last_norm="none")
    last = list(head.modules())[-1]
    assert isinstance(last, nn.Linear) and last.bias is not None and last.out_features == 4


def test_recipe_key_builds_the_head_and_is_checked(tmp_path) -> None:
    base = ["model.backbone=resnet10t", "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
            f"train.output_dir={tmp_path}"]  # fmt: skip
    cfg = config.load(None, [*base, "model.projector_layers=3", "model.projector_last_norm=bn_noaffine"])
    last = list(build_model(cfg).projector.modules())[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    assert config.load(None, base).model.projector_last_norm == "bn"  # the default: today's head
    with pytest.raises(ConfigError, match=r"projector_last_norm 'bn_noafine' \(did you mean 'bn_noaffine'\?\)"):
        config.load(None, [*base, "model.projector_last_norm=bn_noafine"])
