"""iSogCLR on two CPU processes: identical tables on every rank, equal to one process on the doubled batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_toolkit.objectives import StepContext
from tests.dist_helpers import run_two_processes
from tests.objectives.isogclr_dist_worker import STEP_IDS, make_objective, make_steps

WORKER = Path(__file__).with_name("isogclr_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TABLES = ("u", "tau", "tau_momentum", "seen")
TOL = 1e-6


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("isogclr_dist")
    run_two_processes(WORKER, out)
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["gathered", "local"])
def test_tables_bit_identical_across_ranks(ranks: list[dict[str, torch.Tensor]], mode: str) -> None:
    # LibAUC updates τ and the momentum only for local ids; both modes here must keep every rank's copy equal
    for s in range(len(STEP_IDS)):
        for name in TABLES:
            key = f"{mode}.{name}.{s}"
            assert torch.equal(ranks[0][key], ranks[1][key]), key
        seen = ranks[0][f"{mode}.seen.{s}"]
        assert seen.sum() == len({i for ids in STEP_IDS[: s + 1] for i in ids})
        # every rank's log summarises the global batch, so the engine's mean over ranks is that batch's mean
        assert torch.equal(ranks[0][f"{mode}.temperature.{s}"], ranks[1][f"{mode}.temperature.{s}"])


@pytest.mark.slow
def test_two_processes_equal_one_process_on_doubled_batch(ranks: list[dict[str, torch.Tensor]]) -> None:
    objective = make_objective()
    world = len(ranks)
    for s, (z1, z2, ids) in enumerate(make_steps()):
        z = [z1.clone().requires_grad_(), z2.clone().requires_grad_()]
        out = objective(z, StepContext(step=s, progress=s / len(STEP_IDS), ids=ids))
        out.loss.backward()
        # global loss = mean of the per-process losses; DDP averages the gathered-negative gradients
        dist_loss = torch.cat([r[f"gathered.loss.{s}"] for r in ranks]).mean()
        assert abs(dist_loss.item() - out.loss.item()) < TOL, s
        for k, g in enumerate((z[0].grad, z[1].grad), start=1):
            dist_grad = torch.cat([r[f"gathered.grad{k}.{s}"] for r in ranks]) / world
            torch.testing.assert_close(dist_grad, g, atol=TOL, rtol=0)
        for name, table in objective.state_dict().items():
            torch.testing.assert_close(ranks[0][f"gathered.{name}.{s}"], table, atol=TOL, rtol=TOL)
        assert torch.equal(ranks[0][f"gathered.seen.{s}"], objective.seen)
