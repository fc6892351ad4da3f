"""Per-step metrics to ``metrics.csv`` and TensorBoard, written by the main process only.

On resume the CSV keeps the rows up to the resumed step, so the file always reads as one run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path


class MetricsLogger:
    """Append ``{name: float}`` rows keyed by step; a no-op on non-main processes.

    ``name`` picks the file (``<name>.csv``); TensorBoard tags of any name but "metrics" get a ``<name>/`` prefix.
    """

    def __init__(
        self, run_dir: Path, *, enabled: bool, resume_step: int = 0, tensorboard: bool = True, name: str = "metrics"
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / f"{name}.csv"
        self.prefix = "" if name == "metrics" else f"{name}/"
        self._fields: list[str] | None = None
        self._tb = None
        if not enabled:
            return
        if self.path.exists():
            with self.path.open() as f:
                rows = list(csv.DictReader(f))
            if rows:
                self._fields = list(rows[0].keys())
            kept = [r for r in rows if int(float(r["step"])) <= resume_step]
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields or ["step"])
                writer.writeheader()
                writer.writerows(kept)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                self._tb = None

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        if self._fields is None:
            self._fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writeheader()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and math.isfinite(value):
                    self._tb.add_scalar(self.prefix + key, value, step)

    def histogram(self, step: int, name: str, values) -> None:
        """A TensorBoard histogram (main process, non-empty values only); the CSV has no place for it."""
        if self.enabled and self._tb is not None and len(values) > 0:
            self._tb.add_histogram(self.prefix + name, values, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
