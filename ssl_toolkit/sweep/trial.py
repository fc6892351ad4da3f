"""One trial: its recipe overrides, its run in a child process, and the metrics its run folder holds afterwards.

A trial is an ordinary ``ssl-toolkit train RECIPE key=value ...`` run: the sweep's overrides, the trial's values,
``train.max_steps`` (the budget), ``train.output_dir``/``train.run_name`` (``<out>/trials/trial-<n>``) and a quick
evaluation (``eval.floors=false``, ``eval.max_train``/``max_test`` subsets). Its folder holds what any run holds
(``recipe.yaml``, ``metrics.csv``, ``encoder/``, ``metrics.json``, ``report.html``), and the same command resumes
it.

Each trial runs in a child process rather than in the sweep's own. A sweep runs for hours: a child returns all
its memory (allocator caches, CUDA context, loader workers, accelerate's process-wide state) when it ends, so the
twentieth trial starts as clean as the first; a crash (segfault, out-of-memory kill, a CUDA error that poisons the
context) fails that trial only; and every trial is exactly the command a user would run. The cost is a few
seconds of start-up per trial. The command runs under a supervisor (`ssl_toolkit.sweep.child`) that stops it when
the sweep dies, in its own session, so a terminal's Ctrl-C reaches the sweep only, which forwards exactly one
SIGINT (a second one would make the trial stop without its checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.sweep.space import override

EVAL_TRAIN = 10_000  # k-NN bank / RankMe / alpha-ReQ train images per trial (default of --eval-train)
# the encoder-row numbers of metrics.json a trial keeps (labels-based ones only when the data has labels)
TRIAL_METRICS = ("knn_instdisc", "knn_dino", "linear", "rankme", "alpha_req", "lidar", "dead_fraction")
INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # exit codes of a run stopped by a signal
STOP_TIMEOUT = 600  # seconds a signalled trial may take to finish its step and checkpoint
FOLDER_TIMEOUT = 600  # seconds to wait for a dying earlier attempt to release a trial's folder


def budget_overrides(*, steps: int, trials_dir: Path, run_name: str, eval_train: int | None,
                     eval_test: int | None) -> list[str]:  # fmt: skip
    """What the sweep sets on every trial: budget, folder, resume, a quiet log and the quick evaluation."""
    items = [
        f"train.max_steps={steps}",
        f"train.output_dir={trials_dir}",
        f"train.run_name={run_name}",
        "train.resume=true",
        "train.progress_bar=false",
        "eval.after_train=true",
        "eval.floors=false",
    ]
    items += [f"eval.max_train={eval_train}"] if eval_train else []
    items += [f"eval.max_test={eval_test}"] if eval_test else []
    return items


def full_steps(cfg: DictConfig) -> int:
    """Optimizer steps of the recipe's whole run (its epochs over the training images, capped by max_steps)."""
    from ssl_toolkit.builders import build_train_data

    tc = cfg.train
    steps = tc.epochs * (build_train_data(cfg).size // (tc.batch_size * tc.grad_accum))
    return steps if tc.max_steps is None else min(steps, tc.max_steps)


def warmup_override(cfg: DictConfig, steps: int, full: int) -> list[str]:
    """``train.warmup_steps`` scaled to a budget of ``steps``: the same share of the run as in the full recipe.

    A shorter ``train.max_steps`` compresses the cosine decay to the budget but keeps the warm-up's length; a
    100-step warm-up in a 200-step trial would be half of it instead of the recipe's 8 %. Nothing is changed when
    the budget is the whole run, when the recipe has no warm-up, or when it gives a ``train.warmup_fraction``.
    """
    tc = cfg.train
    if steps >= full or tc.warmup_steps == 0 or tc.get("warmup_fraction") is not None:
        return []
    return [f"train.warmup_steps={max(1, round(tc.warmup_steps * steps / full))}"]


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """A trial's values as ``key=value`` overrides."""
    return [override(key, value) for key, value in values.items()]


def has_labels(cfg: DictConfig) -> bool:
    """Whether the trials' evaluation will have labels (a labelled train split and a labelled test split)."""
    from ssl_toolkit.data import build_dataset

    name, root = cfg.eval.dataset or cfg.data.name, cfg.eval.root or cfg.data.root
    try:
        splits = [build_dataset(name=name, split=split, root=root, download=cfg.data.download) for split in
                  ("train", "test")]  # fmt: skip
    except ConfigError:  # no test split: the evaluation is label-free
        return False
    return all(s.labels is not None and bool((s.labels >= 0).any()) for s in splits)


def wait_for_folder(run_dir: Path, timeout: float = FOLDER_TIMEOUT) -> None:
    """Wait until no process holds the run folder's lock (an earlier attempt that is still checkpointing)."""
    from filelock import FileLock, Timeout

    from ssl_toolkit.run_lock import LOCK

    if not (run_dir / LOCK).exists():
        return
    lock = FileLock(str(run_dir / LOCK))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ConfigError(f"{run_dir} is still in use after {timeout:.0f} s; is another sweep running it?") from None
    lock.release()


def run_child(command: list[str], log_path: Path) -> int:
    """Run ``ssl-toolkit <command>`` in a child process (see the module docstring), output appended to the log.

    Returns:
        The child's exit code (negative: killed by that signal).

    Raises:
        KeyboardInterrupt: the sweep was interrupted; the child got one SIGINT and has stopped (or was killed
            after `STOP_TIMEOUT`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "ssl_toolkit.sweep.child", str(os.getpid()), *command]
    with log_path.open("a") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # finish the step, checkpoint, exit: the next sweep resumes it
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the supervisor leads its own process group
            raise


def failure(code: int, log_path: Path) -> str:
    """One line on why a trial's command failed: its last ``ssl-toolkit:`` line, else its last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("ssl-toolkit:")]
    last = (said or lines or ["(no output)"])[-1]
    return f"exit {code}: {last}"


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The encoder's numbers in the run's ``metrics.json`` (`TRIAL_METRICS`), plus whether labels were used."""
    results = json.loads((run_dir / "metrics.json").read_text())
    encoder = results.get("encoder", {})
    metrics: dict[str, Any] = {k: encoder[k] for k in TRIAL_METRICS if encoder.get(k) is not None}
    metrics["labelled"] = bool(results.get("setup", {}).get("labelled", False))
    return metrics
