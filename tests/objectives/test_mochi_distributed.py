"""Two CPU processes of batch B run MoCHi exactly as one process on the batch 2B.

The queue receives the keys of both processes, so after a few steps it is the same on both and equal to the
one-process queue. With mixing off (warm-up) the loss and z-gradients are the one-process ones; because the
mixing draws are made for the global batch from a generator seeded identically on every process (by run seed,
step, queue pointer and direction) and then sliced per process, the same holds with mixing on. A control
without gathering shows that the queue check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dist_helpers import run_two_processes
from tests.objectives.mochi_dist_worker import STEPS, run

WORKER = Path(__file__).with_name("mochi_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6
BUFFERS = ("queue", "queue_ids", "queue_ptr", "queue_fill")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("mochi_dist") / "dist.safetensors"
    run_two_processes(WORKER, out)
    return load_file(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixing", "mixing_ema", "warmup"])
def test_queue_is_identical_on_both_ranks_and_equals_one_process(two_process_results: dict, name: str) -> None:
    module, _, _ = run(name)
    assert int(module.queue_fill) == module.queue_size  # 4 steps of 32 keys wrapped the 40-entry queue
    for buf in BUFFERS:
        rank0, rank1 = (two_process_results[f"{name}.{buf}.rank{r}"] for r in (0, 1))
        assert torch.equal(rank0, rank1), buf
        assert torch.equal(rank0, getattr(module, buf).reshape(-1)), buf


@pytest.mark.slow
@pytest.mark.parametrize("name", ["warmup", "mixing", "mixing_ema"])
def test_loss_and_gradients_equal_one_process_on_doubled_batch(two_process_results: dict, name: str) -> None:
    _, losses, grads = run(name)
    for step in range(STEPS):
        assert abs(two_process_results[f"{name}.{step}.loss"].item() - losses[step].item()) < TOL, step
        for v, grad in enumerate(grads[step]):
            torch.testing.assert_close(two_process_results[f"{name}.{step}.grad.{v}"], grad, atol=TOL, rtol=0)


@pytest.mark.slow
def test_mixing_changes_the_loss_so_the_mixing_check_means_something(two_process_results: dict) -> None:
    # same inputs, mixing on vs off: the mixed steps (after the first, empty-queue one) differ
    for step in range(1, STEPS):
        mixed, plain = (two_process_results[f"{n}.{step}.loss"].item() for n in ("mixing", "warmup"))
        assert abs(mixed - plain) > 1e-3, step


@pytest.mark.slow
def test_without_gathering_the_queues_differ(two_process_results: dict) -> None:
    rank0, rank1 = (two_process_results[f"local_queue.queue.rank{r}"] for r in (0, 1))
    assert not torch.equal(rank0, rank1)
