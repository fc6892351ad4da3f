"""The Optuna side of `run_sweep` with a stand-in for the trial's child process (fast): grid and TPE samplers,
resuming a finished study, retrying interrupted trials and trials whose sweep died, the study definition guard,
and the files written beside the study. The real child process: tests/test_sweep_e2e.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ssl_toolkit import config
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.sweep import runner
from ssl_toolkit.sweep.agreement import spearman
from ssl_toolkit.sweep.space import parse_space
from ssl_toolkit.sweep.study import HOST, SweepSpec, process_token
from ssl_toolkit.sweep.trial import full_steps, warmup_override
from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tests" / "tiny.yaml")


def fake_metrics(lr: float, temperature: float) -> dict[str, float]:
    """Numbers a trial would report, as smooth functions of its values (k-NN best at lr 0.03)."""
    distance = abs(math.log10(lr) - math.log10(0.03))
    return {"knn_instdisc": 90.0 - 10 * distance - temperature, "knn_dino": 88.0 - distance, "rankme": 5.0 + lr,
            "lidar": 20.0 - 3 * distance, "alpha_req": 1.0 + distance, "linear": 85.0}  # fmt: skip


class FakeChild:
    """Stands in for `run_child`: writes the run folder's metrics.json from the trial's overrides."""

    def __init__(self, interrupt: set[float] = frozenset()) -> None:
        self.calls: list[dict[str, str]] = []
        self.interrupt = set(interrupt)  # lrs whose first run is stopped by SIGTERM (exit 143)

    def __call__(self, command: list[str], log_path: Path) -> int:
        values = dict(item.split("=", 1) for item in command[2:])
        self.calls.append(values)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lr, temperature = float(values["train.lr"]), float(values.get("objective.temperature", 0.2))
        if lr in self.interrupt:
            self.interrupt.discard(lr)
            log_path.write_text("ssl-toolkit: stopped: stopped by signal 15 after step 1, checkpoint saved\n")
            return 143
        run_dir = Path(values["train.output_dir"]) / values["train.run_name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        results = {"encoder": fake_metrics(lr, temperature), "setup": {"labelled": True}}
        (run_dir / "metrics.json").write_text(json.dumps(results))
        return 0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("sweep_study") / "images", per_class=8)


def _spec(images: Path, out: Path, params: list[str], *, sampler: str = "grid", select: str = "knn", **kw) -> SweepSpec:
    overrides = [f"data.root={images}", "train.epochs=20"]
    space = parse_space(params, recipe=TINY, overrides=overrides, sampler=sampler)
    return SweepSpec(recipe=TINY, params=space, select=select, trial_steps=4, out=out, overrides=overrides,
                     sampler=sampler, study="s", **kw)  # fmt: skip


def _quiet(_line: str) -> None:
    pass


def test_grid_runs_every_point_once_and_writes_the_results(images, tmp_path, monkeypatch) -> None:
    child = FakeChild()
    monkeypatch.setattr(runner, "run_child", child)
    spec = _spec(images, tmp_path / "out", ["train.lr=0.01,0.03,0.3", "objective.temperature=0.1,0.5"])
    study = runner.run_sweep(spec, log=_quiet)
    done = sorted((t.params["train.lr"], t.params["objective.temperature"]) for t in study.trials)
    assert done == [(lr, tau) for lr in (0.01, 0.03, 0.3) for tau in (0.1, 0.5)]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # every trial is its own run folder; the budget and the quick evaluation are set on each
    call = child.calls[0]
    assert call["train.max_steps"] == "4" and call["eval.floors"] == "false" and call["eval.max_train"] == "10000"
    # the warm-up keeps its share of the run: tiny's 2 of 20 epochs x 2 steps, so 2 x 4 / 40 -> at least 1 step
    assert call["train.warmup_steps"] == "1"
    out = spec.out
    summary = json.loads((out / "sweep.json").read_text())
    winner = summary["winner"]
    assert winner["params"] == {"train.lr": 0.03, "objective.temperature": 0.1}  # k-NN's best, by construction
    recipe = config.load(out / "winner.yaml")  # the winner's recipe loads and holds its values
    assert recipe.train.lr == 0.03 and recipe.objective.temperature == 0.1 and recipe.train.max_steps is None
    # the agreement of sweep.json against the same statistics computed here from the stored trials
    trials = sorted(summary["trials"], key=lambda t: t["number"])
    knn = [t["metrics"]["knn_instdisc"] for t in trials]
    rankme = [t["metrics"]["rankme"] for t in trials]
    assert summary["agreement"]["rankme"]["spearman"] == pytest.approx(spearman(rankme, knn))
    chosen = max(trials, key=lambda t: (t["metrics"]["rankme"], -t["number"]))
    assert summary["agreement"]["rankme"]["gap"] == pytest.approx(max(knn) - chosen["metrics"]["knn_instdisc"])
    assert summary["agreement"]["alpha_req"]["gap"] == pytest.approx(0.1 - 0.1)  # alpha 1 exactly at k-NN's best
    for name in ("sweep.md", "sweep.html", "trials.csv", "metrics_vs_knn.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "trials.csv").read_text().splitlines()) == 7
    # a rerun of the finished sweep runs nothing and writes the same results
    again = runner.run_sweep(spec, log=_quiet)
    assert len(again.trials) == 6 and len(child.calls) == 6
    assert json.loads((out / "sweep.json").read_text())["winner"] == winner


def test_tpe_samples_inside_the_space_and_resumes_to_more_trials(images, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner, "run_child", FakeChild())
    spec = _spec(images, tmp_path / "out", ["train.lr=0.001..1:log", "objective.temperature=0.1,0.5"],
                 sampler="tpe", select="lidar", trials=4)  # fmt: skip
    study = runner.run_sweep(spec, log=_quiet)
    assert len(study.trials) == 4 and all(0.001 <= t.params["train.lr"] <= 1 for t in study.trials)
    assert {t.params["objective.temperature"] for t in study.trials} <= {0.1, 0.5}
    first = [t.params for t in study.trials]
    spec.trials = 6  # the same study, asked for more: only the two new trials run, not the first ones again
    study = runner.run_sweep(spec, log=_quiet)
    assert len(study.trials) == 6 and [t.params for t in study.trials[:4]] == first
    assert len({t.params["train.lr"] for t in study.trials}) == 6  # the resumed sampler does not replay its seeds
    best = max(study.trials, key=lambda t: t.user_attrs["metrics"]["lidar"])
    assert yaml.safe_load((spec.out / "winner.yaml").read_text())["train"]["lr"] == best.params["train.lr"]


def test_an_interrupted_trial_is_retried_in_its_own_folder(images, tmp_path, monkeypatch) -> None:
    child = FakeChild(interrupt={0.3})
    monkeypatch.setattr(runner, "run_child", child)
    study = runner.run_sweep(_spec(images, tmp_path / "out", ["train.lr=0.03,0.3"]), log=_quiet)
    states = {t.number: (t.state.name, t.params["train.lr"]) for t in study.trials}
    failed = [n for n, (state, _) in states.items() if state == "FAIL"]
    assert len(failed) == 1 and states[failed[0]][1] == 0.3 and "error" not in study.trials[failed[0]].user_attrs
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0]]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == {"train.lr": 0.3}
    runs = [c["train.run_name"] for c in child.calls if c["train.lr"] == "0.3"]
    assert runs == [f"trial-{failed[0]}"] * 2  # the retry continues the same run folder (it resumes there)


def test_a_running_trial_whose_sweep_died_is_failed_and_retried(images, tmp_path, monkeypatch) -> None:
    child = FakeChild()
    monkeypatch.setattr(runner, "run_child", child)
    spec = _spec(images, tmp_path / "out", ["train.lr=0.03,0.3"])
    runner.run_sweep(spec, log=_quiet)  # creates the study (both points done)
    study = optuna.load_study(study_name="s", storage=spec.storage_url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = study.ask()  # a trial "running" in a sweep process that has died, on this host
    orphan.suggest_categorical("train.lr", [0.03, 0.3])
    for key, value in (("host", HOST), ("pid", int(dead.stdout)), ("pid_token", "gone"), ("origin", orphan.number)):
        orphan.set_user_attr(key, value)
    elsewhere = study.ask()  # one running on another machine: left to Optuna's heartbeat
    elsewhere.set_user_attr("host", f"not-{HOST}")
    elsewhere.set_user_attr("pid", 1)
    study = runner.run_sweep(spec, log=_quiet)
    by_number = {t.number: t for t in study.trials}
    assert by_number[orphan.number].state.name == "FAIL"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert by_number[elsewhere.number].state.name == "RUNNING"
    assert process_token(999_999_999) is None


def test_a_study_is_not_rerun_with_another_definition(images, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner, "run_child", FakeChild())
    runner.run_sweep(_spec(images, tmp_path / "out", ["train.lr=0.03,0.3"]), log=_quiet)
    with pytest.raises(ConfigError, match=r"study 's' in .* was started with other settings \(params: "):
        runner.run_sweep(_spec(images, tmp_path / "out", ["train.lr=0.03,1"]), log=_quiet)
    other = _spec(images, tmp_path / "out", ["train.lr=0.03,0.3"], storage=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ConfigError, match="holds the trials of another study"):
        runner.run_sweep(other, log=_quiet)


def test_a_failing_trial_keeps_its_error_and_is_not_retried(images, tmp_path, monkeypatch) -> None:
    def nan_at_high_lr(command: list[str], log_path: Path) -> int:
        values = dict(item.split("=", 1) for item in command[2:])
        if float(values["train.lr"]) > 0.1:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text("...\nssl-toolkit: stopped: loss is nan at step 3 (epoch 0)\n")
            return 1
        return FakeChild()(command, log_path)

    monkeypatch.setattr(runner, "run_child", nan_at_high_lr)
    study = runner.run_sweep(_spec(images, tmp_path / "out", ["train.lr=0.03,0.3"], select="rankme"), log=_quiet)
    assert len(study.trials) == 2
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.user_attrs["error"] == "exit 1: ssl-toolkit: stopped: loss is nan at step 3 (epoch 0)"
    assert "loss is nan" in (tmp_path / "out" / "sweep.md").read_text()


def test_warmup_is_scaled_to_the_trial_budget() -> None:
    recipe = config.load(REPO / "recipes" / "pretrain" / "dcl_fashion_mnist.yaml")
    full = full_steps(recipe)
    assert full == 5 * (60_000 // 256)  # 5 epochs of 234 full batches
    assert warmup_override(recipe, 234, full) == ["train.warmup_steps=20"]  # 100 / 1170 of 234 steps
    assert warmup_override(recipe, full, full) == []  # the whole run: unchanged
    no_warmup = config.load(REPO / "recipes" / "pretrain" / "dcl_fashion_mnist.yaml", ["train.warmup_steps=0"])
    assert warmup_override(no_warmup, 234, full) == []


def test_workers_share_a_study_through_its_storage(images, tmp_path, monkeypatch) -> None:
    child = FakeChild()
    monkeypatch.setattr(runner, "run_child", child)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    params = ["train.lr=0.01,0.03,0.1,0.3"]
    first = runner.run_sweep(_spec(images, tmp_path / "a", params, storage=storage, trials=2), log=_quiet)
    assert len(first.trials) == 2  # this worker was asked for two points only
    second = runner.run_sweep(_spec(images, tmp_path / "b", params, storage=storage), log=_quiet)
    lrs = sorted(t.params["train.lr"] for t in second.trials)
    assert lrs == [0.01, 0.03, 0.1, 0.3] and len(child.calls) == 4  # the second ran only the two left
    table = (tmp_path / "b" / "trials.csv").read_text().splitlines()
    assert len(table) == 5  # its results cover the whole study, the other worker's trials included


def test_the_trial_supervisor_forwards_one_signal_only() -> None:
    from ssl_toolkit.sweep.child import _ForwardOnce

    class Proc:
        def __init__(self) -> None:
            self.sent: list[int] = []

        def send_signal(self, signum: int) -> None:
            self.sent.append(signum)

    forward, proc = _ForwardOnce(), Proc()
    forward(15, None)  # before the command has started: kept for it
    forward.started(proc)
    forward(15, None)  # a dying sweep may deliver its parent-death signal more than once: dropped
    forward(2, None)
    assert proc.sent == [15]
