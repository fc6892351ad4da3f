"""Two CPU processes of batch B give the GroCo loss and z-gradients of one process on the batch 2B.

The hardest negatives are chosen among the gathered batch of both processes (with ``k`` larger than a
process's own batch in one configuration), positives stay local, and the gather keeps the cross-process
gradient terms (``stop_grad=False``), which the official GatherLayer drops. Without gathering the two
differ, which shows the comparison can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dist_helpers import run_two_processes
from tests.objectives.groco_dist_worker import CONFIGS, run

pytest.importorskip("diffsort")

WORKER = Path(__file__).with_name("groco_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("groco_dist") / "dist.safetensors"
    run_two_processes(WORKER, out)
    return load_file(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "local_negatives"])
def test_two_processes_equal_one_process_on_doubled_batch(two_process_results: dict, name: str) -> None:
    loss, grads = run(name)
    assert abs(two_process_results[f"{name}.loss"].item() - loss.item()) < TOL
    for v, grad in enumerate(grads):
        torch.testing.assert_close(two_process_results[f"{name}.grad.{v}"], grad, atol=TOL, rtol=0)


@pytest.mark.slow
def test_per_process_negatives_are_not_the_doubled_batch(two_process_results: dict) -> None:
    loss, grads = run("local_negatives")
    assert abs(two_process_results["local_negatives.loss"].item() - loss.item()) > 1e-3
    assert (two_process_results["local_negatives.grad.0"] - grads[0]).abs().max() > 1e-4
