"""Shared plumbing of the 2-process CPU tests: launching a worker script with torchrun, gathering in workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]


def torchrun() -> list[str]:
    """The venv's torchrun, else the one on PATH, else ``python -m torch.distributed.run``."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def run_two_processes(worker: Path, *args: str | Path, timeout: int = 240) -> None:
    """Run ``worker args...`` as 2 gloo processes (one thread each); fail with the tail of its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [*torchrun(), "--standalone", "--nproc_per_node", "2", str(worker), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def all_gather(t: Tensor, world: int) -> list[Tensor]:
    """``t`` of every process (no gradient), in rank order; bool tensors too (gloo gathers no bool)."""
    kept = t.to(torch.uint8) if t.dtype == torch.bool else t.contiguous()
    out = [torch.empty_like(kept) for _ in range(world)]
    dist.all_gather(out, kept)
    return [o.to(t.dtype) for o in out]
