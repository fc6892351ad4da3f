"""GPU check: one command that runs the toolkit on a GPU and records what it does there (issue 17).

    python benchmarks/gpu_check.py OUT_DIR [--device cuda|cpu] [--tiny] [--budget-s 450] [--only a,b]

Sections, each guarded (a failure is recorded with its traceback and the next section runs):

* ``objectives``: every registered objective (``ssl_toolkit.objectives.OBJECTIVES``) trains 30 bf16 steps
  through ``engine.train`` with its own recipe: losses from the run's ``metrics.csv``, images/s, peak memory;
* ``default_job``: ``python -m ssl_toolkit train recipes/pretrain/simclr_fashion_mnist.yaml`` end to end
  (pretraining, export, evaluation with floors): wall time, images/s, the metrics table;
* ``knn_rankme``: ``knn_classify`` on a 1M x 512 bank (10k queries, k = 200) on the device against the CPU
  path on a subset, and ``rankme`` on 25,600 x 2048;
* ``resnet50_step``: ResNet-50 SimCLR steps at 224 px, batch 256, bf16 (gpu_check_step.py);
* ``gpu_views``: views made on the GPU vs CPU loader workers, when the recipe schema has ``data.view_device``.

A global time budget (``--budget-s``) skips what would not fit, with a note, and a watchdog ends the process
60 s after it. ``OUT_DIR/gpu_check.json`` (everything, tracebacks included) and ``OUT_DIR/gpu_check.md``
(tables to paste into ``benchmarks/RESULTS.md``) are rewritten after every section, so a killed run still
leaves what it measured. ``--device cpu --tiny`` is the dry run of the test suite (tests/test_gpu_check.py).
Data: Fashion-MNIST from ``--data-root``, ``.devdata/fashion-mnist`` (scripts/device_wheels.sh puts it there),
the Debian package or ``./data``; else a generated folder of 28 px images.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the checkout's ssl_toolkit importable
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from gpu_check_eval import knn_rankme_section  # noqa: E402
from gpu_check_report import write_outputs  # noqa: E402
from gpu_check_step import resnet50_step_section  # noqa: E402
from gpu_check_train import default_job_section, gpu_views_section, objectives_section  # noqa: E402

DEVDATA = REPO / ".devdata" / "fashion-mnist"
PACKAGES = (
    "torch", "torchvision", "timm", "accelerate", "lightly", "kornia", "kornia_rs", "omegaconf", "diffsort",
    "safetensors", "numpy", "faiss-cpu", "faiss-gpu",
)  # fmt: skip
# (name, function, cap in seconds for the full run); the order is the priority when time runs short
SECTIONS: tuple[tuple[str, Callable[[Check], dict[str, Any]], float], ...] = (
    ("objectives", objectives_section, 150.0),
    ("default_job", default_job_section, 240.0),
    ("knn_rankme", knn_rankme_section, 60.0),
    ("resnet50_step", resnet50_step_section, 170.0),
    ("gpu_views", gpu_views_section, 60.0),
)
MIN_SECTION_S = 15.0  # a section is not started with less than this left
WATCHDOG_GRACE_S = 60.0


@dataclass
class Check:
    """What every section needs: device, sizes, folders and the clock."""

    device: torch.device
    tiny: bool
    out_dir: Path
    work_dir: Path
    data_root: str | None
    data: str = "auto"  # auto: Fashion-MNIST when found, else generated images; generated: always generated
    deadline: float = 0.0  # perf_counter time at which the current section must stop starting work
    cache: dict[str, Any] = field(default_factory=dict)  # shared between sections (e.g. data overrides)

    def left(self) -> float:
        """Seconds left before this section's deadline."""
        return self.deadline - time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [name for name, _, _ in SECTIONS]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path, help="folder for gpu_check.md and gpu_check.json")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="tiny sizes everywhere (the CPU dry run of the test suite)")
    p.add_argument("--budget-s", type=float, default=None, help="global time budget (default 450; tiny: 300)")
    p.add_argument("--only", default=None, help=f"comma-separated sections to run, of: {', '.join(names)}")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: .devdata/fashion-mnist)")
    p.add_argument("--data", default="auto", choices=("auto", "generated"), help="generated: skip Fashion-MNIST")
    args = p.parse_args(argv)
    args.sections = names if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(names))
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; accepted: {', '.join(names)}")
    if args.budget_s is None:
        args.budget_s = 300.0 if args.tiny else 450.0
    if args.data_root is None and DEVDATA.is_dir():
        args.data_root = str(DEVDATA)
    return args


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, device and package versions, for the header of the results."""
    cuda = device.type == "cuda"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "git_commit": commit or None,
        "packages": {name: _version(name) for name in PACKAGES},
    }


def run_section(name: str, fn: Callable[[Check], dict[str, Any]], check: Check) -> dict[str, Any]:
    """Run one section; never raises. Returns its record with ``status`` ok, failed, skipped or not_available."""
    t0 = time.perf_counter()
    if check.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(check.device)
    try:
        record = {"status": "ok", **fn(check)}
    except Exception as err:  # noqa: BLE001 - recorded; the next section still runs
        record = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    record["seconds"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    if check.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


class Results:
    """The JSON document, written (with its Markdown) after every section and by the watchdog."""

    def __init__(self, out_dir: Path, meta: dict[str, Any], budget_s: float) -> None:
        self.out_dir, self.lock = out_dir, threading.Lock()
        self.doc: dict[str, Any] = {"meta": meta, "budget_s": budget_s, "sections": {}}

    def set(self, name: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.doc["sections"][name] = record
            write_outputs(self.out_dir, self.doc)


def _watchdog(results: Results, budget_s: float, current: list[str]) -> threading.Timer:
    def fire() -> None:
        results.set(current[0], {"status": "failed", "error": f"killed by the watchdog after {budget_s:.0f} s"})
        os._exit(3)

    timer = threading.Timer(budget_s + WATCHDOG_GRACE_S, fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no GPU; use --device cpu for the dry run", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = Results(args.out_dir, environment(device), args.budget_s)
    current = ["setup"]
    watchdog = _watchdog(results, args.budget_s, current)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        check = Check(device, args.tiny, args.out_dir, Path(work), args.data_root, args.data)
        for name, fn, cap in SECTIONS:
            if name not in args.sections:
                continue
            current[0] = name
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < min(MIN_SECTION_S, args.budget_s):
                results.set(name, {"status": "skipped", "reason": f"time budget spent ({left:.0f} s left)"})
                continue
            check.deadline = time.perf_counter() + (left if args.tiny else min(cap, left))
            print(f"gpu_check: {name} ({check.left():.0f} s at most)", flush=True)
            results.set(name, run_section(name, fn, check))
            print(f"gpu_check: {name}: {results.doc['sections'][name]['status']}", flush=True)
    watchdog.cancel()
    results.doc["total_s"] = round(time.perf_counter() - t_start, 1)
    with results.lock:
        write_outputs(args.out_dir, results.doc)
    print(f"gpu_check: wrote {args.out_dir / 'gpu_check.md'} and gpu_check.json in {results.doc['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
