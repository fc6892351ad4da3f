"""Run by tests/objectives/test_swav_distributed.py under torchrun: SwAV training steps on 2 CPU processes.

A small `SSLModel` (no BatchNorm, so one process on the whole batch is the exact reference) with a SwAV
objective whose prototypes are frozen for the first step and whose queue fills from step 0 and is used from
step 2, is wrapped by accelerate in real torch DDP (``find_unused_parameters=False``, the setting under which
lightly's ``requires_grad`` toggling crashes) and trained with SGD for a few steps on 2 + 2 multi-crop views.
Each process takes its half of every global batch. Rank 0 writes, per step, the mean loss, the (DDP-averaged)
gradient of every parameter and the gathered codes, and at the end the queue of every process. One process on
the whole batch (`run_steps` with ``world=1``) must give the same.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import Tensor, nn

import ssl_toolkit.objectives.swav as swav_module
from ssl_toolkit.model import SSLModel
from ssl_toolkit.objectives import StepContext, build_objective

GLOBAL_BATCH = 16
N_STEPS = 4
N_GLOBAL = 2
LR = 0.5
SWAV = {
    "name": "ssl_toolkit.objectives.swav:SwAV",
    "n_prototypes": 10,
    "proj_dim": 8,
    "temperature": 0.1,
    "queue_length": 24,  # not a multiple of the global batch: full after step 1, used from step 2
    "queue_start": 0.0,
    "freeze_prototypes_steps": 1,
}


def make_model() -> SSLModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    projector = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, SWAV["proj_dim"]))
    return SSLModel(encoder=encoder, projector=projector, objective=build_objective(SWAV))


def make_views(step: int, batch: int = GLOBAL_BATCH) -> list[Tensor]:
    """Two 8 px global crops and two 4 px local crops of a fixed batch for ``step``."""
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(batch, 3, size, size, generator=g) for size in (8, 8, 4, 4)]


@contextmanager
def record_codes() -> Iterator[list[Tensor]]:
    """Collect every code matrix the SwAV objective computes (wraps its module-level `sinkhorn`)."""
    codes: list[Tensor] = []
    original = swav_module.sinkhorn

    def recording(*args: object, **kwargs: object) -> Tensor:
        q = original(*args, **kwargs)
        codes.append(q.clone())
        return q

    swav_module.sinkhorn = recording
    try:
        yield codes
    finally:
        swav_module.sinkhorn = original


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    rank: int = 0,
    world: int = 1,
    backward: Callable[[Tensor], None] = Tensor.backward,
    gather: Callable[[Tensor], Tensor] = lambda t: t,
    core: nn.Module | None = None,
) -> dict[str, Tensor]:
    """Train ``N_STEPS`` steps on this process's share of each batch; per-step loss, gradients and codes."""
    core = core or model
    local = GLOBAL_BATCH // world
    result: dict[str, Tensor] = {}
    for step in range(N_STEPS):
        views = [v[rank * local : (rank + 1) * local] for v in make_views(step)]
        with record_codes() as codes:
            out = model(views, StepContext(step=step, progress=step / N_STEPS, n_global=N_GLOBAL))
        backward(out.loss)
        result[f"step{step}.loss"] = gather(out.loss.detach().reshape(1)).mean().reshape(1)
        result[f"step{step}.queue_used"] = out.logs["queue_used"].reshape(1)
        for i, q in enumerate(codes):
            result[f"step{step}.codes{i}"] = gather(q.contiguous())
        for name, p in core.named_parameters():
            result[f"step{step}.grad.{name}"] = p.grad.detach().clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    objective = core.objective
    result["queue"] = gather(objective.queue[None].contiguous())  # (world, n_global, L, D)
    result["queue_fill"] = gather(objective.queue_fill.reshape(1))
    return result


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2, accelerator.num_processes
    model = make_model()
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=LR))
    assert isinstance(model, nn.parallel.DistributedDataParallel), type(model)
    result = run_steps(
        model,
        optimizer,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        backward=accelerator.backward,
        gather=accelerator.gather,
        core=accelerator.unwrap_model(model),
    )
    if accelerator.is_main_process:
        save_file(result, out_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group; exiting without it can abort in gloo


if __name__ == "__main__":
    main(sys.argv[1])
