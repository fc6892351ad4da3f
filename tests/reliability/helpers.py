"""Shared pieces of the fault-injection tests: a tiny recipe on a generated folder, CLI runs in or out of process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tests" / "tiny.yaml"


def tiny_args(data: Path, runs: Path, name: str, *extra: str) -> list[str]:
    """``train`` arguments of the tiny recipe on ``data``, writing ``runs/name``."""
    return [
        "train", str(TINY), f"data.root={data}", f"train.output_dir={runs}", f"train.run_name={name}",
        "eval.after_train=false", *extra,
    ]  # fmt: skip


def cli(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ssl_toolkit ARGS`` in a subprocess (the real entry point), output captured.

    ``cwd`` is on ``sys.path`` there (``-m``); the package is found through ``PYTHONPATH`` = the repository.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "ssl_toolkit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def start(*args: str) -> subprocess.Popen:
    """``python -m ssl_toolkit ARGS`` in the background (own process group, so signals reach it alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_toolkit", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def losses(run_dir: Path) -> dict[int, float]:
    """``step -> loss`` from a run's metrics.csv."""
    with (run_dir / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until metrics.csv has a row at ``step`` or later (or the process ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        path = run_dir / "metrics.csv"
        if path.is_file():
            try:
                if max(losses(run_dir), default=0) >= step:
                    return
            except (ValueError, KeyError):
                pass  # a row being written
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} never reached step {step} (process returned {proc.poll()})")


def one_line_error(stderr: str) -> str:
    """The single non-empty stderr line of a failed command; fails the test on a traceback or more lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{stderr}"
    return lines[0]
