"""Two CPU processes under DDP train SwAV exactly as one process on the doubled batch.

Codes (distributed Sinkhorn, with the gathered queue from step 2), losses and DDP-averaged gradients of every
parameter agree step by step over 4 SGD steps; the prototypes are frozen at step 0 without crashing DDP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dist_helpers import run_two_processes
from tests.objectives.swav_dist_worker import LR, N_STEPS, make_model, run_steps

WORKER = Path(__file__).with_name("swav_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
# float32 sums in a different order over 4 steps: ~1e-6 on losses and gradients of magnitude up to ~8
TOL, RTOL = 2e-6, 1e-5
PROTOTYPES = "objective.prototypes.weight"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("swav_dist") / "dist.safetensors"
    run_two_processes(WORKER, out)
    model = make_model()
    single = run_steps(model, torch.optim.SGD(model.parameters(), lr=LR))
    return load_file(str(out)), single


@pytest.mark.slow
def test_codes_and_losses_equal_one_process_on_doubled_batch(results: tuple) -> None:
    dist, single = results
    for step in range(N_STEPS):
        torch.testing.assert_close(dist[f"step{step}.loss"], single[f"step{step}.loss"], atol=TOL, rtol=RTOL)
        for i in range(2):
            torch.testing.assert_close(dist[f"step{step}.codes{i}"], single[f"step{step}.codes{i}"], atol=TOL, rtol=0)
    # the queue fills at steps 0 and 1 and is used from step 2 on, in both runs
    used = [dist[f"step{s}.queue_used"].item() for s in range(N_STEPS)]
    assert used == [single[f"step{s}.queue_used"].item() for s in range(N_STEPS)] == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.slow
def test_codes_of_one_half_alone_differ(results: tuple) -> None:
    # control: Sinkhorn over one process's half only (no global sums) gives other codes, so the check can fail
    dist, _ = results
    model = make_model()
    half = run_steps(model, torch.optim.SGD(model.parameters(), lr=LR), rank=0, world=2)
    assert (half["step0.codes0"] - dist["step0.codes0"][: half["step0.codes0"].shape[0]]).abs().max() > 1e-3


@pytest.mark.slow
def test_gradients_equal_one_process_on_doubled_batch(results: tuple) -> None:
    dist, single = results
    names = [k.removeprefix("step0.grad.") for k in single if k.startswith("step0.grad.")]
    assert PROTOTYPES in names
    for step in range(N_STEPS):
        for name in names:
            key = f"step{step}.grad.{name}"
            torch.testing.assert_close(dist[key], single[key], atol=TOL, rtol=RTOL, msg=key)
    # frozen at step 0 (exactly zero, reduced by DDP without error), trained afterwards
    assert torch.count_nonzero(dist[f"step0.grad.{PROTOTYPES}"]) == 0
    assert all(dist[f"step{s}.grad.{PROTOTYPES}"].abs().max() > 1e-4 for s in range(1, N_STEPS))


@pytest.mark.slow
def test_queue_is_identical_on_every_process_and_to_one_process(results: tuple) -> None:
    dist, single = results
    assert dist["queue"].shape[0] == 2 and dist["queue_fill"].tolist() == [24, 24]
    torch.testing.assert_close(dist["queue"][0], dist["queue"][1], atol=0, rtol=0)
    torch.testing.assert_close(dist["queue"][0], single["queue"][0], atol=TOL, rtol=0)
