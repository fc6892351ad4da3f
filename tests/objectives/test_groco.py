"""GroCo against the reference values (official learning_by_sorting code + diffsort 0.2.0, tests/reference)
and a per-comparator odd-even sorter written here from the spec, independently of ssl_toolkit/objectives/groco.py.
"""

from __future__ import annotations

import math

import diffsort
import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective
from tests.conftest import reference

NAME = "groco"
TOL = 1e-5
CASES = ["groco_small_V2_k5", "groco_small_V4_k5", "groco_small_V2_k5_nostopgrad"]


def _case(name: str) -> dict:
    return reference("objectives_reference.json")["cases"][name]


def _inputs(case: dict, dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], list[str]]:
    names = [n for n, _ in case["inputs_order"]]
    return [torch.tensor(case["inputs"][n], dtype=dtype, requires_grad=True) for n in names], names


def _objective(case: dict, **kwargs: object) -> torch.nn.Module:
    p = case["params"]
    return build_objective({"name": NAME, "topk_negatives": p["topk_neg"], "stop_grad": p["stop_grad"], **kwargs})


def _randn(n_views: int, batch: int = 12, dim: int = 16, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_() for _ in range(n_views)]


def _odd_even_cauchy(x: torch.Tensor, steepness: float) -> torch.Tensor:
    """Relaxed permutation P (sort(x) = x @ P) of an odd-even transposition network, one comparator at a time."""
    n = x.shape[1]
    vals, cols = list(x.unbind(1)), list(torch.eye(n, dtype=x.dtype).expand(x.shape[0], n, n).unbind(2))
    for layer in range(n):
        for i in range(layer % 2, n - 1, 2):
            a, b = vals[i], vals[i + 1]
            alpha = torch.atan(steepness * (b - a)) / math.pi + 0.5  # weight of a in the min
            vals[i], vals[i + 1] = alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b
            w = alpha[:, None]
            cols[i], cols[i + 1] = w * cols[i] + (1 - w) * cols[i + 1], (1 - w) * cols[i] + w * cols[i + 1]
    return torch.stack(cols, dim=2)


def _independent_groco(z: list[torch.Tensor], n_global: int, k: int, stop_grad: bool = True) -> torch.Tensor:
    """Per anchor: sort [top-k negatives ; positives] and take BCE of the mass of each input among the k lowest
    ranks against "is a negative" (the spec's equal-terms form)."""
    u = [v / v.norm(dim=1, keepdim=True) for v in z]
    side = [v.detach() for v in u] if stop_grad else u
    losses = []
    for a, anchor in enumerate(u):
        pos = [(anchor * side[p]).sum(1) for p in range(n_global) if p != a]
        sims = anchor @ side[a].T - torch.diag(torch.full((len(anchor),), math.inf, dtype=anchor.dtype))
        neg = torch.sort(sims, dim=1, descending=True).values[:, :k]
        x = torch.cat([neg.flip(1), torch.sort(torch.stack(pos, 1), dim=1).values], dim=1)
        q_neg = _odd_even_cauchy(x, 1.0)[:, :, :k].sum(2)
        losses.append(F.binary_cross_entropy(q_neg, (torch.arange(x.shape[1]) < k).to(x.dtype).expand_as(q_neg)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("name", CASES)
def test_matches_reference(name: str) -> None:
    case = _case(name)
    z, names = _inputs(case)
    out = _objective(case)(z, StepContext(n_global=case["params"]["n_pos_augs"]))
    out.loss.backward()
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - case["loss"]) < TOL
    for t, n in zip(z, names):
        torch.testing.assert_close(t.grad, torch.tensor(case["grad"][n]), atol=TOL, rtol=0)


def test_stop_grad_changes_the_gradient_not_the_loss() -> None:
    with_sg, without = _case("groco_small_V2_k5"), _case("groco_small_V2_k5_nostopgrad")
    assert with_sg["loss"] == without["loss"]
    diff = torch.tensor(with_sg["grad"]["view0"]) - torch.tensor(without["grad"]["view0"])
    assert diff.abs().max() > 1e-4  # so the two gradient checks above really test stop_grad


@pytest.mark.parametrize("name", CASES)
def test_independent_sorter_reproduces_reference(name: str) -> None:
    case = _case(name)
    p = case["params"]
    z, _ = _inputs(case, torch.float64)
    loss = _independent_groco(z, p["n_pos_augs"], p["topk_neg"], p["stop_grad"])
    assert abs(loss.item() - case["loss"]) < 1e-9


@pytest.mark.parametrize(
    ("n_global", "n_local", "k", "stop_grad"), [(2, 4, 6, True), (2, 4, 4, False), (3, 1, 5, True)]
)
def test_multicrop_matches_independent_form(n_global: int, n_local: int, k: int, stop_grad: bool) -> None:
    # local crops are anchors with n_global positives (a size no reference case covers), global ones n_global - 1
    z = _randn(n_global + n_local, seed=n_local)
    z64 = [v.detach().double().requires_grad_() for v in z]
    loss = build_objective(NAME, topk_negatives=k, stop_grad=stop_grad)(z, StepContext(n_global=n_global)).loss
    expected = _independent_groco(z64, n_global, k, stop_grad)
    (loss + expected).backward()
    assert abs(loss.item() - expected.item()) < TOL
    for got, want in zip(z, z64):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["odd_even_steepness1.0", "odd_even_steepness10.0", "bitonic_steepness10.0"])
def test_buffered_network_reproduces_diffsort_unit(variant: str) -> None:
    case = _case("diffsort_unit")
    kind, _, steep = variant.partition("_steepness")
    objective = build_objective(NAME, topk_negatives=5, sorting_network=kind, steepness=float(steep))
    x = torch.tensor(case["inputs"]["x"], dtype=torch.float64)  # (2, 6) = k + 1 positive
    sorted_x, perm = diffsort.sort(objective.network(1, x.device), x, float(steep), 0.25, "cauchy")
    torch.testing.assert_close(perm, torch.tensor(case["results"][variant]["P"], dtype=torch.float64))
    torch.testing.assert_close(sorted_x, torch.tensor(case["results"][variant]["sorted"], dtype=torch.float64))


def test_sorting_matrices_are_buffers_that_follow_the_module() -> None:
    case = _case("groco_small_V4_k5")  # four positive views: size k + 3 is built lazily on the first call
    objective = _objective(case)
    z, _ = _inputs(case)
    ctx = StepContext(n_global=4)
    loss = objective(z, ctx).loss
    # odd-even networks of k + p inputs have k + p layers of 4 matrices; p = 1, 2 built in __init__, 3 here
    matrices = ("split_a", "split_b", "combine_min", "combine_max")
    expected = {f"networks.{p}.{m}_{i}" for p in (1, 2, 3) for m in matrices for i in range(5 + p)}
    assert {name for name, _ in objective.named_buffers()} == expected
    assert not any(key.startswith("networks.") for key in objective.state_dict())  # non-persistent

    objective.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in objective.buffers())
    torch.testing.assert_close(objective(z, ctx).loss, loss, atol=1e-7, rtol=0)
    objective.to("meta")  # a device move: every matrix goes along
    assert {b.device.type for b in objective.buffers()} == {"meta"}

    # the checkpoint of a module that built an extra size loads strictly into a fresh one that has not
    fresh = _objective(case)
    fresh.load_state_dict(objective.state_dict(), strict=True)
    torch.testing.assert_close(fresh(z, ctx).loss, loss, atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reference_on_cuda_after_to() -> None:
    case = _case("groco_small_V4_k5")
    objective = _objective(case).to("cuda")
    z = [t.detach().to("cuda").requires_grad_() for t in _inputs(case)[0]]
    out = objective(z, StepContext(n_global=4))
    out.loss.backward()
    assert abs(out.loss.item() - case["loss"]) < TOL
    torch.testing.assert_close(z[0].grad.cpu(), torch.tensor(case["grad"]["view0"]), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sorting_network": "bubble"}, "sorting_network"),
        ({"interpolation": "sigmoid"}, "interpolation"),
        ({"topk_negatives": 0}, "topk_negatives"),
        ({"steepness": -1.0}, "steepness"),
        ({"stop_grad": "yes"}, "stop_grad"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_objective({"name": NAME, **kwargs})


@pytest.mark.parametrize("interpolation", ["logistic", "logistic_phi", "gaussian", "reciprocal", "optimal"])
def test_other_interpolations_and_bitonic_train(interpolation: str) -> None:
    z = _randn(3, seed=2)
    objective = build_objective(NAME, topk_negatives=4, interpolation=interpolation, sorting_network="bitonic")
    out = objective(z, StepContext(n_global=2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in z)


def test_rejects_fewer_samples_than_negatives() -> None:
    with pytest.raises(ValueError, match="topk_negatives=12"):
        build_objective(NAME, topk_negatives=12)(_randn(2, batch=12))
