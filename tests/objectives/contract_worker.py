"""The setting of the contract every objective meets (tests/objectives/test_contract.py), and its 2-process run.

Run under torchrun, this file is the one distributed worker of the objective tests: one launch runs every case.

A case is a registry name with keyword arguments: every registered objective with its defaults, plus the
`EXTRA_CASES` that exercise what the defaults do not (a queue that wraps, frozen prototypes, a learnable τ,
more negatives than one process holds). Each is built with `build_objective` from its name and the facts of
the toy setting below; its views follow its class attributes: ``max(2, min_global_views)`` global views, then
two local crops unless ``max_views`` says fewer, the EMA branch's outputs when ``requires_ema``, per-sample
weights at step 1 when ``accepts_sample_weights``.

`run_steps` runs `STEPS` steps of one process's share of each global batch: forward, backward, the gradients
of the objective's own parameters averaged over processes (what DDP does) and an SGD step on them. The
dataset indices revisit samples and repeat ids across processes. Under torchrun, rank 0 writes per case the
mean loss and logs (the engine logs the mean over processes), the gradient of the whole batch (each process's
rows divided by the number of processes, as DDP averages), the averaged parameter gradients and every
process's state; one process on the
whole batch must give the same. For objectives with ``gather_distributed``, a control run without gathering
shows that the comparison can fail.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ssl_toolkit.objectives import OBJECTIVES, Objective, StepContext, build_objective, objective_kwargs
from tests.dist_helpers import all_gather

GLOBAL_BATCH = 24
DIM = 16
DATASET_SIZE = 64
STEPS = 3
LR = 0.5
STEP_IDS = [
    list(range(24)),  # first visits
    list(range(24, 48)),  # first visits
    [(5 * i) % 40 for i in range(24)],  # revisits, each id three times, on both processes
]

LEARNABLE_TAU = {"kind": "learnable", "init": 0.2, "min": 0.05, "max": 1.0}
EXTRA_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "simclr_learnable_tau": ("simclr", {"temperature": LEARNABLE_TAU}),
    "dclw_cosine_tau_kept_weights": (
        "dclw",
        {"temperature": {"kind": "cosine", "start": 0.5, "end": 0.1}, "sigma": 0.3, "detach_weights": False},
    ),
    # the queue (36 per global crop) fills at steps 0 and 1 and is used at step 2; frozen prototypes at step 0
    "swav_queue_frozen_prototypes": ("swav", {"n_prototypes": 10, "queue_length": 36, "freeze_prototypes_steps": 1}),
    "mochi_ring_queue": ("mochi", {"queue_size": 40, "n_hard": 6, "n_mix": 5, "n_query_mix": 3}),  # wraps at step 1
    "isogclr_cosine_gamma_clip": (
        "isogclr",
        {"gamma_schedule": "cosine", "gamma_decay_progress": 0.75, "tau_grad_clip": 3.0},
    ),
    # k = 15 > a process's 11 other samples: only possible because negatives come from both processes
    "groco_k15_no_stop_grad_bitonic": (
        "groco",
        {"topk_negatives": 15, "stop_grad": False, "sorting_network": "bitonic"},
    ),
}


def cases() -> dict[str, tuple[str, dict[str, Any]]]:
    """Case name -> (registry name, keyword arguments): every registered objective, then the extra cases."""
    return {name: (name, {}) for name in sorted(OBJECTIVES)} | EXTRA_CASES


def layout(cls: type[Objective]) -> tuple[int, int]:
    """``(n_views, n_global)`` of the toy setting for an objective class, from its class attributes."""
    n_global = max(2, cls.min_global_views)
    n_views = n_global + 2 if cls.max_views is None else min(n_global + 2, cls.max_views)
    return max(n_views, cls.min_views), n_global


def facts(cls: type[Objective]) -> dict[str, int]:
    n_views, n_global = layout(cls)
    return {"proj_dim": DIM, "n_views": n_views, "n_global": n_global, "dataset_size": DATASET_SIZE}


def build(case: str, *, seed: int = 0, **overrides: Any) -> Objective:
    """The objective of ``case``, from its registry name, its arguments and the toy facts, under ``seed``."""
    name, kwargs = cases()[case]
    torch.manual_seed(seed)
    return build_objective({"name": name, **kwargs, **overrides}, known=facts(OBJECTIVES[name]))


def inputs(case: str, step: int, rank: int = 0, world: int = 1) -> tuple[list[Tensor], StepContext]:
    """This process's rows of the global batch of ``step``: leaf views (gradients wanted) and their context."""
    cls = OBJECTIVES[cases()[case][0]]
    n_views, n_global = layout(cls)
    g = torch.Generator().manual_seed(1000 + step)
    base = torch.randn(GLOBAL_BATCH, DIM, generator=g)
    z = [base + 0.5 * torch.randn(GLOBAL_BATCH, DIM, generator=g) for _ in range(n_views)]
    z_ema = [base + 0.5 * torch.randn(GLOBAL_BATCH, DIM, generator=g) for _ in range(n_global)]
    weights = torch.rand(GLOBAL_BATCH, generator=g) + 0.5
    weights = weights / weights.mean()  # mean 1 over the global batch, as GenView's
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    ctx = StepContext(
        step=step,
        progress=step / STEPS,
        n_global=n_global,
        ids=torch.tensor(STEP_IDS[step])[rows],
        z_ema=tuple(v[rows] for v in z_ema) if cls.requires_ema else (),
        extras={"sample_weights": weights[rows]} if cls.accepts_sample_weights and step == 1 else {},
    )
    return [v[rows].clone().requires_grad_() for v in z], ctx


def run_steps(objective: Objective, case: str, rank: int = 0, world: int = 1) -> dict[str, Tensor]:
    """`STEPS` training steps on this process's rows; per step its loss, logs, view and parameter gradients,
    then the objective's state."""
    out: dict[str, Tensor] = {}
    for step in range(STEPS):
        z, ctx = inputs(case, step, rank, world)
        result = objective(z, ctx)
        result.loss.backward()
        out[f"step{step}.loss"] = result.loss.detach().reshape(1)
        out |= {f"step{step}.log.{k}": v.detach().float().reshape(1) for k, v in result.logs.items()}
        out |= {f"step{step}.grad.{v}": t.grad for v, t in enumerate(z)}
        for name, p in objective.named_parameters():
            if p.grad is None:
                continue
            grad = p.grad.clone()
            if world > 1:
                dist.all_reduce(grad)
                grad /= world
            out[f"step{step}.pgrad.{name}"] = grad
            with torch.no_grad():
                p -= LR * grad
            p.grad = None
    return out | {f"state.{k}": v.detach().clone() for k, v in objective.state_dict().items()}


@cache
def single_process(case: str) -> dict[str, Tensor]:
    """`run_steps` of one process on the whole batch (the reference of the 2-process run)."""
    return run_steps(build(case), case)


def _combined(prefix: str, result: dict[str, Tensor], world: int) -> dict[str, Tensor]:
    """What rank 0 writes of every process's ``result``."""
    out = {}
    for key, t in result.items():
        if key.endswith(".loss") or ".log." in key:  # the engine logs the mean over processes
            out[f"{prefix}.{key}"] = torch.stack(all_gather(t, world)).mean(dim=0)
        elif ".grad." in key:
            out[f"{prefix}.{key}"] = torch.cat(all_gather(t, world)) / world
        elif key.startswith("state."):
            out |= {f"{prefix}.{key}.rank{r}": v for r, v in enumerate(all_gather(t, world))}
        else:  # parameter gradients, averaged already
            out[f"{prefix}.{key}"] = t
    return out


def main(out_path: str) -> None:
    from safetensors.torch import save_file

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    saved: dict[str, Tensor] = {}
    for case, (name, _) in cases().items():
        saved |= _combined(case, run_steps(build(case), case, rank, world), world)
        if case == name and "gather_distributed" in objective_kwargs(name):
            control = run_steps(build(case, gather_distributed=False), case, rank, world)
            saved |= _combined(f"control.{case}", control, world)
    if rank == 0:
        save_file(saved, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
