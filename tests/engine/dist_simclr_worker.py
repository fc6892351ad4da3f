"""Run by tests/engine/test_distributed.py under torchrun: SimCLR loss and gradients on 2 CPU processes.

Each process takes its half of a fixed global batch through a bias-only-BN-free `SSLModel` wrapped by
accelerate (DDP over gloo); rank 0 writes the global loss and the averaged parameter gradients.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn

from ssl_toolkit.model import SSLModel
from ssl_toolkit.objectives import StepContext, build_objective


def make_model() -> SSLModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 24))
    projector = nn.Sequential(nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 16))
    return SSLModel(encoder=encoder, projector=projector, objective=build_objective("simclr", temperature=0.3))


def make_batch(n_views: int, batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 8, 8, generator=g) for _ in range(n_views)]


def main(out_path: str, n_views: int, global_batch: int) -> None:
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2, accelerator.num_processes
    model = accelerator.prepare(make_model())
    local = global_batch // accelerator.num_processes
    start = accelerator.process_index * local
    views = [v[start : start + local] for v in make_batch(n_views, global_batch)]
    out = model(views, StepContext(n_global=n_views))
    accelerator.backward(out.loss)
    loss = accelerator.reduce(out.loss.detach(), reduction="mean")
    if accelerator.is_main_process:
        grads = {f"grad.{n}": p.grad.contiguous() for n, p in accelerator.unwrap_model(model).named_parameters()}
        save_file({"loss": loss.reshape(1), **grads}, out_path)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group; exiting without it can abort in gloo


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
