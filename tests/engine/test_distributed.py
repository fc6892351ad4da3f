"""Two CPU processes give the same SimCLR loss and gradients as one process on the doubled batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_toolkit.objectives import StepContext
from tests.engine.dist_simclr_worker import make_batch, make_model

WORKER = Path(__file__).with_name("dist_simclr_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.parametrize("n_views", [2, 4])
def test_two_processes_equal_one_process_on_doubled_batch(tmp_path: Path, n_views: int) -> None:
    out = tmp_path / "dist.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node", "2", str(WORKER), str(out), str(n_views), "16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = load_file(str(out))

    model = make_model()
    loss = model(make_batch(n_views, 16), StepContext(n_global=n_views)).loss
    loss.backward()
    assert abs(dist["loss"].item() - loss.item()) < 1e-6
    for name, p in model.named_parameters():
        torch.testing.assert_close(dist[f"grad.{name}"], p.grad, atol=1e-6, rtol=0)
