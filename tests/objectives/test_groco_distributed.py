"""Two CPU processes of batch B give the GroCo loss and z-gradients of one process on the batch 2B.

The hardest negatives are chosen among the gathered batch of both processes (with ``k`` larger than a
process's own batch in one configuration), positives stay local, and the gather keeps the cross-process
gradient terms (``stop_grad=False``), which the official GatherLayer drops. Without gathering the two
differ, which shows the comparison can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.objectives.groco_dist_worker import CONFIGS, run

pytest.importorskip("diffsort")

WORKER = Path(__file__).with_name("groco_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("groco_dist") / "dist.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
