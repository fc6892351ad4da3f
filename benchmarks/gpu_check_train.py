"""GPU check sections that train through the toolkit's public entry points (benchmarks/gpu_check.py).

Only ``config.load``, ``engine.train``, the run folder (``metrics.csv``, ``metrics.json``, ``encoder/``) and
the CLI are used, so the sections keep working while the engine's insides change.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssl_toolkit import config
from ssl_toolkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from gpu_check import Check

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "pretrain"
DEFAULT_RECIPE = RECIPES / "simclr_fashion_mnist.yaml"
PHASE_KEYS = ("warmup", "freeze_prototypes_steps")  # objective arguments counted in steps
STEPS, TINY_STEPS = 30, 2
TINY = ["train.batch_size=16", "data.subset=64"]


def make_image_folder(root: Path, *, per_class: int, test_per_class: int, classes: int = 10) -> Path:
    """``root/{train,test}/class_k/*.png``: 28 px greyscale stripes whose angle is the class, plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = math.pi * c / classes
            stripes = 127 + 100 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 0.8)
            for i in range(n):
                img = np.clip(stripes + rng.normal(0, 30, stripes.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return root


def data_overrides(check: Check) -> tuple[list[str], str]:
    """Overrides pointing a recipe at Fashion-MNIST when found, else at a generated image folder (cached)."""
    if "data" not in check.cache:
        from ssl_toolkit.data import FashionMNIST

        try:
            if check.data == "generated":
                raise DataError("generated images asked for")
            found = FashionMNIST("test", root=check.data_root).source
            overrides = [f"data.root={check.data_root}"] if check.data_root else []
            check.cache["data"] = (overrides, f"Fashion-MNIST from {found}")
        except DataError:
            per_class, test_per_class = (8, 8) if check.tiny else (256, 64)
            folder = make_image_folder(check.work_dir / "images", per_class=per_class, test_per_class=test_per_class)
            described = f"generated 28 px images ({10 * per_class} train, {10 * test_per_class} test)"
            check.cache["data"] = (["data.name=image_folder", f"data.root={folder}"], described)
    return check.cache["data"]


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``run_dir/metrics.csv`` as floats (empty when the file is missing)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def steady_images_per_s(rows: list[dict[str, float]]) -> float | None:
    """Median images/s of the logged rows after the first (which carries start-up); the first if alone."""
    speeds = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return statistics.median(speeds[1:] if len(speeds) > 1 else speeds) if speeds else None


def loop_seconds(rows: list[dict[str, float]], batch: int) -> float | None:
    """Pretraining loop time: each metrics row's steps times the batch over its images/s, summed."""
    steps = [0.0] + [r["step"] for r in rows]
    parts = [(b - a) * batch / r["images_per_s"] for a, b, r in zip(steps, steps[1:], rows) if r.get("images_per_s")]
    return sum(parts) if len(parts) == len(rows) and parts else None


def short_run(check: Check, run_name: str, steps: int) -> list[str]:
    """Overrides for a short bf16 run without evaluation, monitor or intermediate checkpoints."""
    overrides = [
        f"train.max_steps={steps}", "train.epochs=1000", "train.mixed_precision=bf16", "eval.after_train=false",
        f"train.output_dir={check.work_dir / 'runs'}", f"train.run_name={run_name}", "train.progress_bar=false",
        f"train.log_every={1 if check.tiny else 5}", f"train.save_every={steps}", "train.resume=false",
        "monitor.every=0", "monitor.export_best=false",
    ]  # fmt: skip
    if check.device.type == "cpu":
        overrides.append("train.cpu=true")
    return overrides + (TINY if check.tiny else []) + data_overrides(check)[0]


def engine_run(check: Check, recipe: Path | None, overrides: list[str]) -> dict[str, Any]:
    """``engine.train`` on ``config.load(recipe, overrides)``: losses, images/s, wall time, peak memory."""
    from ssl_toolkit import engine

    cfg = config.load(recipe, overrides)
    run_dir = Path(cfg.train.output_dir) / (cfg.train.run_name or cfg.name)
    cuda = check.device.type == "cuda"
    gc.collect()  # the previous run's model and optimizer, so that the peak below is this run's
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(check.device)
    t0 = time.perf_counter()
    engine.train(cfg)
    wall = time.perf_counter() - t0
    rows = read_metrics(run_dir)
    losses = [r["loss"] for r in rows if "loss" in r]
    return {
        "steps": int(rows[-1]["step"]) if rows else 0,
        "losses": losses,
        "finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "images_per_s": steady_images_per_s(rows),
        "wall_s": round(wall, 2),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(check.device) / 2**20) if cuda else None,
        "encoder_exported": (run_dir / "encoder" / "model.safetensors").is_file(),
    }


def objective_recipe(name: str) -> Path | None:
    """The objective's own recipe: ``<name>_fashion_mnist.yaml``, else one whose objective is ``name``."""
    preferred = RECIPES / f"{name}_fashion_mnist.yaml"
    if preferred.is_file():
        return preferred
    for path in sorted(RECIPES.glob("*.yaml")):
        raw = OmegaConf.load(path)
        if OmegaConf.select(raw, "objective.name") == name and not OmegaConf.select(raw, "data.generated.bank"):
            return path
    return None


def _objective_row(check: Check, name: str, steps: int) -> dict[str, Any]:
    recipe = objective_recipe(name)
    overrides = short_run(check, name, steps)
    if recipe is None:  # the default recipe's model and views with this objective at its defaults
        recipe, overrides = DEFAULT_RECIPE, [*overrides, f"objective={{name: {name}}}"]
    cfg = config.load(recipe, overrides)
    phase = max(1, steps // 3)
    shortened = [f"objective.{k}={phase}" for k in PHASE_KEYS if (cfg.objective.get(k) or 0) > phase]
    result = engine_run(check, recipe, overrides + shortened)
    losses = result.pop("losses")
    row = {"objective": name, "recipe": recipe.name, "steps": result.pop("steps")}
    row |= {"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    row |= result | {"shortened": [s.removeprefix("objective.") for s in shortened] or None}
    return {"row": row, "losses": losses}


def objectives_section(check: Check) -> dict[str, Any]:
    """Every registered objective: a short bf16 run through ``engine.train`` with its own recipe."""
    from ssl_toolkit.objectives import OBJECTIVES

    steps = TINY_STEPS if check.tiny else STEPS
    rows, losses = [], {}
    for name in OBJECTIVES:
        if check.left() <= 0:
            rows.append({"objective": name, "status": "skipped", "error": "section time budget spent"})
            continue
        try:
            out = _objective_row(check, name, steps)
            rows.append(out["row"] | {"status": "ok" if out["row"]["finite"] else "non-finite loss"})
            losses[name] = out["losses"]
        except Exception as err:  # noqa: BLE001 - one objective's failure must not hide the others
            import traceback

            rows.append({"objective": name, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            losses[name] = traceback.format_exc()
    all_ok = all(r["status"] == "ok" for r in rows)
    return {
        "status": "ok" if all_ok else "partial",
        "notes": [
            f"{steps} optimizer steps each, bf16 autocast, through `engine.train` with the objective's recipe "
            f"(batch {16 if check.tiny else 'of the recipe'}); data: {data_overrides(check)[1]}.",
            "images_per_s: median of the metrics.csv rows after the first; peak_gpu_mib: "
            "torch.cuda.max_memory_allocated, reset before each objective.",
            f"shortened: objective arguments counted in steps ({', '.join(PHASE_KEYS)}) set to {max(1, steps // 3)} "
            "so that the short run reaches the objective's later phase.",
        ],
        "tables": {"Objectives": rows},
        "losses": losses,  # per objective: logged losses, or the traceback of its failure
    }


def _default_job_command(check: Check) -> list[str]:
    command = [
        sys.executable, "-m", "ssl_toolkit", "train", str(DEFAULT_RECIPE.relative_to(REPO)), *data_overrides(check)[0],
        f"train.output_dir={check.work_dir / 'default_job'}", "train.progress_bar=false", "train.resume=false",
    ]  # fmt: skip
    if check.device.type == "cpu":
        command.append("train.cpu=true")
    if check.tiny:
        command += [
            f"train.max_steps={TINY_STEPS}", "train.log_every=1", *TINY, "eval.max_train=64", "eval.max_test=32",
            "eval.linear_epochs=2", "eval.rankme_samples=64", "eval.batch_size=64",
            f"monitor.every={TINY_STEPS}", "monitor.samples=48", "monitor.knn_bank=32",
        ]  # fmt: skip
    return command


def default_job_section(check: Check) -> dict[str, Any]:
    """The default job through the CLI in a subprocess: pretraining, export, evaluation with floors."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    if check.device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the evaluation picks CUDA whenever it sees one
    command = _default_job_command(check)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=max(check.left(), 1))
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        returncode, stdout, stderr = None, _text(err.stdout), _text(err.stderr)
    wall = time.perf_counter() - t0
    run_dir = check.work_dir / "default_job" / "simclr_fashion_mnist"
    rows = read_metrics(run_dir)
    batch = OmegaConf.load(run_dir / "recipe.yaml").train.batch_size if (run_dir / "recipe.yaml").is_file() else None
    printed = re.search(r"pretrain ([\d.]+) min, total ([\d.]+) min", stdout)
    steps = int(rows[-1]["step"]) if rows else 0
    loop_s = loop_seconds(rows, batch) if batch else None
    summary = {
        "returncode": returncode,
        "wall_s": round(wall, 1),
        "printed_pretrain_min": float(printed.group(1)) if printed else None,
        "printed_total_min": float(printed.group(2)) if printed else None,
        "loop_s": loop_s,
        "steps": steps,
        "batch": batch,
        "images_per_s_steady": steady_images_per_s(rows),
        "images_per_s_loop": steps * batch / loop_s if loop_s else None,
        "loss_first": rows[0].get("loss") if rows else None,
        "loss_last": rows[-1].get("loss") if rows else None,
        "encoder_exported": (run_dir / "encoder" / "model.safetensors").is_file(),
        "report": (run_dir / "report.html").is_file(),
    }
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    table = [{"model": k, **{m: v.get(m) for m in ("knn_instdisc", "knn_dino", "linear", "rankme")}}
             for k, v in metrics.items() if isinstance(v, dict) and "knn_instdisc" in v]  # fmt: skip
    status = "ok" if returncode == 0 else "failed"
    error = None if returncode == 0 else ("timed out" if returncode is None else f"exit status {returncode}")
    return {
        "status": status,
        **({"error": f"{error}; stderr: {stderr[-500:]}"} if error else {}),
        "notes": [
            f"`{' '.join(Path(c).name if c == sys.executable else c for c in command[1:])}` "
            f"(data: {data_overrides(check)[1]}).",
            "wall_s: the whole command (start-up, pretraining, export, evaluation, report); loop_s: the training "
            "loop from the metrics.csv rows (monitor checks and checkpoints included); images_per_s_steady: "
            "median of the rows after the first; printed_*: what the CLI prints (0.1 min resolution).",
        ],
        "tables": {"Run": [summary], "Evaluation (top-1 %, RankMe)": table},
        "stdout_tail": stdout[-4000:],
        "stderr_tail": stderr[-4000:],
    }


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def gpu_views_section(check: Check) -> dict[str, Any]:
    """Views made on the device (``data.view_device``) vs CPU loader workers, when the schema has the key."""
    probe = [f"data.view_device={check.device.type}", *data_overrides(check)[0]]
    try:
        config.load(DEFAULT_RECIPE, probe)
    except ConfigError as err:
        if "unknown key" in str(err) and "view_device" in str(err):
            return {"status": "not_available", "reason": "not available in this version: the recipe schema has no "
                    "`data.view_device` (the GPU view path of issue 13)."}  # fmt: skip
        raise
    steps = TINY_STEPS if check.tiny else 60
    workers = 0 if check.tiny else max(1, min((os.cpu_count() or 2) - 1, 12))
    variants = {
        f"views on {check.device.type} (main process)": [f"data.view_device={check.device.type}", "data.num_workers=0"],
        f"views in {workers} CPU loader workers": ["data.view_device=cpu", f"data.num_workers={workers}"],
    }
    rows = []
    for label, extra in variants.items():
        result = engine_run(check, DEFAULT_RECIPE, short_run(check, f"views_{len(rows)}", steps) + extra)
        rows.append({"views": label, "steps": result["steps"], "images_per_s": result["images_per_s"],
                     "wall_s": result["wall_s"], "finite": result["finite"]})  # fmt: skip
    return {
        "notes": [
            f"The default recipe for {steps} steps each; at 28 px the model step is small, so images/s is "
            "bound by making the views."
        ],  # fmt: skip
        "tables": {"Views": rows},
    }
