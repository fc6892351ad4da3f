"""The default job's training step under the CPU speed settings, measured against plain eager in the same run.

Builds the default recipe's model (``build_model``) and optimizer, takes one real batch of its views from its own
loader, and times forward + backward + optimizer step under the recipe's autocast for each variant:

* **eager**: the model as the engine builds it today (the baseline);
* **channels_last**: ``train.channels_last=true`` (weights and views in NHWC, oneDNN's preferred layout);
* **compile**: ``train.compile=true`` (``torch.compile`` of the encoder, inductor, one graph per view size);
* **both**.

Variants are stepped in rotation, in alternating order, so that background load affects all alike; the script
prints each variant's median step time, images/s (source images, not views) and its ratio to eager, plus
the machine, and can write them to JSON.

    python benchmarks/default_job_step.py --steps 12 --warmup 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from ssl_toolkit import config
from ssl_toolkit.builders import build_loader, build_model, build_optimizer, build_train_data
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.speed import apply_speed_settings

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml"
VARIANTS = {"eager": (False, False), "channels_last": (True, False), "compile": (False, True), "both": (True, True)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="the recipe whose model and views are timed")
    p.add_argument("--steps", type=int, default=12, help="measured steps per variant")
    p.add_argument("--warmup", type=int, default=4, help="unmeasured steps per variant first (compilation)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = config.load(args.recipe, ["data.num_workers=0", "train.progress_bar=false"])
    data = build_train_data(cfg)
    views = next(iter(build_loader(data, cfg))).views
    dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
    steppers = {}
    for name in args.variants.split(","):
        channels_last, compiled = VARIANTS[name]
        model = build_model(cfg, data)
        optimizer = build_optimizer(model, cfg.train)
        apply_speed_settings(model, channels_last=channels_last, compile=compiled)
        steppers[name] = (model, optimizer)

    def step(name: str) -> float:
        model, optimizer = steppers[name]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(views, StepContext(step=0, n_global=data.n_global, view_kinds=data.view_kinds)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in steppers}
    order = list(steppers)
    for _ in range(args.warmup):
        for name in order:
            step(name)
    for i in range(args.steps):
        for name in order if i % 2 == 0 else reversed(order):
            times[name].append(step(name))
    batch = views[0].shape[0]
    base = statistics.median(times[order[0]])
    result = {"machine": machine(), "batch": batch, "views": [tuple(v.shape[1:]) for v in views], "variants": {}}
    print(f"{machine()}; batch {batch}, views {', '.join('x'.join(map(str, v.shape[2:])) for v in views)}")
    print(f"{'variant':<14} {'step (ms)':>10} {'images/s':>9} {'vs ' + order[0]:>9}")
    for name in order:
        med = statistics.median(times[name])
        result["variants"][name] = {"step_s": med, "images_per_s": batch / med, "ratio": base / med}
        print(f"{name:<14} {1000 * med:>10.1f} {batch / med:>9.0f} {base / med:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
