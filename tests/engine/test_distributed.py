"""Two CPU processes give the same SimCLR loss and gradients as one process on the doubled batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_toolkit.objectives import StepContext
from tests.dist_helpers import run_two_processes
from tests.engine.dist_simclr_worker import make_batch, make_model

WORKER = Path(__file__).with_name("dist_simclr_worker.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("n_views", [2, 4])
def test_two_processes_equal_one_process_on_doubled_batch(tmp_path: Path, n_views: int) -> None:
    out = tmp_path / "dist.safetensors"
    run_two_processes(WORKER, out, n_views, "16")
    dist = load_file(str(out))

    model = make_model()
    loss = model(make_batch(n_views, 16), StepContext(n_global=n_views)).loss
    loss.backward()
    assert abs(dist["loss"].item() - loss.item()) < 1e-6
    for name, p in model.named_parameters():
        torch.testing.assert_close(dist[f"grad.{name}"], p.grad, atol=1e-6, rtol=0)
