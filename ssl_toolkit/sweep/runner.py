"""`run_sweep`: run a sweep's trials on Optuna until none is left, then write its results.

One trial at a time per process (``study.optimize(n_trials=1)`` in a loop, so retries and the stopping rule are
re-read from the storage between trials, where other workers may have changed them); run several processes on
one storage for parallel trials. Each trial's numbers are stored with it (``user_attrs["metrics"]``), so any
worker can write the results of the whole study.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.sweep.agreement import selection_score
from ssl_toolkit.sweep.space import format_value
from ssl_toolkit.sweep.study import (
    HOST,
    SweepSpec,
    open_storage,
    open_study,
    pending,
    process_token,
    recipe_hash,
    requeue,
)
from ssl_toolkit.sweep.trial import (
    INTERRUPTED,
    budget_overrides,
    failure,
    full_steps,
    read_metrics,
    run_child,
    trial_overrides,
    wait_for_folder,
    warmup_override,
)

WARMUP_KEYS = ("train.warmup_steps", "train.warmup_fraction")
MARKER = ".study"  # in <out>/trials: the study whose trials the folder holds


class TrialFailed(Exception):
    """A trial failed for a reason that would repeat (recipe error, NaN loss); stored as its ``error``."""


class TrialInterrupted(Exception):
    """A trial's run was stopped by a signal; it is retried (`ssl_toolkit.sweep.study.requeue`)."""


def _describe(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items())


def _summary(metrics: dict[str, Any]) -> str:
    names = {"knn_instdisc": "knn", "rankme": "rankme", "lidar": "lidar", "alpha_req": "alpha_req"}
    return ", ".join(f"{short} {metrics[key]:.4g}" for key, short in names.items() if metrics.get(key) is not None)


def _scaled_warmup(spec: SweepSpec, values: dict[str, Any]) -> list[str]:
    """The warm-up override for this trial's budget, unless the user set the warm-up (see `warmup_override`)."""
    from ssl_toolkit import config

    given = [o.partition("=")[0] for o in spec.overrides] + list(values)
    if not spec.scale_warmup or any(key in WARMUP_KEYS for key in given):
        return []
    cfg = config.load(spec.recipe, [*spec.overrides, *trial_overrides(values)])
    return warmup_override(cfg, spec.trial_steps, full_steps(cfg))


def make_objective(spec: SweepSpec, log: Callable[[str], None]) -> Callable[[Any], float]:
    """The Optuna objective: one trial's run (a child process) and its selection score."""
    from ssl_toolkit import config

    trials_dir = (spec.out / "trials").resolve()

    def fail(trial: Any, message: str) -> None:
        trial.set_user_attr("error", message)
        log(f"trial {trial.number} failed: {message}")
        raise TrialFailed(message)

    def objective(trial: Any) -> float:
        # a retry (a copy of the unfinished trial, user attributes included) continues its first run folder
        origin = trial.user_attrs.get("origin", trial.number)
        values = {p.key: p.suggest(trial) for p in spec.params}
        run_dir = trials_dir / f"trial-{origin}"
        for key, value in (("origin", origin), ("host", HOST), ("pid", os.getpid()),
                           ("pid_token", process_token(os.getpid())), ("run_dir", str(run_dir))):  # fmt: skip
            trial.set_user_attr(key, value)
        budget = budget_overrides(steps=spec.trial_steps, trials_dir=trials_dir, run_name=run_dir.name,
                                  eval_train=spec.eval_train, eval_test=spec.eval_test)  # fmt: skip
        try:
            overrides = [*spec.overrides, *trial_overrides(values), *_scaled_warmup(spec, values), *budget]
            config.load(spec.recipe, overrides)
        except ConfigError as err:
            fail(trial, str(err))
        again = f" (retry of trial {origin})" if origin != trial.number else ""
        log(f"trial {trial.number}{again}: {_describe(values)} -> {run_dir}")
        wait_for_folder(run_dir)
        start = time.perf_counter()
        log_path = spec.out / "logs" / f"trial-{origin}.log"
        code = run_child(["train", spec.recipe, *overrides], log_path)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        if code in INTERRUPTED or code < 0:
            log(f"trial {trial.number} was stopped by a signal ({failure(code, log_path)}); it will be retried")
            raise TrialInterrupted(f"exit {code}")
        if code != 0:
            fail(trial, failure(code, log_path))
        try:
            metrics = read_metrics(run_dir)
        except (OSError, ValueError) as err:
            fail(trial, f"no metrics.json in {run_dir}: {err}")
        trial.set_user_attr("metrics", metrics)
        log(f"trial {trial.number} done in {trial.user_attrs['seconds'] / 60:.1f} min: {_summary(metrics)}")
        score = selection_score(spec.select, metrics)
        return -math.inf if score is None else score  # a trial without the metric is never the winner

    return objective


def _claim_out_dir(spec: SweepSpec) -> None:
    """Refuse an output folder that holds another study's trials (their folders would be resumed)."""
    marker = spec.out / "trials" / MARKER
    name = spec.study or "sweep"
    if marker.is_file() and marker.read_text().strip() != f"{spec.storage_url} {name}":
        raise ConfigError(
            f"{spec.out} holds the trials of another study ({marker.read_text().strip()}); use another --out"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{spec.storage_url} {name}\n")


def run_sweep(spec: SweepSpec, *, log: Callable[[str], None] = print) -> Any:
    """Run the sweep's remaining trials (none when it is complete), write its results; return the Optuna study.

    Raises:
        ConfigError: the storage cannot be opened, or holds this study with another definition.
        KeyboardInterrupt: interrupted; the running trial has checkpointed and is retried by the next run.
    """
    import optuna

    from ssl_toolkit import config
    from ssl_toolkit.sweep.outputs import write_outputs

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial
    spec.out.mkdir(parents=True, exist_ok=True)
    _claim_out_dir(spec)
    definition = spec.definition(recipe_hash(config.load(spec.recipe, spec.overrides)))
    study = open_study(spec, open_storage(spec.storage_url), definition)
    objective = make_objective(spec, log)
    for _ in range(3 * spec.target + 3):  # every trial, and each at most MAX_RETRY times again
        for number in requeue(study):
            log(f"trial {number} did not finish: it will be retried")
        if not pending(study, spec):
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed, TrialInterrupted))
    write_outputs(study, spec, log=log)
    return study


__all__ = ["SweepSpec", "TrialFailed", "TrialInterrupted", "make_objective", "run_sweep"]
