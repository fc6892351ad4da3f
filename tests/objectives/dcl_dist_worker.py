"""Run by tests/objectives/test_dcl_distributed.py under torchrun: DCL / DCLW on 2 CPU processes (gloo).

Each process takes its half of a fixed global batch of embeddings, computes the loss and backpropagates;
rank 0 writes, per configuration, the mean of the processes' losses and the gradient w.r.t. the whole z,
each process's rows divided by the world size (DDP averages parameter gradients over processes, so that is
what a process's z contributes to the update). One process on the whole batch must give the same.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from lightly.loss import DCLLoss, DCLWLoss
from torch import Tensor

from ssl_toolkit.objectives import StepContext, build_objective
from tests.dist_helpers import save_losses_and_grads

GLOBAL_BATCH = 16
DIM = 12


def _ours(name: str, **kwargs: object) -> Callable[[list[Tensor], StepContext], Tensor]:
    objective = build_objective({"name": f"ssl_toolkit.objectives.dcl:{name}", **kwargs})
    return lambda z, ctx: objective(z, ctx).loss


def _lightly(loss_fn: torch.nn.Module) -> Callable[[list[Tensor], StepContext], Tensor]:
    return lambda z, ctx: loss_fn(z[0], z[1])


# name -> (loss builder, number of views, n_global, progress)
CONFIGS: dict[str, tuple[Callable[[], Callable], int, int, float]] = {
    "dcl": (lambda: _ours("DCL", temperature=0.3), 2, 2, 0.0),
    "dclw": (lambda: _ours("DCLW", temperature=0.3), 2, 2, 0.0),
    "dclw_kept_weights": (lambda: _ours("DCLW", temperature=0.3, detach_weights=False), 2, 2, 0.0),
    "dcl_multicrop_cosine": (
        lambda: _ours("DCL", temperature={"kind": "cosine", "start": 0.5, "end": 0.1}),
        4,
        2,
        0.4,
    ),
    "dclw_multicrop": (lambda: _ours("DCLW", temperature=0.2, sigma=0.3), 5, 3, 0.0),
    # lightly's own losses, gathering: DCL must agree, DCLW (per-process weights) must not
    "lightly_dcl": (lambda: _lightly(DCLLoss(temperature=0.3, gather_distributed=True)), 2, 2, 0.0),
    "lightly_dclw": (lambda: _lightly(DCLWLoss(temperature=0.3, gather_distributed=True)), 2, 2, 0.0),
}


def make_views(n_views: int, batch: int = GLOBAL_BATCH) -> list[Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.randn(batch, DIM, generator=g) for _ in range(n_views)]


def run(name: str, rank: int = 0, world: int = 1) -> tuple[Tensor, list[Tensor]]:
    """This process's loss and the gradient w.r.t. its rows of every view, for configuration `name`."""
    build, n_views, n_global, progress = CONFIGS[name]
    local = GLOBAL_BATCH // world
    z = [v[rank * local : (rank + 1) * local].clone().requires_grad_() for v in make_views(n_views)]
    loss = build()(z, StepContext(n_global=n_global, progress=progress))
    loss.backward()
    return loss.detach(), [v.grad for v in z]


def main(out_path: str) -> None:
    save_losses_and_grads(run, CONFIGS, out_path)


if __name__ == "__main__":
    main(sys.argv[1])
