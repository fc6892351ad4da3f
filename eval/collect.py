"""Print the markdown rows of eval/RESULTS.md from run folders.

    python eval/collect.py runs/simclr_fashion_mnist [more run folders ...]

Each run folder must hold ``metrics.json`` (written by ``ssl-toolkit train`` / ``eval``), ``metrics.csv``
and ``recipe.yaml``. The pretraining wall time is the sum of the logged step intervals (excluding start-up
and evaluation), so it is comparable between runs on the same machine.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
from pathlib import Path

import torch
import yaml

ROWS = ("encoder", "raw_pixels", "random_init")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {torch.get_num_threads()} threads, {gpu}"


def pretrain_minutes(run: Path) -> float:
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    batch = recipe["train"]["batch_size"] * recipe["train"]["grad_accum"]
    steps = [int(float(r["step"])) for r in rows]
    seconds = sum((s - p) * batch / float(r["images_per_s"]) for p, s, r in zip([0, *steps[:-1]], steps, rows))
    return seconds / 60


def rows(run: Path) -> list[str]:
    metrics = json.loads((run / "metrics.json").read_text())
    name = yaml.safe_load((run / "recipe.yaml").read_text())["name"]
    out = []
    for model in ROWS:
        if model not in metrics:
            continue
        m = metrics[model]
        label = name if model == "encoder" else f"floor: {model}"
        minutes = f"{pretrain_minutes(run):.1f}" if model == "encoder" else ""
        out.append(
            f"| {label} | {m['knn_instdisc']:.2f} | {m['knn_dino']:.2f} | {m['linear']:.2f} | "
            f"{m['rankme']:.1f} | {minutes} |"
        )
    return out


if __name__ == "__main__":
    print("| model | k-NN instdisc (k=200, T=0.1) | k-NN dino (k=20, T=0.07) | linear | RankMe | pretrain min |")
    print("|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print("\n".join(rows(Path(arg))))
    print(f"\nmachine: {machine()}")
