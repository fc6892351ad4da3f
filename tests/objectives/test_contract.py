"""The contract of every registered objective, parametrised over the registry (as timm tests every model).

A new objective gets these tests by its registry line alone; its own test file keeps only what is specific
(reference values, queue semantics, ...). The setting (views from the class attributes, toy facts, steps,
cases) is in contract_worker.py, which is also the 2-process worker.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load, save

from ssl_toolkit.objectives import OBJECTIVES, objective_kwargs
from tests.objectives.contract_worker import GLOBAL_BATCH, STEPS, build, cases, inputs, single_process

NAMES = sorted(OBJECTIVES)
TOL, RTOL = 2e-6, 1e-5  # float32 sums in another order over a few steps


def _run(objective, name: str, steps: range) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Loss and view gradients of ``objective`` at each of ``steps``."""
    out = []
    for step in steps:
        z, ctx = inputs(name, step)
        loss = objective(z, ctx).loss
        loss.backward()
        out.append((loss.detach(), [v.grad for v in z]))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_finite_float32_loss_and_detached_scalar_logs(name: str) -> None:
    objective = build(name)
    for step in range(STEPS):
        z, ctx = inputs(name, step)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the loss maths stays float32
            out = objective([v.bfloat16() for v in z], ctx)
        assert out.loss.ndim == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
        assert all(v.ndim == 0 and torch.isfinite(v) and not v.requires_grad for v in out.logs.values())
        out.loss.backward()


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_gives_the_float32_result(name: str) -> None:
    """Casting is not enough: under autocast a float32 matmul still runs in bf16 (~1e-2 on a loss at τ 0.1)."""
    objective = build(name)
    _run(objective, name, range(STEPS - 1))  # queues and tables in use
    z, ctx = inputs(name, STEPS - 1)
    expected = copy.deepcopy(objective)(z, ctx).loss
    (grad,) = torch.autograd.grad(expected, z[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = copy.deepcopy(objective)(z, ctx).loss
    (grad_autocast,) = torch.autograd.grad(got, z[0])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_autocast, grad, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_view(name: str) -> None:
    result = single_process(name)
    n_views = sum(key.startswith(f"step{STEPS - 1}.grad.") for key in result)
    assert n_views >= 2
    for v in range(n_views):
        grad = result[f"step{STEPS - 1}.grad.{v}"]
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, v


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_the_same_next_step(name: str) -> None:
    objective = build(name)
    _run(objective, name, range(STEPS - 1))
    fresh = build(name, seed=1)  # other random initial values: the state must bring everything back
    fresh.load_state_dict(load(save(objective.state_dict())))  # through safetensors, as accelerate saves
    (loss, grads), (fresh_loss, fresh_grads) = (_run(o, name, range(STEPS - 1, STEPS))[0] for o in (objective, fresh))
    assert torch.equal(loss, fresh_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, fresh_grads))
    for key, value in objective.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("name", NAMES)
def test_same_inputs_give_the_same_losses(name: str) -> None:
    first, second = (_run(build(name), name, range(STEPS)) for _ in range(2))
    for (loss_a, grads_a), (loss_b, grads_b) in zip(first, second):
        assert torch.equal(loss_a, loss_b)
        assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_on_a_toy_problem(name: str) -> None:
    """A few SGD steps on a tiny learnable embedding (the views' rows) lower the loss. The objective's state
    is first filled by two steps (queues, tables), then frozen: every step evaluates a copy of it."""
    objective = build(name)
    _run(objective, name, range(STEPS - 1))
    objective.zero_grad()
    z, ctx = inputs(name, STEPS - 1)
    embedding = [v.detach().clone().requires_grad_() for v in z]
    losses = []
    for _ in range(5):
        loss = copy.deepcopy(objective)(embedding, ctx).loss
        grads = torch.autograd.grad(loss, embedding)
        with torch.no_grad():
            for row, grad in zip(embedding, grads):
                row -= 1.0 * GLOBAL_BATCH * grad  # the loss is a mean over samples
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("case", list(cases()))
def test_two_processes_equal_one_process_on_the_doubled_batch(two_process_contract: dict, case: str) -> None:
    """Loss, view gradients, averaged parameter gradients and logs, step by step."""
    single = {k: v for k, v in single_process(case).items() if k.startswith("step")}
    assert {k.removeprefix(f"{case}.") for k in two_process_contract if k.startswith(f"{case}.step")} == set(single)
    for key, value in single.items():
        torch.testing.assert_close(two_process_contract[f"{case}.{key}"], value, atol=TOL, rtol=RTOL, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(cases()))
def test_state_is_identical_on_every_process_and_to_one_process(two_process_contract: dict, case: str) -> None:
    for key, value in single_process(case).items():
        if not key.startswith("state."):
            continue
        rank0, rank1 = (two_process_contract[f"{case}.{key}.rank{r}"] for r in (0, 1))
        assert torch.equal(rank0, rank1), key
        torch.testing.assert_close(rank0, value, atol=TOL, rtol=RTOL, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if "gather_distributed" in objective_kwargs(n)])
def test_without_gathering_two_processes_differ(two_process_contract: dict, name: str) -> None:
    """The control: each process on its own batch is not the doubled batch, so the comparison above can fail."""
    single = single_process(name)
    gaps = [
        (two_process_contract[f"control.{name}.{key}"] - value).abs().max().item()
        for key, value in single.items()
        if key.startswith("step") and (".loss" in key or ".grad." in key)
    ]
    assert max(gaps) > 1e-4
