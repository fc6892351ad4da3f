"""Overhead of the ssl_toolkit training step over a hand-written SimCLR step, measured in the same run.

Both paths train on the same batch of random images (two views), on the device accelerate picks:

* **bare**: a timm encoder + lightly ``SimCLRProjectionHead``, lightly ``NTXentLoss``, ``torch.optim.SGD``
  (Nesterov, as timm's ``sgd``), written directly with torch/timm/lightly;
* **engine**: ``SSLModel`` from ``ssl_toolkit.builders.build_model`` and the optimizer from
  ``build_optimizer``, prepared by ``accelerate.Accelerator``, stepped exactly as the inner loop of
  ``ssl_toolkit/engine.py`` does (accumulate, reduce, finiteness check, backward, lr schedule, clip, step,
  zero_grad, step counter, periodic log reduction); data loading, the progress bar, metrics-file writes and
  checkpoints are left out.

Steps alternate between the two paths (in alternating order) so that background load affects both alike.
The script prints the median step time of each, their ratio (engine / bare), images per second and the
machine.

    python benchmarks/engine_overhead.py --backbone resnet18 --size 28 --batch-size 256 --steps 10 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from accelerate import Accelerator
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import ssl_toolkit  # noqa: F401  registers the <name>_small_input timm models
from ssl_toolkit import config
from ssl_toolkit.builders import build_model, build_optimizer
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.schedule import lr_factor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="used when it exists, else defaults")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=28, help="image side in pixels")
    p.add_argument("--batch-size", type=int, default=256, help="images per step (each gives 2 views)")
    p.add_argument("--steps", type=int, default=10, help="measured steps per path")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per path first")
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    p.add_argument("--cpu", action="store_true", help="stay on CPU even when a GPU is visible")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def load_recipe(args: argparse.Namespace) -> DictConfig:
    """The recipe (if present) with this benchmark's backbone, size, batch and precision forced on it."""
    overrides = [
        f"model.backbone={args.backbone}",
        f"views=[{{name: global, n: 2, size: {args.size}}}]",
        f"train.batch_size={args.batch_size}",
        f"train.mixed_precision='{args.mixed_precision}'",  # quoted: YAML reads a bare `no` as False
        "train.grad_accum=1",
        "data.root=null",  # no data is read; the recipe's path need not exist here
        "eval.root=null",
    ]
    return config.load(args.recipe if args.recipe.is_file() else None, overrides)


def machine(accelerator: Accelerator) -> dict[str, object]:
    gpu = torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(accelerator.device),
        "gpu": gpu,
    }


def bare_step_fn(cfg: DictConfig, device: torch.device, views: list[Tensor]) -> Callable[[], None]:
    """The baseline: what a user would write with timm + lightly + torch alone."""
    m = cfg.model
    name = f"{m.backbone}_small_input" if m.small_input else m.backbone  # the same timm model as the engine's
    encoder = timm.create_model(name, pretrained=False, num_classes=0, **OmegaConf.to_container(m.backbone_kwargs))
    head = SimCLRProjectionHead(encoder.num_features, m.projector_hidden, m.projector_out, m.projector_layers)
    model = nn.Sequential(encoder, head).to(device).train()
    temperature = float(cfg.objective.get("temperature", 0.1))
    criterion = NTXentLoss(temperature=temperature, gather_distributed=False)
    t = cfg.train
    optimizer = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True
    )
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.mixed_precision == "bf16")
    x = torch.cat(views)  # (2B, C, H, W): one encoder call, as SSLModel does for equal-size views

    def step() -> None:
        with amp:
            z0, z1 = model(x).float().chunk(2)
            loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def engine_step_fn(cfg: DictConfig, accelerator: Accelerator, views: list[Tensor], total: int) -> Callable[[], None]:
    """One step of `ssl_toolkit.engine.train`'s inner loop, line for line (data loading excluded)."""
    tc = cfg.train
    model = build_model(cfg)
    optimizer = build_optimizer(model, tc)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    model.train()
    ids = torch.arange(views[0].shape[0], device=accelerator.device)
    view_kinds = tuple(g.name for g in cfg.views for _ in range(g.n))
    n_global = cfg.views[0].n
    state: dict[str, object] = {"step": 0}

    def step() -> None:
        step = int(state["step"])
        with accelerator.accumulate(model):
            ctx = StepContext(step=step, progress=step / total, n_global=n_global, ids=ids, view_kinds=view_kinds)
            out = model(views, ctx)
            loss_mean = accelerator.reduce(out.loss.detach(), reduction="mean")
            if not torch.isfinite(loss_mean):
                raise RuntimeError(f"loss is {loss_mean.item()} at step {step}")
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                factor = lr_factor(step, total_steps=total, warmup_steps=tc.warmup_steps, min_ratio=tc.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if tc.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            return
        step += 1
        state["step"] = step
        core.train_step.fill_(step)
        if step % tc.log_every == 0 or step == total:  # the engine's log row: reduce + host syncs
            state["last_log"] = {
                k: accelerator.reduce(v.detach().float().to(loss_mean.device), reduction="mean").item()
                for k, v in out.logs.items()
            } | {"loss": loss_mean.item(), "lr": optimizer.param_groups[0]["lr"]}

    return step


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    cfg = load_recipe(args)
    accelerator = Accelerator(
        cpu=args.cpu or not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
    )
    device = accelerator.device
    torch.manual_seed(0)
    views = [torch.randn(args.batch_size, 3, args.size, args.size).to(device) for _ in range(2)]  # (B, 3, S, S)
    total = args.warmup + args.steps
    paths = {"bare": bare_step_fn(cfg, device, views), "engine": engine_step_fn(cfg, accelerator, views, total)}

    times: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    for i in range(total):
        # Alternate paths, and their order, so that background load and cache effects hit both alike.
        for name in order if i % 2 == 0 else order[::-1]:
            seconds = timed(paths[name], device)
            if i >= args.warmup:
                times[name].append(seconds)

    median = {name: statistics.median(ts) for name, ts in times.items()}
    result = {
        "recipe": str(args.recipe.relative_to(REPO)) if args.recipe.is_file() else "defaults",
        "backbone": args.backbone,
        "size": args.size,
        "batch_size": args.batch_size,
        "views": 2,
        "steps": args.steps,
        "warmup": args.warmup,
        "mixed_precision": cfg.train.mixed_precision,
        "median_step_s": median,
        "images_per_s": {name: args.batch_size / s for name, s in median.items()},
        "ratio_engine_over_bare": median["engine"] / median["bare"],
        "machine": machine(accelerator),
    }
    print(
        f"recipe: {result['recipe']}  backbone={args.backbone} size={args.size} batch={args.batch_size} "
        f"(2 views) precision={cfg.train.mixed_precision}  {args.steps} steps after {args.warmup} warm-up"
    )
    for name in paths:
        print(f"  {name:<7} median step {median[name] * 1e3:9.1f} ms   {result['images_per_s'][name]:9.1f} images/s")
    print(f"  ratio engine / bare: {result['ratio_engine_over_bare']:.3f}")
    print("  machine: " + ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
