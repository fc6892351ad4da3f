"""Two CPU processes of batch B give the DCL / DCLW loss and z-gradients of one process on the batch 2B.

For DCLW this holds only because the vMF weights are normalised over the global batch; lightly's
`DCLWLoss` (per-process weights) is run beside it and must differ, which shows the check can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dist_helpers import run_two_processes
from tests.objectives.dcl_dist_worker import CONFIGS, run

WORKER = Path(__file__).with_name("dcl_dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("dcl_dist") / "dist.safetensors"
    run_two_processes(WORKER, out)
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
