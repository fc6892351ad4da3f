"""Run by tests/objectives/test_groco_distributed.py under torchrun: GroCo on 2 CPU processes (gloo).

Each process takes its half of a fixed global batch of embeddings, computes the loss and backpropagates;
rank 0 writes, per configuration, the mean of the processes' losses and the gradient w.r.t. the whole z,
each process's rows divided by the world size (DDP averages parameter gradients over processes, so that is
what a process's z contributes to the update). One process on the whole batch must give the same.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from ssl_toolkit.objectives import StepContext, build_objective
from tests.dist_helpers import save_losses_and_grads

NAME = "ssl_toolkit.objectives.groco:GroCo"
GLOBAL_BATCH = 16
DIM = 12

# name -> (GroCo kwargs, number of views, n_global)
CONFIGS: dict[str, tuple[dict, int, int]] = {
    "k5": ({"topk_negatives": 5}, 2, 2),
    # k = 10 > local B - 1 = 7: only possible because negatives come from both processes
    "k10_no_stop_grad": ({"topk_negatives": 10, "stop_grad": False}, 2, 2),
    "multicrop_bitonic": ({"topk_negatives": 9, "sorting_network": "bitonic"}, 5, 2),
    "multicrop_no_stop_grad": ({"topk_negatives": 6, "stop_grad": False}, 4, 2),
    # per-process negatives: 2 processes are *not* the doubled batch (shows the comparison can fail)
    "local_negatives": ({"topk_negatives": 5, "gather_distributed": False}, 2, 2),
}


def make_views(n_views: int, batch: int = GLOBAL_BATCH) -> list[Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(batch, DIM, generator=g) for _ in range(n_views)]


def run(name: str, rank: int = 0, world: int = 1) -> tuple[Tensor, list[Tensor]]:
    """This process's loss and the gradient w.r.t. its rows of every view, for configuration `name`."""
    kwargs, n_views, n_global = CONFIGS[name]
    local = GLOBAL_BATCH // world
    z = [v[rank * local : (rank + 1) * local].clone().requires_grad_() for v in make_views(n_views)]
    loss = build_objective({"name": NAME, **kwargs})(z, StepContext(n_global=n_global)).loss
    loss.backward()
    return loss.detach(), [v.grad for v in z]


def main(out_path: str) -> None:
    save_losses_and_grads(run, CONFIGS, out_path)


if __name__ == "__main__":
    main(sys.argv[1])
