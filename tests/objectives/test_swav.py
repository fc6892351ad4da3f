"""SwAV against the reference values (tests/reference/views_eval_reference.json, `swav`) and lightly; its queue,
prototype freezing and the 2-process run of those."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn
from safetensors.torch import load_file, save_file

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective
from ssl_toolkit.objectives.swav import SwAV, sinkhorn, swapped_prediction_loss
from tests.conftest import reference

NAME = "swav"
LOSS_TOL = 1e-5  # suggested_tolerances.swav_loss_float32_vs_reference (small)
Q64_TOL = 1e-12  # suggested_tolerances.sinkhorn_Q_float64


def _swav_reference() -> dict:
    return reference("views_eval_reference.json")["swav"]


def _small_inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    """The reference's small case (recipe in ``swav.small_inputs``): 2 + 4 unit crops (8, 16), W (12, 16)."""
    recipe = _swav_reference()["small_inputs"]["recipe"]
    b, k, d = recipe["B"], recipe["K"], recipe["D"]
    g = torch.Generator().manual_seed(recipe["seed"])
    base = torch.randn(b, d, generator=g, dtype=torch.float64)
    z = [
        F.normalize(base + recipe["noise"] * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
        for _ in range(recipe["n_high"] + recipe["n_low"])
    ]
    w = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    checksum = _swav_reference()["small_inputs"]["checksum_scores_crop0"]
    scores = (z[0] @ w.T).float()  # the checksum is of the float32 scores
    assert abs(scores.sum().item() - checksum["sum"]) < 1e-6 and abs(scores[0, 0] - checksum["first3"][0]) < 1e-8
    return z, w


def _build(**kwargs: object) -> SwAV:
    """SwAV with two global crops and the given arguments (proj_dim 8 unless given)."""
    return build_objective({"name": NAME, "n_global": 2, "proj_dim": 8, **kwargs})


def _swav(w: torch.Tensor, **kwargs: object) -> SwAV:
    objective = _build(n_prototypes=w.shape[0], proj_dim=w.shape[1], **kwargs)
    with torch.no_grad():
        objective.prototypes.weight.copy_(w)
    return objective


def _checksum_close(t: torch.Tensor, checksum: dict, atol: float) -> None:
    assert list(t.shape) == checksum["shape"]
    assert abs(t.sum().item() - checksum["sum"]) < atol
    assert abs((t**2).sum().item() - checksum["sum_sq"]) < 1e-5 * checksum["sum_sq"]
    torch.testing.assert_close(t[:3].double(), torch.tensor(checksum["first3"], dtype=torch.float64), atol=atol, rtol=0)


def test_sinkhorn_float64_matches_official_codes() -> None:
    z, w = _small_inputs()
    ref = _swav_reference()["sinkhorn_small_crop0"]
    q = sinkhorn((z[0] @ w.T).float().double(), iterations=3, epsilon=0.05)  # float32 scores, float64 maths
    assert q.dtype == torch.float64
    torch.testing.assert_close(
        q, torch.tensor(ref["Q_official_float64_eps0.05_it3"], dtype=torch.float64), atol=Q64_TOL, rtol=0
    )
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8, dtype=torch.float64), atol=Q64_TOL, rtol=0)


def test_sinkhorn_matches_lightly_and_a_queue_is_prepended() -> None:
    g = torch.Generator().manual_seed(0)
    scores = (
        F.normalize(torch.randn(32, 16, generator=g), dim=1) @ F.normalize(torch.randn(20, 16, generator=g), dim=1).T
    )
    torch.testing.assert_close(sinkhorn(scores), lightly_sinkhorn(scores), atol=1e-6, rtol=0)
    # shared rows take part in the normalisation but only the batch's codes come back (official: last bs rows)
    ours = sinkhorn(scores[24:], shared=scores[:24])
    torch.testing.assert_close(ours, lightly_sinkhorn(scores)[24:], atol=1e-6, rtol=0)
    assert (ours - sinkhorn(scores[24:])).abs().max() > 1e-2


def test_loss_small_matches_reference_and_score_gradient_checksum() -> None:
    z, w = _small_inputs()
    ref = _swav_reference()["loss_small"]
    loss = _swav(w.float())([v.float() for v in z], StepContext(n_global=2)).loss
    assert abs(loss.item() - ref["official_transcription_float32"]) < LOSS_TOL
    # the reference's gradient is w.r.t. the 6 score matrices (8 x 12), crop-major
    scores = [(v @ w.T).float().requires_grad_() for v in z]
    codes = [sinkhorn(s.detach()) for s in scores[:2]]
    score_loss = swapped_prediction_loss(scores, codes, 0.1)
    score_loss.backward()
    assert abs(score_loss.item() - ref["official_transcription_float32"]) < LOSS_TOL
    _checksum_close(torch.cat([s.grad.flatten() for s in scores]), ref["grad_checksum_official"], atol=1e-6)


def test_loss_with_queue_matches_reference() -> None:
    z, w = _small_inputs()
    g = torch.Generator().manual_seed(1)
    queue = torch.stack([F.normalize(torch.randn(32, 16, generator=g, dtype=torch.float64), dim=1) for _ in range(2)])
    objective = _swav(w.float(), queue_length=32)
    objective.queue.copy_(queue.float())
    objective.queue_fill.fill_(32)
    out = objective([v.float() for v in z], StepContext(n_global=2))
    assert (
        abs(out.loss.item() - _swav_reference()["loss_small_with_queue"]["official_transcription_float32"]) < LOSS_TOL
    )
    assert out.logs["queue_used"].item() == 1.0


def _raw_z(n_views: int, batch: int, dim: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, dim, generator=g)
    return [(3 * (base + 0.7 * torch.randn(batch, dim, generator=g))).requires_grad_() for _ in range(n_views)]


def test_loss_and_gradients_wrt_raw_z_and_prototypes_match_lightly() -> None:
    z = _raw_z(5, 16, 8)
    objective = _build(n_prototypes=20, temperature=0.2)
    loss = objective(z, StepContext(n_global=2)).loss
    loss.backward()
    # lightly on the same (unit) prototypes: all of lightly's "high resolution" crops are assignment crops
    z_ref = [v.detach().clone().requires_grad_() for v in z]
    w_ref = objective.prototypes.weight.detach().clone().requires_grad_()
    scores = [F.normalize(v, dim=1) @ w_ref.T for v in z_ref]
    ref = SwaVLoss(temperature=0.2)(scores[:2], scores[2:]).squeeze()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-6
    for v, v_ref in zip(z, z_ref):
        torch.testing.assert_close(v.grad, v_ref.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(objective.prototypes.weight.grad, w_ref.grad, atol=1e-6, rtol=0)


def test_prototype_rows_renormalised_every_forward() -> None:
    objective = _build(n_prototypes=20)
    with torch.no_grad():
        objective.prototypes.weight.mul_(torch.rand(20, 1) * 5)
    objective(_raw_z(2, 8, 8), StepContext())
    torch.testing.assert_close(objective.prototypes.weight.norm(dim=1), torch.ones(20), atol=1e-6, rtol=0)
    assert objective.prototypes.bias is None


def test_collapsed_scores_give_ln_k() -> None:
    ref = _swav_reference()["known_values"]
    scores = [torch.zeros(4, 3000) for _ in range(3)]
    loss = swapped_prediction_loss(scores, [sinkhorn(s) for s in scores[:2]], 0.1)
    assert abs(loss.item() - ref["collapsed_equal_scores_K3000_loss"]) < 1e-5
    assert abs(loss.item() - math.log(3000)) < 1e-5


def _steps(objective: SwAV, seeds: range, progress: float = 0.5) -> list[float]:
    return [objective(_raw_z(3, 8, 8, seed=s), StepContext(step=s, progress=progress)).loss.item() for s in seeds]


def test_queue_fills_from_queue_start_and_is_used_only_once_full() -> None:
    objective = _build(n_prototypes=20, queue_length=12, queue_start=0.3)
    plain = _build(n_prototypes=20)
    plain.load_state_dict({"prototypes.weight": objective.prototypes.weight}, strict=False)
    assert _steps(objective, range(2), progress=0.2) == _steps(plain, range(2), progress=0.2)
    assert objective.queue_fill.item() == 0 and objective.queue.abs().sum() == 0  # not before queue_start
    out = objective(_raw_z(3, 8, 8, seed=2), StepContext(progress=0.3))
    assert out.loss.item() == plain(_raw_z(3, 8, 8, seed=2), StepContext(progress=0.3)).loss.item()
    assert objective.queue_fill.item() == 8 and out.logs["queue_used"].item() == 0.0
    out = objective(_raw_z(3, 8, 8, seed=3), StepContext(progress=0.4))
    assert objective.queue_fill.item() == 12 and out.logs["queue_used"].item() == 0.0  # full only after this step
    # newest first: seed 3's 8 global embeddings, then the first 4 of seed 2's
    expected = [
        torch.cat([F.normalize(_raw_z(3, 8, 8, seed=s)[i].detach(), dim=1) for s in (3, 2)])[:12] for i in (0, 1)
    ]
    torch.testing.assert_close(objective.queue, torch.stack(expected), atol=1e-7, rtol=0)
    out = objective(_raw_z(3, 8, 8, seed=4), StepContext(progress=0.5))
    assert out.logs["queue_used"].item() == 1.0
    assert abs(out.loss.item() - plain(_raw_z(3, 8, 8, seed=4), StepContext(progress=0.5)).loss.item()) > 1e-4


def test_queue_survives_a_checkpoint_round_trip(tmp_path) -> None:
    objective = _build(n_prototypes=20, queue_length=12)
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.5)
    for s in range(3):
        objective(_raw_z(3, 8, 8, seed=s), StepContext(step=s, progress=0.5)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert objective.queue_fill.item() == 12
    save_file(objective.state_dict(), str(tmp_path / "objective.safetensors"))  # as accelerate's save_state
    resumed = _build(n_prototypes=20, queue_length=12)
    resumed.load_state_dict(load_file(str(tmp_path / "objective.safetensors")))
    assert torch.equal(resumed.queue, objective.queue) and resumed.queue_fill.item() == 12
    ctx = StepContext(step=3, progress=0.6)
    expected, got = objective(_raw_z(3, 8, 8, seed=3), ctx), resumed(_raw_z(3, 8, 8, seed=3), ctx)
    assert got.loss.item() == expected.loss.item() and got.logs["queue_used"].item() == 1.0
    assert torch.equal(resumed.queue, objective.queue)


def test_frozen_prototypes_get_zero_gradient_then_train() -> None:
    objective = _build(n_prototypes=20, freeze_prototypes_steps=2)
    free = _build(n_prototypes=20)
    free.load_state_dict(objective.state_dict())
    for step in range(3):
        z, z_free = _raw_z(3, 8, 8, seed=step), _raw_z(3, 8, 8, seed=step)
        out = objective(z, StepContext(step=step))
        out.loss.backward()
        free(z_free, StepContext(step=step)).loss.backward()
        grad = objective.prototypes.weight.grad
        assert out.logs["prototypes_frozen"].item() == float(step < 2)
        if step < 2:
            assert grad is not None and torch.count_nonzero(grad) == 0
        else:
            torch.testing.assert_close(grad, free.prototypes.weight.grad, atol=0, rtol=0)
            assert grad.abs().max() > 1e-3
        for v, v_free in zip(z, z_free):  # the embeddings train as usual meanwhile
            torch.testing.assert_close(v.grad, v_free.grad, atol=0, rtol=0)
        objective.zero_grad(set_to_none=True)
        free.zero_grad(set_to_none=True)


def test_bf16_autocast_with_a_queue_gives_the_float32_result() -> None:
    # bf16 scores would move the codes by ~1e-3 and the loss by ~1e-2 (spec §1.8); the contract test covers
    # the queue-less case
    objective = _build(n_prototypes=50, proj_dim=32, queue_length=8)
    objective.queue.copy_(F.normalize(torch.randn(2, 8, 32), dim=2))
    objective.queue_fill.fill_(8)
    objective.eval()  # keep the queue as it is between the two calls
    z = _raw_z(4, 32, 32)
    expected = objective(z, StepContext()).loss
    (grad,) = torch.autograd.grad(expected, z[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = objective(z, StepContext()).loss
    (grad_autocast,) = torch.autograd.grad(got, z[0])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_autocast, grad, atol=1e-7, rtol=0)


def test_logs() -> None:
    out = _build(n_prototypes=20, temperature={"kind": "cosine", "start": 0.2, "end": 0.1})(
        _raw_z(3, 8, 8), StepContext(progress=1.0)
    )
    assert set(out.logs) == {"temperature", "code_entropy", "queue_used", "queue_fill", "prototypes_frozen"}
    assert abs(out.logs["temperature"].item() - 0.1) < 1e-7 and 0 < out.logs["code_entropy"].item() <= 1


@pytest.mark.slow
def test_two_processes_freeze_the_prototypes_then_fill_and_use_the_queue(two_process_contract: dict) -> None:
    """The contract test compares this run with one process step by step; here, that it did what it says."""
    case = "swav_queue_frozen_prototypes"
    used = [two_process_contract[f"{case}.step{s}.log.queue_used"].item() for s in range(3)]
    assert used == [0.0, 0.0, 1.0]  # full after steps 0 and 1 (24 + 24 >= 36), used at step 2
    grads = [two_process_contract[f"{case}.step{s}.pgrad.prototypes.weight"] for s in range(3)]
    assert torch.count_nonzero(grads[0]) == 0 and all(g.abs().max() > 1e-4 for g in grads[1:])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_prototypes": 1},
        {"proj_dim": 0},
        {"sinkhorn_epsilon": 0.01},
        {"sinkhorn_iterations": 0},
        {"queue_length": -1},
        {"queue_start": 1.5},
        {"freeze_prototypes_steps": 2.5},
        {"temperature": 0},
        {"prototypes": 10},
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        _build(**kwargs)


def test_realistic_size_matches_lightly() -> None:
    """The spec's realistic case (B 256, K 3000, 2 + 6 crops) has no stored inputs (only its value, 7.22988,
    spec §5), so it is checked against lightly's SwaVLoss on seeded inputs of that size."""
    z = [v.detach() for v in _raw_z(8, 256, 128, seed=3)]
    objective = _build(n_prototypes=3000, proj_dim=128, temperature=0.1)
    loss = objective(z, StepContext(n_global=2)).loss
    scores = [F.normalize(v, dim=1) @ objective.prototypes.weight.detach().T for v in z]
    ref = SwaVLoss(temperature=0.1)(scores[:2], scores[2:]).squeeze()
    assert 5.0 < ref.item() < 8.1  # between a confident assignment and the collapsed ln(3000)
    assert abs(loss.item() - ref.item()) < 1e-5
