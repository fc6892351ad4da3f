"""What the default job's pretraining costs, before and after, measured in the same run.

The default recipe changed in ways that matter for time: the cost of one image (``train.channels_last``, the
encoder's depth, the batch size) and the number of epochs (a learned temperature keeps the accuracy in fewer;
eval/RESULTS.md "How the default was tuned"). This script times one full step of each variant as the engine
runs it with ``data.num_workers=0`` (the next batch of views from the recipe's own loader, then forward +
backward + SGD step under the recipe's autocast), steps the variants in rotation with alternating order so that
background load hits all alike, and multiplies each median step by the variant's number of steps:

* **before**: the default when issue 13 was filed (half-width ResNet-18, batch 256, 5 epochs, 2 x 28 px +
  4 x 14 px views, τ 0.2, NCHW);
* **5 epochs, channels_last**: the same recipe with ``train.channels_last`` (the default until 2026-12-03);
* **ResNet-18, learned τ, 4 epochs**: the default of the morning of 2026-12-03;
* **now**: ``recipes/pretrain/simclr_fashion_mnist.yaml`` as it is (ResNet-10, batch 128, 4 epochs).

It prints each variant's median step, images/s, steps, projected pretraining minutes and the ratio of the
before-variant's projected time to each; evaluation after pretraining is the same work for all of them.

    python benchmarks/default_job_cost.py --steps 12 --warmup 3 [--ablation]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from default_job_step import RECIPE, machine

from ssl_toolkit import config
from ssl_toolkit.builders import build_loader, build_model, build_optimizer, build_train_data
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.speed import apply_speed_settings

BEFORE_VIEWS = (
    "views=[{name: global, n: 2, size: 28, scale: [0.4, 1.0], augment: simclr, strength: 0.5},"
    " {name: local, n: 4, size: 14, scale: [0.1, 0.4], augment: simclr, strength: 0.5}]"
)
RESNET18 = ["model.backbone=resnet18", "train.batch_size=256", "train.lr=0.3"]
BEFORE = [*RESNET18, BEFORE_VIEWS, "train.epochs=5", "train.warmup_steps=100", "objective.temperature=0.2"]
VARIANTS = {
    "before": [*BEFORE, "train.channels_last=false"],
    "5 epochs, channels_last": [*BEFORE, "train.channels_last=true"],
    "ResNet-18, learned τ, 4 ep": [*RESNET18, "train.warmup_steps=60"],
    "now": [],
}
# --ablation: the two changes of the ResNet-10 default one at a time (their accuracy: eval/RESULTS.md)
ABLATION = {
    "ResNet-18 at batch 128": [*RESNET18[:1], "train.warmup_steps=120"],
    "ResNet-10 at batch 256": ["train.batch_size=256", "train.lr=0.3", "train.warmup_steps=60"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="measured steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps per variant first")
    p.add_argument("--ablation", action="store_true", help="also time ResNet-18 at batch 128 and ResNet-10 at 256")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


class Variant:
    """One recipe variant: its loader, model and optimizer, stepped as the engine steps them."""

    def __init__(self, overrides: list[str]):
        cfg = config.load(RECIPE, ["data.num_workers=0", "train.progress_bar=false", *overrides])
        data = build_train_data(cfg)
        self.batches = iter(build_loader(data, cfg))
        self.batch = cfg.train.batch_size
        steps = cfg.train.epochs * (data.size // self.batch)  # the engine's count: full batches, one process
        self.total_steps = min(steps, cfg.train.max_steps or steps)
        self.views = ", ".join(f"{g.n}x{g.size}" for g in cfg.views)
        self.model = build_model(cfg, data)
        self.optimizer = build_optimizer(self.model, cfg.train)
        apply_speed_settings(self.model, channels_last=cfg.train.channels_last, compile=False)
        self.dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
        self.context = StepContext(step=0, n_global=data.n_global, view_kinds=data.view_kinds)

    def step(self) -> float:
        """Seconds for the next batch of views plus one optimizer step."""
        start = time.perf_counter()
        views = next(self.batches).views
        with torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = self.model(views, self.context).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    chosen = {**VARIANTS, **(ABLATION if args.ablation else {})}
    variants = {name: Variant(overrides) for name, overrides in chosen.items()}
    order = list(variants)
    for _ in range(args.warmup):
        for name in order:
            variants[name].step()
    times: dict[str, list[float]] = {name: [] for name in order}
    for i in range(args.steps):
        for name in order if i % 2 == 0 else reversed(order):
            times[name].append(variants[name].step())
    base = statistics.median(times["before"]) * variants["before"].total_steps
    result = {"machine": machine(), "variants": {}}
    print(machine())
    header = ("variant", "views", "step (ms)", "images/s", "steps", "minutes", "vs before")
    print("{:<28} {:>10} {:>10} {:>9} {:>6} {:>8} {:>9}".format(*header))
    for name in order:
        v, med = variants[name], statistics.median(times[name])
        minutes = med * v.total_steps / 60
        ratio = base / (med * v.total_steps)
        result["variants"][name] = {
            "views": v.views, "step_s": med, "images_per_s": v.batch / med, "steps": v.total_steps,
            "pretraining_min": minutes, "ratio": ratio,
        }  # fmt: skip
        print(f"{name:<28} {v.views:>10} {1000 * med:>10.1f} {v.batch / med:>9.0f} {v.total_steps:>6} "
              f"{minutes:>8.1f} {ratio:>8.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
