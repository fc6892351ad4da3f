"""The Optuna study of a sweep: its storage, its definition, and which trials are still to run or to retry.

Storage is an Optuna RDB URL (``sqlite:///<out>/study.db`` by default). SQLite serves several sweep processes on
one machine (one per GPU, say); for several machines give every worker the same server URL (``postgresql://``,
``mysql://``) — SQLite over a network file system does not lock reliably.

Resuming. Every completed trial is stored with its metrics and is never run again. A trial that did not finish
is retried, at most `MAX_RETRY` times, as a new trial with the same values that continues the same run folder
from its last checkpoint:

- interrupted (Ctrl-C, or its child killed by a signal): it is stored as failed without an ``error``, and
  `requeue` adds its retry at the next start;
- killed with its sweep (``kill -9``, a crash): it stays "running" in the storage. On the same machine `requeue`
  sees that the sweep process that ran it (host, pid and process start time, stored with the trial) is gone and
  fails it at once; from another machine Optuna's heartbeat fails it `GRACE_S` seconds after its sweep's last
  sign of life (``RDBStorage(heartbeat_interval=..., grace_period=...)``) and adds the retry through
  ``RetryHeartbeatStaleTrialCallback``.

A trial that failed for a reason that would repeat (a recipe error, a NaN loss) keeps its ``error`` and counts as
done. The study records the sweep's definition (recipe, overrides, parameters, selection, budget); rerunning
with a different one is refused, so a study never mixes trials of two sweeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.sweep.space import Param, grid
from ssl_toolkit.sweep.trial import EVAL_TRAIN

HEARTBEAT_S = 60  # a running sweep marks its trial alive this often
GRACE_S = 180  # ... and another worker fails the trial this long after the last mark
MAX_RETRY = 2  # retries of one unfinished trial
HOST = socket.gethostname()


@dataclass
class SweepSpec:
    """Everything `ssl-toolkit sweep` was asked to do (the command line, checked)."""

    recipe: str
    params: list[Param]
    select: str
    trial_steps: int
    out: Path
    overrides: list[str] = field(default_factory=list)
    sampler: str = "grid"
    trials: int | None = None  # grid: at most this many points (default all); tpe: this many trials
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    eval_train: int | None = EVAL_TRAIN  # None: every train image
    eval_test: int | None = None
    scale_warmup: bool = True

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

    @property
    def target(self) -> int:
        """How many trials the sweep runs (grid points, or --trials)."""
        if self.sampler == "grid":
            return min(len(grid(self.params)), self.trials or len(grid(self.params)))
        return self.trials or 10

    def definition(self, recipe_hash: str) -> dict[str, Any]:
        """What must not change between the runs of one study (not the seed, nor how many trials)."""
        return {
            "recipe": recipe_hash,
            "overrides": list(self.overrides),
            "params": [p.describe() for p in self.params],
            "select": self.select,
            "trial_steps": self.trial_steps,
            "sampler": self.sampler,
            "eval_train": self.eval_train,
            "eval_test": self.eval_test,
            "scale_warmup": self.scale_warmup,
        }


def recipe_hash(cfg: Any) -> str:
    """Hash of a resolved recipe without its paths (workers on other machines keep their data elsewhere)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    data["data"].pop("root", None), data["eval"].pop("root", None)
    for key in ("output_dir", "run_name"):
        data["train"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with heartbeats and retries of stale trials."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a database URL; e.g. sqlite:///sweep.db or postgresql://host/db")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait for other workers' locks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
        except Exception as err:  # noqa: BLE001 - sqlalchemy/driver errors vary by backend
            raise ConfigError(f"--storage {url}: cannot open it ({type(err).__name__}: {err})") from None


def open_study(spec: SweepSpec, storage: Any, definition: dict[str, Any]) -> Any:
    """Create the study or load it, refusing one that was started with another definition."""
    import optuna

    name = spec.study or "sweep"
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    saved = study.user_attrs.get("definition")
    if saved is None:
        study.set_user_attr("definition", definition)
    elif saved != definition:
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in definition.items() if saved.get(k) != v]
        raise ConfigError(
            f"study {name!r} in {spec.storage_url} was started with other settings ({'; '.join(changed)}); rerun it "
            "with the same recipe and arguments, or start another with --study NAME"
        )
    study.sampler = _sampler(spec, n_trials=len(study.trials))
    return study


def _sampler(spec: SweepSpec, *, n_trials: int) -> Any:
    import optuna

    if spec.sampler == "grid":
        space = {p.key: list(p.choices) for p in spec.params}
        return optuna.samplers.GridSampler(space, seed=spec.seed)
    # seeded by how far the study is, so a resumed TPE does not replay its first random points
    startup = min(10, max(2, spec.target // 3))
    return optuna.samplers.TPESampler(seed=spec.seed + n_trials, n_startup_trials=startup)


def process_token(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``), telling it from a later process with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def _alive(pid: int, token: str | None) -> bool:
    if token is not None:
        return process_token(pid) == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _superseded(trials: list[Any]) -> set[int]:
    """Numbers of the trials a later trial retries."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def requeue(study: Any) -> list[int]:
    """Fail this machine's trials whose sweep died, and queue a retry of every unfinished trial; returns their
    numbers (see the module docstring)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    dead = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("host") == HOST
        and t.user_attrs.get("pid") not in (None, os.getpid())
        and not _alive(t.user_attrs["pid"], t.user_attrs.get("pid_token"))
    ]
    # `tell` runs the sampler's after_trial hook, which the grid sampler may answer with study.stop(), allowed
    # only inside optimize(); this trial was never the sampler's business in this process, so a plain one tells
    sampler, study.sampler = study.sampler, optuna.samplers.RandomSampler()
    try:
        for number in dead:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    finally:
        study.sampler = sampler
    trials = study.get_trials(deepcopy=False)
    superseded = _superseded(trials)
    retried = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        for t in trials:
            unfinished = t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in superseded
            if unfinished and len(t.system_attrs.get("retry_history", [])) < MAX_RETRY:
                retry(study, t)
                retried.append(t.number)
    return retried


def pending(study: Any, spec: SweepSpec) -> bool:
    """Whether a trial is waiting (a retry) or the sweep has not yet started `SweepSpec.target` trials."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    superseded = _superseded(trials)
    live = [t for t in trials if t.number not in superseded]
    if any(t.state == TrialState.WAITING for t in live):
        return True
    started = [t for t in live if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)]
    if spec.sampler == "grid":
        points = {json.dumps(p, sort_keys=True) for p in grid(spec.params)}
        return len(points & {json.dumps(t.params, sort_keys=True) for t in started}) < spec.target
    return len(started) < spec.target
