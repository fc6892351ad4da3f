"""Run by tests/objectives/test_mochi_distributed.py under torchrun: MoCHi for a few steps on 2 CPU processes.

Each process takes its half of a fixed global batch of embeddings per step, computes the loss and
backpropagates; rank 0 writes, per configuration and step, the mean of the processes' losses and the
gradient w.r.t. the whole z (each process's rows divided by the world size, as DDP averages), plus every
process's queue buffers after the last step. One process on the whole batch must give the same.

Mixing draws are made for the global batch from a generator seeded by (run seed, step, queue pointer,
direction), identical on every process, and sliced to the process's rows; so even with mixing on, two
processes must equal one process on the doubled batch.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import Tensor

from ssl_toolkit.objectives import StepContext
from ssl_toolkit.objectives.mochi import MoCHi
from tests.dist_helpers import all_gather

GLOBAL_BATCH = 16
DIM = 16
STEPS = 4
SETTINGS = {"temperature": 0.3, "queue_size": 40, "n_hard": 6, "n_mix": 5, "n_query_mix": 3, "proj_dim": DIM}
# name -> (MoCHi kwargs, keys from an EMA branch, dataset indices given)
CONFIGS: dict[str, tuple[dict, bool, bool]] = {
    "mixing": ({}, False, True),
    "mixing_ema": ({}, True, False),
    "warmup": ({"warmup": 100}, False, True),
    "local_queue": ({"gather_distributed": False}, False, False),  # control: queues differ per process
}


def make_step(step: int) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Global-batch z (2 views), EMA outputs and dataset indices (repeating, so own-sample exclusion acts)."""
    g = torch.Generator().manual_seed(50 + step)
    z = [torch.randn(GLOBAL_BATCH, DIM, generator=g) for _ in range(2)]
    z_ema = [torch.randn(GLOBAL_BATCH, DIM, generator=g) for _ in range(2)]
    return z, z_ema, (torch.arange(GLOBAL_BATCH) + 5 * step) % 20


def run(name: str, rank: int = 0, world: int = 1) -> tuple[MoCHi, list[Tensor], list[list[Tensor]]]:
    """The module after `STEPS` steps, and per step this process's loss and z-gradients (its rows)."""
    kwargs, ema, with_ids = CONFIGS[name]
    torch.manual_seed(0)
    module = MoCHi(**SETTINGS, **kwargs)
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    losses, grads = [], []
    for step in range(STEPS):
        z_all, z_ema_all, ids = make_step(step)
        z = [v[rows].clone().requires_grad_() for v in z_all]
        ctx = StepContext(
            step=step, ids=ids[rows] if with_ids else None, z_ema=tuple(v[rows] for v in z_ema_all) if ema else ()
        )
        loss = module(z, ctx).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([v.grad for v in z])
    return module, losses, grads


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    result = {}
    for name in CONFIGS:
        module, losses, grads = run(name, rank, world)
        for step, (loss, step_grads) in enumerate(zip(losses, grads)):
            result[f"{name}.{step}.loss"] = torch.stack(all_gather(loss, world)).mean().reshape(1)
            for v, grad in enumerate(step_grads):
                result[f"{name}.{step}.grad.{v}"] = torch.cat(all_gather(grad, world)) / world
        for buf in ("queue", "queue_ids", "queue_ptr", "queue_fill"):
            for r, value in enumerate(all_gather(getattr(module, buf).reshape(-1), world)):
                result[f"{name}.{buf}.rank{r}"] = value
    if rank == 0:
        save_file(result, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
