"""iSogCLR against the 3-step reference sequence (official SogCLR_DRO_Loss and LibAUC GCLoss_v1), plus state."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective
from tests.conftest import reference

NAME = "isogclr"
TOL = 1e-5
# (implementation in the reference, its τ-gradient clip, key of u, key of the τ momentum)
IMPLS = {"official": (3.0, "s", "u_momentum"), "libauc": (None, "u", "grad_tau_momentum")}


def _case() -> dict:
    return reference("objectives_reference.json")["cases"]["isogclr_small"]


def _build(config: str, impl: str = "official", **overrides):
    hp = _case()["configs"][config]["hyperparameters"]
    kwargs = {k: hp[k] for k in ("gamma", "rho", "eta", "beta", "tau_min", "tau_max")}
    kwargs.update(tau_init=hp["tau"], tau_grad_clip=IMPLS[impl][0], dataset_size=_case()["dataset_size_N"])
    return build_objective({"name": NAME, **kwargs, **overrides})


def _step(objective, s: int, ctx_kwargs: dict | None = None):
    """Run reference step ``s``; returns (output, [z1, z2] with gradients, ids)."""
    case = _case()
    z = [torch.tensor(case["inputs"][f"step{s}_h{k}"], requires_grad=True) for k in (1, 2)]
    ids = torch.tensor(case["steps"][s]["index"])
    out = objective(z, StepContext(ids=ids, **(ctx_kwargs or {})))
    out.loss.backward()
    return out, z, ids


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("config", ["libauc_defaults", "official_readme", "official_argparse_defaults"])
def test_three_step_sequence_matches_reference(config: str, impl: str) -> None:
    objective = _build(config, impl)
    _, u_key, m_key = IMPLS[impl]
    for s, ref in enumerate(_case()["configs"][config][impl]["steps"]):
        tau_used = objective.tau[torch.tensor(_case()["steps"][s]["index"])].clone()
        out, z, ids = _step(objective, s)
        assert abs(out.loss.item() - ref["loss"]) < TOL, s
        torch.testing.assert_close(z[0].grad, torch.tensor(ref["grad"]["h1"]), atol=TOL, rtol=0)
        torch.testing.assert_close(z[1].grad, torch.tensor(ref["grad"]["h2"]), atol=TOL, rtol=0)
        torch.testing.assert_close(tau_used, torch.tensor(ref["tau_used"]), atol=TOL, rtol=0)
        after = ref["state_after"]
        torch.testing.assert_close(objective.tau[ids], torch.tensor(after["tau"]), atol=TOL, rtol=0)
        torch.testing.assert_close(objective.tau_momentum[ids], torch.tensor(after[m_key]), atol=TOL, rtol=0)
        torch.testing.assert_close(objective.u[ids], torch.tensor(after[u_key]), atol=TOL, rtol=TOL)  # u up to ~40
        assert abs(out.logs["temperature"].item() - sum(ref["tau_used"]) / len(ref["tau_used"])) < TOL
        assert abs(out.logs["tau_min"].item() - min(ref["tau_used"])) < TOL
        assert abs(out.logs["tau_max"].item() - max(ref["tau_used"])) < TOL


def test_clip_is_what_separates_official_from_libauc() -> None:
    # ρ = 6 makes the τ-gradient exceed 3 on every sample: the clipped run must not follow LibAUC's τ
    official, libauc = _build("official_argparse_defaults", "official"), _build("official_argparse_defaults", "libauc")
    _step(official, 0), _step(libauc, 0)
    assert (official.tau[:8] - libauc.tau[:8]).abs().max() > 1e-4


def test_histogram_values_are_the_seen_samples_taus() -> None:
    objective = _build("official_readme")
    assert objective.tau_histogram_values().numel() == 0
    _step(objective, 0)
    torch.testing.assert_close(objective.tau_histogram_values(), objective.tau[:8], atol=0, rtol=0)
    assert list(objective.parameters()) == []  # τ is updated by its own rule, never by the optimizer


def test_first_visit_is_per_sample_not_per_batch() -> None:
    # LibAUC initialises u only when the whole batch is unseen; unseen samples in a mixed batch must start at g
    g = torch.Generator().manual_seed(5)
    z = [torch.randn(8, 16, generator=g) for _ in range(2)]
    mixed = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])
    warm, cold = _build("official_readme"), _build("official_readme")
    warm(z, StepContext(ids=torch.arange(8)))
    warm(z, StepContext(ids=mixed))
    cold(z, StepContext(ids=mixed))
    torch.testing.assert_close(warm.u[8:12], cold.u[8:12], atol=0, rtol=0)
    assert (warm.u[:4] - cold.u[:4]).abs().min() > 1e-3


def test_duplicate_ids_keep_the_first_occurrence() -> None:
    g = torch.Generator().manual_seed(6)
    z = [torch.randn(4, 16, generator=g) for _ in range(2)]
    dup, distinct = _build("official_readme"), _build("official_readme")
    dup(z, StepContext(ids=torch.tensor([5, 6, 5, 7])))
    distinct(z, StepContext(ids=torch.tensor([5, 6, 9, 7])))  # same rows; the second 5 renamed
    for name in ("u", "tau", "tau_momentum"):
        table_dup, table_distinct = getattr(dup, name), getattr(distinct, name)
        torch.testing.assert_close(table_dup[[5, 6, 7]], table_distinct[[5, 6, 7]], atol=0, rtol=0)
    assert not dup.seen[9] and dup.seen.sum() == 3


def test_cosine_gamma_schedule() -> None:
    objective = _build("official_readme", gamma_schedule="cosine", gamma_decay_progress=0.5)
    assert objective.gamma_at(0.0) == pytest.approx(1.0)
    assert objective.gamma_at(0.25) == pytest.approx((1.0 + 0.8) / 2)
    assert objective.gamma_at(0.5) == pytest.approx(0.8) and objective.gamma_at(0.9) == pytest.approx(0.8)
    # a step at progress 0.1 equals a constant-γ objective with γ = 0.8 + 0.2 (1 + cos(π 0.2)) / 2
    constant = _build("official_readme", gamma=0.8 + 0.2 * (1 + math.cos(math.pi * 0.2)) / 2)
    for s in range(3):
        out_cos, _, _ = _step(objective, s, {"progress": 0.1})
        out_const, _, _ = _step(constant, s)
        torch.testing.assert_close(out_cos.loss, out_const.loss, atol=1e-7, rtol=0)
    torch.testing.assert_close(objective.u, constant.u, atol=0, rtol=1e-6)


def test_ids_out_of_range_or_missing_raise() -> None:
    objective = build_objective({"name": NAME, "dataset_size": 10})
    z = [torch.randn(4, 8), torch.randn(4, 8)]
    with pytest.raises(ValueError, match="dataset_size=10"):
        objective(z, StepContext(ids=torch.tensor([0, 1, 2, 10])))
    with pytest.raises(ValueError, match="dataset_size=10"):
        objective(z, StepContext(ids=torch.tensor([-1, 1, 2, 3])))
    with pytest.raises(ValueError, match="ctx.ids"):
        objective(z)
    assert not objective.seen.any()  # nothing was written by the failed calls


@pytest.mark.slow
def test_two_processes_keep_identical_tables_even_without_gathering(two_process_contract: dict) -> None:
    # LibAUC updates τ and the momentum only for local ids; here every rank writes every row, gathered or not
    # (the gathered run is compared with one process by the contract test)
    tables = ("u", "tau", "tau_momentum", "seen")
    for name in tables:
        ranks = [two_process_contract[f"control.isogclr.state.{name}.rank{r}"] for r in (0, 1)]
        assert torch.equal(ranks[0], ranks[1]), name
    seen = two_process_contract["control.isogclr.state.seen.rank0"]
    assert int(seen.sum()) == 48  # steps 0 and 1 visit 48 ids; step 2 only revisits them


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # no dataset_size: the builders fill it in, a direct build must give it
        {"dataset_size": 0},
        {"dataset_size": 8, "gamma_schedule": "step"},
        {"dataset_size": 8, "tau_init": 2.0},
        {"dataset_size": 8, "tau_min": 0.001, "tau_init": 0.01},
        {"dataset_size": 8, "gamma": 0.0},
        {"dataset_size": 8, "tau_grad_clip": -1.0},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_objective({"name": NAME, **kwargs})
