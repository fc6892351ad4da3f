"""Run by tests/objectives/test_isogclr_distributed.py under torchrun: iSogCLR on 2 CPU processes (gloo).

Each process takes its half of a fixed global batch for several steps (ids mixing first visits, revisits and
an id repeated across the two processes) and writes, per step, its loss, the gradients of its z and its
copy of the u / τ / momentum / seen tables. The objective is called directly, without DDP, so nothing
(DDP's buffer broadcast included) can make the tables agree except the objective's own updates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from ssl_toolkit.objectives import OBJECTIVES, StepContext, build_objective

NAME = "isogclr" if "isogclr" in OBJECTIVES else "ssl_toolkit.objectives.isogclr:ISogCLR"
DATASET_SIZE, GLOBAL_BATCH, DIM = 32, 8, 16
STEP_IDS = [
    list(range(0, 8)),  # first visits
    list(range(8, 16)),  # first visits
    [3, 20, 9, 27, 1, 16, 30, 12],  # revisits mixed with first visits, across both processes
    [5, 9, 22, 31, 5, 2, 17, 9],  # ids 5 and 9 on both processes in one step
]


def make_objective(gather_distributed: bool = True):
    kwargs = {"gamma_schedule": "cosine", "gamma_decay_progress": 0.75, "tau_grad_clip": 3.0}
    return build_objective(
        {"name": NAME, "dataset_size": DATASET_SIZE, "gather_distributed": gather_distributed, **kwargs}
    )


def make_steps() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(z1, z2, ids)`` of the global batch for each step."""
    g = torch.Generator().manual_seed(11)
    return [
        (torch.randn(GLOBAL_BATCH, DIM, generator=g), torch.randn(GLOBAL_BATCH, DIM, generator=g), torch.tensor(ids))
        for ids in STEP_IDS
    ]


def run(objective, rank: int, world: int) -> dict[str, torch.Tensor]:
    """The steps on this process's half of each global batch; per-step loss, gradients and tables."""
    local = GLOBAL_BATCH // world
    out: dict[str, torch.Tensor] = {}
    for s, (z1, z2, ids) in enumerate(make_steps()):
        part = slice(rank * local, (rank + 1) * local)
        z = [z1[part].clone().requires_grad_(), z2[part].clone().requires_grad_()]
        res = objective(z, StepContext(step=s, progress=s / len(STEP_IDS), ids=ids[part]))
        res.loss.backward()
        out[f"loss.{s}"] = res.loss.detach().reshape(1)
        out[f"temperature.{s}"] = res.logs["temperature"].reshape(1)
        out[f"grad1.{s}"], out[f"grad2.{s}"] = z[0].grad, z[1].grad
        for key, table in objective.state_dict().items():
            out[f"{key}.{s}"] = table.clone()
    return out


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    results = {}
    for mode, gather in (("gathered", True), ("local", False)):
        torch.manual_seed(0)
        results.update({f"{mode}.{k}": v for k, v in run(make_objective(gather), rank, world).items()})
    save_file(results, str(Path(out_dir) / f"rank{rank}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
