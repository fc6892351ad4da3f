"""Per-step metrics to ``metrics.csv`` and the run's trackers, and the progress bar; main process only.

On resume the CSV keeps the rows up to the resumed step, so the file always reads as one run. While a training
run is in progress (`ssl_toolkit.trackers.start`), every logger of its folder sends its values through the
run's accelerate trackers (``train.log_with``); outside one, a logger writes TensorBoard itself.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> tuple[list[dict], list[str] | None]:
    """The complete rows of a metrics CSV and its columns; a torn last line (a kill mid-write) is dropped."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames) if reader.fieldnames else None
        rows = []
        for row in reader:
            try:
                if None in row or any(v is None for v in row.values()):
                    raise ValueError("wrong number of columns")
                int(float(row["step"]))
                rows.append(row)
            except (ValueError, KeyError, TypeError):
                break  # a partial row can only be the last one written
    return rows, fields


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
        self.tracking = None
        if not enabled:
            return
        if self.path.exists():
            rows, self._fields = read_rows(self.path)
            kept = [r for r in rows if int(float(r["step"])) <= resume_step]
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields or ["step"])
                writer.writeheader()
                writer.writerows(kept)
        from ssl_toolkit.trackers import active

        self.tracking = active(run_dir)  # the run's trackers, TensorBoard included when it is one of them
        if tensorboard and self.tracking is None:
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
        if self.tracking is not None:
            self.tracking.log({self.prefix + k: v for k, v in row.items() if k != "step"}, step)
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and math.isfinite(value):
                    self._tb.add_scalar(self.prefix + key, value, step)

    def histogram(self, step: int, name: str, values) -> None:
        """A TensorBoard histogram (main process, non-empty values only); the CSV has no place for it."""
        if self.enabled and self.tracking is not None:
            self.tracking.histogram(self.prefix + name, values, step)
        if self.enabled and self._tb is not None and len(values) > 0:
            self._tb.add_histogram(self.prefix + name, values, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class ProgressLog:
    """The progress bar (main process) and a metrics row every ``log_every`` steps, with images/s and the
    input-bound meter: ``data_wait``, the share of wall time spent waiting for the next batch (`timed`).

    Above ``WAIT_HINT`` (after the first window, which holds the workers' start) a one-time hint says what
    to change; ``wait_hint`` is that advice.

    Args:
        run_dir: the run folder (``metrics.csv``, ``tensorboard/``).
        total_steps, step: the run's length and where it starts (resume).
        images_per_step: images in one optimizer step over all processes.
        log_every: steps between rows (and the last step).
        main: whether this is the main process (only it writes and shows the bar).
        bar: show the bar at all.
        wait_hint: what to do when the run is input-bound (printed once).
    """

    WAIT_HINT = 0.3

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int,
        step: int,
        images_per_step: int,
        log_every: int,
        main: bool,
        bar: bool = True,
        wait_hint: str = "",
    ) -> None:
        from tqdm.auto import tqdm

        self.run_dir = run_dir
        self.logger = MetricsLogger(run_dir, enabled=main, resume_step=step)
        self.bar = tqdm(
            total=total_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
            disable=not (bar and main),
        )  # fmt: skip
        self.total_steps, self.log_every, self.images_per_step = total_steps, log_every, images_per_step
        self.t_last, self.step_last = time.perf_counter(), step
        self.waited, self.windows, self.wait_hint = 0.0, 0, wait_hint

    def timed(self, batches: Iterable[Any], finish: Callable[[Any], Any] = lambda b: b) -> Iterator[Any]:
        """Yield ``finish(batch)`` for each of ``batches``, adding the time spent waiting for it (and finishing
        it: views made on the training device are data work too) to the meter."""
        iterator = iter(batches)
        while True:
            t0 = time.perf_counter()
            try:
                batch = finish(next(iterator))
            except StopIteration:
                return
            self.waited += time.perf_counter() - t0
            yield batch

    def due(self, step: int) -> bool:
        """Whether ``update`` writes a row at ``step`` (so the caller gathers its values only then)."""
        return step % self.log_every == 0 or step == self.total_steps

    def update(self, step: int, row: Mapping[str, float], histograms: Mapping[str, Any] | None = None) -> None:
        """Advance the bar; at due steps write ``row`` (plus images/s) and any histograms."""
        self.bar.update(1)
        if not self.due(step):
            return
        now = time.perf_counter()
        elapsed = max(now - self.t_last, 1e-9)
        speed, wait = (step - self.step_last) * self.images_per_step / elapsed, min(self.waited / elapsed, 1.0)
        self.t_last, self.step_last, self.waited = now, step, 0.0
        head = {k: row[k] for k in ("epoch", "loss", "lr") if k in row}
        self.logger.log(step, {**head, "images_per_s": speed, **row, "data_wait": wait})  # earlier columns first
        for name, values in (histograms or {}).items():
            self.logger.histogram(step, name, values)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{speed:.0f}", wait=f"{wait:.0%}", lr=f"{row['lr']:.3g}")
        self.windows += 1
        if self.windows > 1 and wait > self.WAIT_HINT and self.wait_hint and not self.bar.disable:
            self.bar.write(f"hint: training waited for data {wait:.0%} of the time; {self.wait_hint}")
            self.wait_hint = ""  # once per run

    def close(self) -> None:
        """Close the bar and the logger; called from the loop's ``finally``, where an error in flight means the
        run failed, so its trackers end now with that status (a finished run's end with the engine's)."""
        self.bar.close()
        self.logger.close()
        from ssl_toolkit.trackers import active

        error, tracking = sys.exc_info()[1], active(self.run_dir)
        if error is not None and tracking is not None:
            tracking.end_failed(error)
