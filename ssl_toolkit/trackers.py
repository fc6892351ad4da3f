"""Experiment trackers through accelerate: ``train.log_with: [tensorboard, mlflow, wandb, ...]``.

accelerate drives every tracker it integrates (``Accelerator(log_with=...)``, ``init_trackers`` with the resolved
recipe as the run's parameters, ``accelerator.log`` per step, ``end_training``); this module adds what a run folder
needs around that:

- TensorBoard writes to ``RUN/tensorboard`` (accelerate's `TensorBoardTracker`, named "tensorboard", under the
  run folder) and drops the events after a resumed checkpoint, as ``metrics.csv`` does (``purge_step``);
- a resumed run continues the same MLflow run and W&B run: their ids are kept in ``RUN/trackers.json``;
- MLflow without ``MLFLOW_TRACKING_URI`` writes to ``sqlite:///<train.output_dir>/mlflow.db`` with artifacts in
  ``<train.output_dir>/mlartifacts`` (no server; MLflow's own default is a database in the working directory);
- the export (at the end of training, `Tracking.log_artifacts`) and, after ``train``, the final metrics and the
  report (`publish`, which reopens the runs by id because the engine ends them) reach the trackers that store
  files (MLflow, W&B).

`active` hands the tracking of a run in progress to every `MetricsLogger` of that run folder (the monitor's
too), so each logged value reaches each tracker. This module imports accelerate only inside its functions, so
validating ``train.log_with`` costs nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import ConfigError, did_you_mean

# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS) -> the package each needs
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
REOPENED = ("tensorboard", "mlflow", "wandb")  # trackers `publish` writes the final metrics to
IDS_FILE = "trackers.json"
_ACTIVE: dict[str, Tracking] = {}


def check_log_with(names: list[Any]) -> None:
    """``train.log_with``: known tracker names, each once, each installed.

    Raises:
        ConfigError: one line naming the tracker and the fix.
    """
    for name in names:
        if name not in TRACKER_PACKAGES:
            raise ConfigError(
                f"unknown tracker {name!r} in train.log_with{did_you_mean(name, TRACKER_PACKAGES)}; accepted: "
                f"{', '.join(TRACKER_PACKAGES)} (or [] for metrics.csv only)"
            )
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            extra = " (pip install 'ssl-toolkit[track]')" if name == "mlflow" else ""
            raise ConfigError(
                f"train.log_with names {name!r} but its package {TRACKER_PACKAGES[name]!r} is not installed; "
                f"install it{extra} or remove it from train.log_with"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"train.log_with names a tracker twice: {list(names)}")


def accelerator_kwargs(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """``Accelerator`` keywords for the recipe's trackers; nothing is created before `start`."""
    from accelerate.tracking import TensorBoardTracker

    names = list(cfg.train.log_with)
    log_with = [TensorBoardTracker("tensorboard", str(run_dir)) if n == "tensorboard" else n for n in names]
    return {"log_with": log_with or None, "project_dir": str(run_dir)}


def flat_config(cfg: Any) -> dict[str, Any]:
    """The resolved recipe as ``{"train.lr": 0.3, ...}``: numbers, booleans and strings (lists as YAML-ish text)."""
    from omegaconf import OmegaConf

    def walk(node: Any, prefix: str) -> Iterable[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node if isinstance(node, (bool, int, float, str)) else json.dumps(node)

    return dict(walk(OmegaConf.to_container(cfg, resolve=True), ""))


def read_ids(run_dir: Path) -> dict[str, str]:
    """The tracker run ids of a run folder (``trackers.json``); plain strings only."""
    try:
        data = json.loads((run_dir / IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}
    )


def _mlflow_kwargs(cfg: Any, run_dir: Path, run_id: str | None) -> dict[str, Any]:
    """MLflowTracker keywords; without ``MLFLOW_TRACKING_URI`` the store is a database beside the run folders."""
    kwargs: dict[str, Any] = {"run_name": run_dir.name, "run_id": run_id}
    if "MLFLOW_TRACKING_URI" not in os.environ:
        import mlflow

        out = Path(cfg.train.output_dir).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
        kwargs["logging_dir"] = (out / "mlartifacts").as_uri()  # artifact root of a new experiment
    return kwargs


def _wandb_kwargs(run_dir: Path, run_id: str | None) -> dict[str, Any]:
    return {"name": run_dir.name, "dir": str(run_dir), "id": run_id, "resume": "allow"}


class Tracking:
    """The trackers of one training run, as accelerate holds them: per-step values, histograms, artifacts.

    Values are logged on the main process only (accelerate's trackers are main-process objects).
    """

    def __init__(self, accelerator: Any, run_dir: Path) -> None:
        self.accelerator, self.run_dir = accelerator, run_dir
        self.writer = None  # TensorBoard's SummaryWriter, for histograms
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                self.writer = tracker.tracker

    def log(self, values: Mapping[str, float], step: int) -> None:
        finite = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
        if self.accelerator.trackers and finite:
            self.accelerator.log(finite, step=step)

    def histogram(self, name: str, values: Any, step: int) -> None:
        if self.writer is not None and len(values) > 0:
            self.writer.add_histogram(name, values, step)

    def log_artifacts(self, path: Path, name: str) -> None:
        """A file or folder as artifact ``name`` in each tracker that stores files (MLflow, W&B)."""
        if self.accelerator.is_main_process:
            for tracker in self.accelerator.trackers:
                log_files(tracker, [path], name)

    def ids(self) -> dict[str, str]:
        """Run ids of the trackers that can be continued (MLflow, W&B)."""
        out = {}
        for tracker in self.accelerator.trackers:
            if tracker.name == "mlflow":
                out["mlflow"] = tracker.tracker.info.run_id
            elif tracker.name == "wandb":
                out["wandb"] = tracker.run.id
        return out

    def close(self) -> None:
        """Stop handing this tracking to new loggers (the engine's ``end_training`` ends the trackers)."""
        if _ACTIVE.get(str(self.run_dir)) is self:
            del _ACTIVE[str(self.run_dir)]

    def end_failed(self, error: BaseException) -> None:
        """End the trackers of a run that stopped on an error (MLflow status FAILED, or KILLED for a signal)."""
        self.close()
        if not self.accelerator.is_main_process:
            return
        killed = isinstance(error, KeyboardInterrupt) or hasattr(error, "signum")
        for tracker in self.accelerator.trackers:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="KILLED" if killed else "FAILED")
            tracker.finish()
        self.accelerator.trackers.clear()  # a later end_training finishes nothing twice


def start(accelerator: Any, cfg: Any, run_dir: Path, step: int) -> Tracking:
    """Start the recipe's trackers at ``step`` (continuing the runs of ``trackers.json`` on a resume).

    The resolved recipe is each new tracker run's configuration (W&B's is updated on a resume; MLflow refuses
    to change a parameter, so a resume's changes are only in ``recipe.resumed-<step>.yaml``); the tracker run ids
    are written to ``trackers.json``.
    """
    from accelerate.tracking import TensorBoardTracker

    names = list(cfg.train.log_with)
    saved = read_ids(run_dir) if step > 0 else {}
    for tracker in accelerator.log_with:
        if isinstance(tracker, TensorBoardTracker):
            tracker.init_kwargs["purge_step"] = step + 1  # a resume drops events after its checkpoint
    if names:
        init_kwargs: dict[str, dict[str, Any]] = {}
        if "mlflow" in names and accelerator.is_main_process:
            init_kwargs["mlflow"] = _mlflow_kwargs(cfg, run_dir, saved.get("mlflow"))
        if "wandb" in names:
            init_kwargs["wandb"] = _wandb_kwargs(run_dir, saved.get("wandb"))
        try:
            accelerator.init_trackers(cfg.name, config=None, init_kwargs=init_kwargs)
        except Exception as err:  # a tracker's own error (no server, no login): one line, not its traceback
            first = (str(err).strip().splitlines() or [""])[0]
            raise ConfigError(
                f"the trackers {names} did not start: {type(err).__name__}: {first}; check their settings "
                "(docs/cli.md) or remove them from train.log_with"
            ) from err
        params = flat_config(cfg)
        for tracker in accelerator.trackers:
            # a resumed TensorBoard or MLflow run keeps the parameters it started with (MLflow refuses changes)
            if not (step > 0 and (tracker.name == "tensorboard" or tracker.name == "mlflow" and "mlflow" in saved)):
                tracker.store_init_configuration(params)
    tracking = Tracking(accelerator, run_dir)
    if accelerator.is_main_process and tracking.ids():
        (run_dir / IDS_FILE).write_text(json.dumps(tracking.ids(), indent=1) + "\n")
    _ACTIVE[str(run_dir)] = tracking
    return tracking


def active(run_dir: Path) -> Tracking | None:
    """The tracking of the run in progress in ``run_dir`` in this process, if any."""
    return _ACTIVE.get(str(run_dir))


def log_files(tracker: Any, paths: Iterable[Path], name: str) -> None:
    """Store files and folders as artifact ``name`` in a tracker that stores files: MLflow (under ``name/``) and
    W&B (one artifact); other trackers are left alone."""
    paths = [Path(p) for p in paths]
    if tracker.name == "mlflow":
        for path in paths:
            if path.is_dir():
                tracker.log_artifacts(str(path), artifact_path=name)
            else:
                tracker.log_artifact(str(path), artifact_path=name)
    elif tracker.name == "wandb" and paths:
        import wandb

        artifact = wandb.Artifact(f"{tracker.run.name or tracker.run.id}-{name}".replace("/", "-"), type=name)
        for path in paths:
            (artifact.add_dir if path.is_dir() else artifact.add_file)(str(path))
        tracker.run.log_artifact(artifact)


def _reopen(name: str, cfg: Any, run_dir: Path, ids: Mapping[str, str]) -> Any:
    """A started accelerate tracker that continues the run's own run of ``name``, or None."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    if name == "tensorboard":
        tracker = TensorBoardTracker("tensorboard", str(run_dir))
    elif name == "mlflow" and "mlflow" in ids:
        tracker = MLflowTracker(cfg.name, **_mlflow_kwargs(cfg, run_dir, ids["mlflow"]))
    elif name == "wandb" and "wandb" in ids:
        tracker = WandBTracker(cfg.name, **_wandb_kwargs(run_dir, ids["wandb"]))
    else:
        return None
    tracker.start()
    return tracker


def publish(cfg: Any, run_dir: Path, values: Mapping[str, float], step: int, files: Iterable[Path]) -> list[str]:
    """After ``train``: ``values`` (final metrics) at ``step`` and ``files`` (the report) as artifacts, in the
    run's own TensorBoard, MLflow and W&B runs. Returns the trackers written to.

    W&B takes the final metrics as the run summary (its steps only move forward).
    """
    ids, written = read_ids(run_dir), []
    for name in (n for n in cfg.train.log_with if n in REOPENED):
        tracker = _reopen(name, cfg, run_dir, ids)
        if tracker is None:
            continue
        if name == "wandb":
            tracker.run.summary.update(dict(values))
        else:
            tracker.log(dict(values), step=step)
        log_files(tracker, files, "report")
        tracker.finish()
        written.append(name)
    return written
