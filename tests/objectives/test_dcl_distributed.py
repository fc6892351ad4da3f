"""Two CPU processes of batch B give the DCL / DCLW loss and z-gradients of one process on the batch 2B.

For DCLW this holds only because the vMF weights are normalised over the global batch; lightly's
`DCLWLoss` (per-process weights) is run beside it and must differ, which shows the check can fail.
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

from tests.objectives.dcl_dist_worker import CONFIGS, run

WORKER = Path(__file__).with_name("dcl_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("dcl_dist") / "dist.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIGS if not n.startswith("lightly_")])
def test_two_processes_equal_one_process_on_doubled_batch(two_process_results: dict, name: str) -> None:
    loss, grads = run(name)
    assert abs(two_process_results[f"{name}.loss"].item() - loss.item()) < TOL
    for v, grad in enumerate(grads):
        torch.testing.assert_close(two_process_results[f"{name}.grad.{v}"], grad, atol=TOL, rtol=0)


@pytest.mark.slow
def test_lightly_dcl_agrees_and_lightly_dclw_does_not(two_process_results: dict) -> None:
    # lightly's gathered DCL is the global-batch loss, as ours ...
    assert abs(two_process_results["lightly_dcl.loss"].item() - run("dcl")[0].item()) < TOL
    torch.testing.assert_close(two_process_results["lightly_dcl.grad.0"], run("dcl")[1][0], atol=TOL, rtol=0)
    # ... but its DCLW weights are normalised per process, so 2 processes are not the doubled batch
    single = run("dclw")[0].item()
    assert abs(two_process_results["lightly_dclw.loss"].item() - single) > 1e-3
