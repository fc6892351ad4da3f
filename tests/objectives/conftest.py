"""The one torchrun launch of the objective tests: every case of contract_worker.py on 2 CPU processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dist_helpers import run_two_processes

WORKER = Path(__file__).with_name("contract_worker.py")


@pytest.fixture(scope="session")
def two_process_contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """What rank 0 of the 2-process run wrote for every case (see contract_worker.py)."""
    out = tmp_path_factory.mktemp("contract") / "two_processes.safetensors"
    run_two_processes(WORKER, out)
    return load_file(str(out))
