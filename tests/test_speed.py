"""train.channels_last and train.compile: same parameters and state_dict keys, same numbers up to rounding, and a
clear refusal where compilation cannot work. (Exact resume with channels_last: tests/engine/test_engine.py.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ssl_toolkit import config
from ssl_toolkit.builders import build_model
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.speed import apply_speed_settings, check_compiler

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tests" / "tiny.yaml"


def _model():
    torch.manual_seed(0)
    return build_model(config.load(TINY, [f"data.root={TINY.parent}"]))


def _views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]


def _loss_and_grads(model) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = model(_views(), StepContext(step=0)).loss
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_channels_last_keeps_names_and_numbers() -> None:
    eager = _model()
    fast = apply_speed_settings(copy.deepcopy(eager), channels_last=True, compile=False)
    assert list(fast.state_dict()) == list(eager.state_dict())
    conv = next(m for m in fast.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    loss_a, grads_a = _loss_and_grads(eager)
    loss_b, grads_b = _loss_and_grads(fast)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-3, atol=1e-5)


def test_compile_keeps_state_dict_keys_and_numbers() -> None:
    eager = _model()
    fast = apply_speed_settings(copy.deepcopy(eager), channels_last=True, compile=True)
    assert list(fast.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefix: checkpoints unchanged
    loss_a, _ = _loss_and_grads(eager)
    loss_b, _ = _loss_and_grads(fast)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=1e-5)


def test_compile_on_cpu_without_a_compiler_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler.*train.compile=false"):
        check_compiler("cpu")
    check_compiler("cuda")  # inductor's GPU kernels come from Triton, not from a host compiler
