"""What a training run says about itself: the start summary, ``run.json``, the skipped-files list, the end summary.

``RUN/run.json`` is written by the main process when training starts and rewritten when it ends (atomically);
the report and the command line's end summary read it. Its keys (docs/cli.md, "run.json"): started, finished,
wall_s and images_per_s (this invocation), step, total_steps, epochs, steps_per_epoch, dataset, root,
train_images, labelled, classes, skipped_files, image_size, views, device, precision, processes, machine,
resumed_from and encoder. ``RUN/skipped.txt`` lists each file the run skipped (``path<TAB>reason``), so
later commands on the run can point to it instead of repeating every line.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
SKIPPED = "skipped.txt"


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def machine() -> str:
    """CPU model, cores and OS, e.g. ``AMD EPYC 7B13, 2 cores, Linux 6.1.0``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {usable_cores()} cores, {platform.system()} {platform.release()}"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_name(device: Any) -> str:
    """``cpu``, or ``cuda:0 NVIDIA H200`` (the accelerator's name after the device)."""
    text = str(device)
    if text.startswith("cuda"):
        import torch

        text = f"{text} {torch.cuda.get_device_name(device)}"
    return text


def views_text(groups: Sequence[Mapping[str, Any]]) -> str:
    """View groups as ``2x28 + 4x14`` (views x size, global groups first)."""
    return " + ".join(f"{int(g['n'])}x{int(g['size'])}" for g in groups)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(dict(data), indent=1) + "\n")
    os.replace(tmp, path)


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_skipped(run_dir: Path) -> dict[str, str]:
    """The files a run skipped (path -> reason), from ``skipped.txt``."""
    try:
        lines = (Path(run_dir) / SKIPPED).read_text().splitlines()
    except OSError:
        return {}
    return dict((*line.split("\t", 1), "")[:2] for line in lines if line.strip())


def record_skipped(run_dir: Path, skipped: Mapping[str, str]) -> int:
    """Add ``skipped`` (path -> reason) to the run's ``skipped.txt``, paths made absolute (``train`` and a later
    ``eval`` may name the folder differently, or run from elsewhere); returns how many files it lists."""
    known = read_skipped(run_dir)
    new = {os.path.abspath(p): r for p, r in skipped.items() if os.path.abspath(p) not in known and p not in known}
    if new:
        with (Path(run_dir) / SKIPPED).open("a") as f:
            f.writelines(f"{p}\t{' '.join(str(r).split())}\n" for p, r in new.items())
    return len(known) + len(new)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def start_lines(info: Mapping[str, Any], run_dir: Path, log_with: Sequence[str]) -> list[str]:
    """The start summary: data, views, schedule, device and where everything goes."""
    step, total = info["resumed_from"], info["total_steps"]
    if step is None:
        resume = f"new run of {total}"
    elif step < total:
        resume = f"resuming at step {step} of {total}"
    else:  # e.g. resumed with a lower train.max_steps: the end summary and evaluation still follow
        resume = f"at step {step} of {total}: nothing to train; raise train.epochs or train.max_steps to go on"
    labels = _plural(info["classes"], "class") if info["labelled"] else "unlabelled"
    skipped = info["skipped_files"]
    skipped_text = f", {_plural(skipped, 'skipped file')} (see {run_dir / SKIPPED})" if skipped else ""
    where = f" at {info['root']}" if info["root"] else ""
    images_per_step = info["images_per_step"]
    return [
        f"pretraining {info['name']} -> {run_dir} ({resume})",
        f"  data      {info['dataset']}{where}: {info['train_images']} training images, {labels}{skipped_text}",
        f"  views     {info['views']} per image",
        f"  steps     {info['steps_per_epoch']} per epoch x {info['epochs']} epochs -> {info['total_steps']} steps"
        f" of {images_per_step} images ({info['batch_size']} x {_plural(info['processes'], 'process')}"
        f"{' x ' + str(info['grad_accum']) + ' accumulated' if info['grad_accum'] > 1 else ''})",
        f"  device    {info['device']}, {info['precision']}, {_plural(info['processes'], 'process')}"
        f" ({info['machine']})",
        f"  logs      metrics.csv{''.join(', ' + n for n in log_with)}",
    ]


class RunRecord:
    """The run's own account of itself: start summary and ``run.json`` now, ``run.json`` again at `finish`.

    Args:
        run: the engine's prepared run (``cfg``, ``accelerator``, ``data``, ``loader``, ``folder``,
            ``total_steps``, ``core``, ``run_dir``).
        tracking: the run's trackers (`ssl_toolkit.trackers.start`).
    """

    def __init__(self, run: Any, tracking: Any) -> None:
        cfg, acc, data = run.cfg, run.accelerator, run.data
        self.run_dir, self.main, self.tracking, self.base = run.run_dir, acc.is_main_process, tracking, data.base
        self.start_step = int(run.core.train_step)
        self.images_per_step = cfg.train.batch_size * cfg.train.grad_accum * acc.num_processes
        labelled = getattr(data.base, "labels", None) is not None
        self.info: dict[str, Any] = {
            "started": now_iso(), "finished": None, "wall_s": None, "step": self.start_step,
            "total_steps": run.total_steps, "epochs": cfg.train.epochs,
            "steps_per_epoch": len(run.loader) // cfg.train.grad_accum, "images_per_s": None,
            "dataset": cfg.data.name, "root": cfg.data.root, "train_images": data.size, "labelled": labelled,
            "classes": getattr(data.base, "num_classes", None) if labelled else None,
            "skipped_files": len(getattr(data.base, "skipped", {}) or {}), "image_size": int(cfg.views[0].size),
            "views": views_text(cfg.views), "device": device_name(acc.device),
            "precision": {"no": "fp32"}.get(acc.mixed_precision, acc.mixed_precision),
            "processes": acc.num_processes, "machine": machine(),
            "resumed_from": self.start_step if run.folder.resume_from is not None else None, "encoder": None,
        }  # fmt: skip
        self.t0 = time.perf_counter()
        if self.main:
            extra = {"name": cfg.name, "images_per_step": self.images_per_step, "batch_size": cfg.train.batch_size,
                     "grad_accum": cfg.train.grad_accum}  # fmt: skip
            print("\n".join(start_lines({**self.info, **extra}, self.run_dir, list(cfg.train.log_with))), flush=True)
            write_json(self.run_dir / RUN_JSON, self.info)

    @classmethod
    def start(cls, run: Any) -> RunRecord:
        """Start the run's trackers, print the start summary and write ``run.json``."""
        from ssl_toolkit.trackers import start

        return cls(run, start(run.accelerator, run.cfg, run.run_dir, int(run.core.train_step)))

    def finish(self, step: int, encoder: Path | None) -> None:
        """Record the end: skipped files, ``run.json`` (wall time, images/s, the export), the export as artifact."""
        wall = time.perf_counter() - self.t0
        self.tracking.close()
        if not self.main:
            return
        skipped = record_skipped(self.run_dir, getattr(self.base, "skipped", {}) or {})
        images = (step - self.start_step) * self.images_per_step
        self.info.update(
            finished=now_iso(), wall_s=round(wall, 2), step=step, skipped_files=skipped,
            images_per_s=round(images / wall, 2) if images and wall > 0 else None,
            encoder=str(encoder) if encoder is not None else None,
        )  # fmt: skip
        write_json(self.run_dir / RUN_JSON, self.info)
        if encoder is not None:
            self.tracking.log_artifacts(encoder, "encoder")
        self.tracking.log({"train/wall_s": wall, **({"train/images_per_s": images / wall} if images else {})}, step)


def end_lines(run_dir: Path, *, metrics: Path | None, report: Path | None, next_commands: Sequence[str]) -> list[str]:
    """The end summary: how long, how fast, where the encoder, metrics and report are, what to run next."""
    info = read_run_json(run_dir)
    wall, speed = info.get("wall_s"), info.get("images_per_s")
    timing = f" in {datetime.timedelta(seconds=round(wall))}" if isinstance(wall, (int, float)) else ""
    rate = f" ({speed:.0f} images/s)" if isinstance(speed, (int, float)) else ""
    lines = [f"done: {run_dir.name}, step {info.get('step', '?')} of {info.get('total_steps', '?')}{timing}{rate}"]
    if info.get("encoder"):
        load = f'timm.create_model("local-dir:{info["encoder"]}", pretrained=True, num_classes=0).eval()'
        lines.append(f"  encoder   {info['encoder']}  ({load})")
    if metrics is not None:
        lines.append(f"  metrics   {metrics}")
    if report is not None:
        lines.append(f"  report    {report}")
    if info.get("skipped_files"):
        lines.append(f"  skipped   {_plural(info['skipped_files'], 'file')}, see {run_dir / SKIPPED}")
    lines += [f"  next      {command}" for command in next_commands]
    return lines
