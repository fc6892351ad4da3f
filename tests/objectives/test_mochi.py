"""MoCHi against the reference values (tests/reference), lightly's MoCo loss and the queue's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective
from ssl_toolkit.objectives.mochi import MoCHi, hard_negative_mixing_loss, hardest_negatives
from tests.conftest import reference

TOL = 1e-5
SMALL = {"queue_size": 32, "n_hard": 8, "n_mix": 6, "n_query_mix": 4, "proj_dim": 16}


def _case() -> dict:
    return reference("objectives_reference.json")["cases"]["mochi_small"]


def _core_args(case: dict, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    q, k, queue = (torch.tensor(case["inputs"][n], dtype=dtype) for n in ("q", "k", "queue"))
    m = case["mixing"]
    draws = {n: torch.tensor(m[n]) for n in ("i_idx", "j_idx", "jq_idx")}
    draws |= {n: torch.tensor(m[n], dtype=dtype) for n in ("alpha", "beta")}
    return q.requires_grad_(), k, queue, draws


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, TOL), (torch.float64, 1e-9)])
def test_core_matches_reference(dtype: torch.dtype, tol: float) -> None:
    case = _case()
    q, k, queue, draws = _core_args(case, dtype)
    p = case["params"]
    loss = hard_negative_mixing_loss(q, k, queue, temperature=p["temperature"], n_hard=p["N_hardest"], **draws)
    loss.backward()
    assert abs(loss.item() - case["loss"]) < tol
    torch.testing.assert_close(q.grad, torch.tensor(case["grad"]["q"], dtype=dtype), atol=tol, rtol=0)
    # the variant that backpropagates through the q inside h' is measurably different: the check can fail
    other = torch.tensor(case["variant_query_mix_not_detached"]["grad"]["q"], dtype=dtype)
    assert (q.grad - other).abs().max() > 1e-3


def test_hardest_negatives_are_reference_rank_order() -> None:
    case = _case()
    q, _, queue, _ = _core_args(case)
    got = hardest_negatives(F.normalize(q, dim=1), F.normalize(queue, dim=1), case["params"]["N_hardest"])
    assert torch.equal(got, torch.tensor(case["mixing"]["hard_idx_expected"]))


def test_no_gradient_into_keys_queue_or_synthetic_points() -> None:
    case = _case()
    q, k, queue, draws = _core_args(case)
    k.requires_grad_(), queue.requires_grad_()
    hard_negative_mixing_loss(q, k, queue, temperature=0.2, n_hard=8, **draws).backward()
    assert k.grad is None and queue.grad is None
    # synthetic points built from q itself are constants: the q-gradient is the reference's detached one
    torch.testing.assert_close(q.grad, torch.tensor(case["grad"]["q"]), atol=TOL, rtol=0)


def _no_draws(rows: int) -> dict[str, torch.Tensor]:
    empty_i, empty_f = torch.zeros(rows, 0, dtype=torch.int64), torch.zeros(rows, 0)
    return {"i_idx": empty_i, "j_idx": empty_i, "alpha": empty_f, "jq_idx": empty_i, "beta": empty_f}


def _lightly_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """lightly's NTXentLoss with a memory bank (MoCo) holding ``queue``: an independent MoCo InfoNCE."""
    loss_fn = NTXentLoss(temperature=tau, memory_bank_size=tuple(queue.shape))
    loss_fn.memory_bank.bank = queue.detach().clone()
    return loss_fn(q, k.detach())


def test_core_without_mixing_is_lightly_moco() -> None:
    case = _case()
    q, k, queue, _ = _core_args(case, torch.float64)
    loss = hard_negative_mixing_loss(q, k, queue, temperature=0.2, n_hard=0, **_no_draws(8))
    (grad,) = torch.autograd.grad(loss, q)
    assert abs(loss.item() - case["loss_no_mixing"]) < 1e-9
    expected = _lightly_moco(q, k, F.normalize(queue, dim=1), 0.2)
    assert abs(loss.item() - expected.item()) < 1e-12
    torch.testing.assert_close(grad, torch.autograd.grad(expected, q)[0], atol=1e-12, rtol=0)


def test_excluded_entries_are_as_if_absent() -> None:
    case = _case()
    q, k, queue, draws = _core_args(case, torch.float64)
    exclude = torch.zeros(8, 32, dtype=torch.bool)
    for row in range(8):
        exclude[row, [row, 3 * row + 1]] = True  # e.g. the query's own sample from an earlier epoch
    got = hard_negative_mixing_loss(q, k, queue, temperature=0.2, n_hard=8, exclude=exclude, **draws)
    rows = []
    for row in range(8):
        kept = queue[~exclude[row]]
        one = {n: d[row : row + 1] for n, d in draws.items()}
        rows.append(
            hard_negative_mixing_loss(q[row : row + 1], k[row : row + 1], kept, temperature=0.2, n_hard=8, **one)
        )
    assert abs(got.item() - torch.stack(rows).mean().item()) < 1e-12


def _views(seed: int, batch: int = 8, dim: int = 16, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g).requires_grad_() for _ in range(n)]


def _ctx(z: list[torch.Tensor], **kwargs: object) -> StepContext:
    """A step whose EMA outputs are the views themselves: keys are the other view, detached."""
    return StepContext(z_ema=tuple(v.detach() for v in z), **kwargs)


def _feed(module: MoCHi, steps: range, *, ema: bool = False) -> list[torch.Tensor]:
    """Run ``module`` for ``steps`` (keys: other random EMA outputs, or the views); returns the normalised keys
    it was given, in enqueue order."""
    keys = []
    for step in steps:
        z = _views(100 + step)
        z_ema = tuple(v.detach() for v in (_views(200 + step) if ema else z))
        module(z, StepContext(step=step, z_ema=z_ema))
        keys += [F.normalize(v, dim=1) for v in z_ema]
    return keys


def test_module_equals_core_with_the_same_draws() -> None:
    module = MoCHi(temperature=0.3, **SMALL)
    _feed(module, range(3), ema=True)  # 48 keys through a 32-entry queue
    queue, ptr = module.queue.clone(), int(module.queue_ptr)  # the pointer at the step seeds the draws
    z, z_ema = _views(7), _views(8)
    out = module(z, StepContext(step=3, z_ema=tuple(v.detach() for v in z_ema)))
    out.loss.backward()
    expected = []
    for direction, (a, b) in enumerate(((0, 1), (1, 0))):
        module.queue_ptr.fill_(ptr)
        draws = module.mixing_draws(8, 8, step=3, direction=direction)
        zq = z[a].detach().clone().requires_grad_()
        loss = hard_negative_mixing_loss(zq, z_ema[b], queue, temperature=0.3, n_hard=8, **draws)
        expected.append((loss, torch.autograd.grad(loss, zq)[0]))
    assert abs(out.loss.item() - 0.5 * (expected[0][0] + expected[1][0]).item()) < 1e-6
    for a in (0, 1):
        torch.testing.assert_close(z[a].grad, 0.5 * expected[a][1], atol=1e-7, rtol=0)
    assert z_ema[0].grad is None and z_ema[1].grad is None
    assert out.logs["queue_fill"].item() == 1.0 and out.logs["temperature"].item() == pytest.approx(0.3)


def test_draws_follow_the_paper() -> None:
    draws = MoCHi(**SMALL).mixing_draws(500, 5, step=0, direction=0)
    assert draws["i_idx"].shape == (500, 6) and draws["beta"].shape == (500, 4)
    for name in ("i_idx", "j_idx", "jq_idx"):
        assert set(draws[name].unique().tolist()) == set(range(5))
    assert 0 <= draws["alpha"].min() and draws["alpha"].max() < 1 and draws["alpha"].max() > 0.9
    assert 0 <= draws["beta"].min() and draws["beta"].max() < 0.5 and draws["beta"].max() > 0.45


def test_queue_holds_only_the_gathered_keys_in_ring_order() -> None:
    module = MoCHi(**SMALL)
    keys = _feed(module, range(5))  # mixing on from step 1: synthetic points exist but must not be enqueued
    expected = torch.zeros(32, 16)
    for i, key in enumerate(torch.cat(keys)):
        expected[i % 32] = key
    assert torch.equal(module.queue, expected)
    assert int(module.queue_ptr) == 80 % 32 and int(module.queue_fill) == 32
    assert not module.queue.requires_grad and module.queue.grad is None


def test_empty_queue_gives_zero_loss_then_fills() -> None:
    module = MoCHi(**SMALL)
    z = _views(0)
    out = module(z, _ctx(z))
    assert out.loss.item() == 0.0 and out.logs["queue_fill"].item() == 0.5
    z = _views(1)
    out = module(z, _ctx(z, step=1))  # 16 valid entries, n_hard 8: mixing already possible
    assert out.loss.item() > 0 and out.logs["queue_fill"].item() == 1.0


def test_warmup_is_plain_moco_then_mixing_starts() -> None:
    module = MoCHi(temperature=0.2, warmup=4, **SMALL)
    _feed(module, range(2))
    queue = module.queue.clone()
    state = {n: b.clone() for n, b in module.state_dict().items()}
    z = _views(5)
    loss = module(z, _ctx(z, step=3)).loss
    loss.backward()
    zd = [v.detach().clone().requires_grad_() for v in z]
    expected = 0.5 * (_lightly_moco(zd[0], zd[1], queue, 0.2) + _lightly_moco(zd[1], zd[0], queue, 0.2))
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-6
    for got, want in zip(z, zd):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-7, rtol=0)
    module.load_state_dict(state)
    assert abs(module(z, _ctx(z, step=4)).loss.item() - expected.item()) > 1e-3


def test_own_sample_in_the_queue_is_excluded() -> None:
    module = MoCHi(**{**SMALL, "queue_size": 16, "n_hard": 4})
    ids = torch.arange(8)
    z = _views(0)
    module(z, _ctx(z, ids=ids))  # both views of samples 0..7 fill the queue
    state = {n: b.clone() for n, b in module.state_dict().items()}
    z = _views(1)
    without_ids = module(z, _ctx(z, step=1)).loss
    module.load_state_dict(state)
    queue, queue_ids, ptr = module.queue.clone(), module.queue_ids.clone(), int(module.queue_ptr)
    loss = module(z, _ctx(z, step=1, ids=ids)).loss
    exclude = queue_ids[None, :] == ids[:, None]  # (8, 16): two entries per query
    module.queue_ptr.fill_(ptr)
    expected = []
    for direction, (a, b) in enumerate(((0, 1), (1, 0))):
        draws = module.mixing_draws(8, 4, step=1, direction=direction)
        expected.append(
            hard_negative_mixing_loss(z[a], z[b], queue, temperature=0.2, n_hard=4, exclude=exclude, **draws)
        )
    assert abs(loss.item() - 0.5 * (expected[0] + expected[1]).item()) < 1e-6
    assert abs(loss.item() - without_ids.item()) > 1e-3  # the exclusion changed something


def test_build_by_name_and_bad_values() -> None:
    module = build_objective(
        {"name": "mochi", "temperature": {"kind": "cosine", "start": 0.3, "end": 0.1}}, known={"proj_dim": 128}
    )
    assert isinstance(module, MoCHi) and module.queue.shape == (4096, 128)
    z = [torch.randn(4, 128) for _ in range(2)]
    assert module(z, _ctx(z, progress=1.0)).logs["temperature"].item() == pytest.approx(0.1)
    for bad in ({"n_hard": 5000}, {"queue_size": 0}, {"n_mix": -1}, {"warmup": 1.5}, {"gather_distributed": 1}):
        with pytest.raises(ConfigError):
            build_objective({"name": "mochi", **bad}, known={"proj_dim": 8})
    with pytest.raises(ValueError, match="ctx.z_ema"):  # keys come from the EMA branch only
        module(z, StepContext())


@pytest.mark.slow
def test_two_processes_share_one_queue(two_process_contract: dict) -> None:
    """3 steps of 2 x 24 gathered keys wrapped the 40-entry ring (the contract test compares the queue with one
    process); without gathering each process keeps its own keys."""
    ring = "mochi_ring_queue.state"
    assert int(two_process_contract[f"{ring}.queue_fill.rank0"]) == 40
    assert int(two_process_contract[f"{ring}.queue_ptr.rank0"]) == (3 * 48) % 40
    local = [two_process_contract[f"control.mochi.state.queue.rank{r}"] for r in (0, 1)]
    assert not torch.equal(local[0], local[1])
