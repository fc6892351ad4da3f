"""``ssl-toolkit sweep`` end to end, as a user runs it: real trials in child processes on a generated image folder,
killed with ``kill -9`` in the middle of a trial and rerun. Completed trials are not run again, the killed one
resumes from its checkpoint, and its numbers equal those of the same trial trained without interruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from ssl_toolkit import cli, config
from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tests" / "tiny.yaml")
COMPARED = ("knn_instdisc", "knn_dino", "rankme", "alpha_req", "lidar")


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before the moment to kill it:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the sweep did not reach its second trial's first checkpoint in time")
        time.sleep(0.05)


def _encoder_metrics(run_dir: Path) -> dict[str, float]:
    encoder = json.loads((run_dir / "metrics.json").read_text())["encoder"]
    return {k: encoder[k] for k in COMPARED}


@pytest.mark.slow
def test_sweep_resumes_after_kill_9_with_the_same_result(tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "images", per_class=16)  # 32 train images: 4 steps per epoch
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "ssl_toolkit", "sweep", TINY, f"data.root={images}", "train.epochs=10",
        "train.save_every=2", "eval.lidar_samples=8", "eval.linear_epochs=1",
        "--param", "train.lr=0.01,0.05", "--select", "rankme", "--trial-steps", "16", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done, killed = out / "trials" / "trial-0" / "metrics.json", out / "trials" / "trial-1" / "checkpoints"
    _wait_for(lambda: done.is_file() and any(killed.glob("step-*")), first)
    first.kill()  # SIGKILL: no handler runs in the sweep; its trial gets SIGTERM from the kernel and checkpoints
    first.wait()
    assert not (out / "trials" / "trial-1" / "metrics.json").exists()  # it was killed mid-trial
    stamp, log_size = done.stat().st_mtime_ns, (out / "logs" / "trial-0.log").stat().st_size

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "trial 1 did not finish: it will be retried" in rerun.stdout
    # the completed trial was not run again
    assert done.stat().st_mtime_ns == stamp and (out / "logs" / "trial-0.log").stat().st_size == log_size
    study = optuna.load_study(study_name="tiny-sweep", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    states = [(t.number, t.state.name, t.params["train.lr"]) for t in study.trials]
    assert states == [(0, "COMPLETE", states[0][2]), (1, "FAIL", states[1][2]), (2, "COMPLETE", states[1][2])]
    assert study.trials[2].system_attrs["failed_trial"] == 1
    # the retry resumed the killed run from its last checkpoint, in the same folder
    log = (out / "logs" / "trial-1.log").read_text()
    assert "resuming at step" in log and "stopped by signal 15" in log, log
    assert config.load(out / "winner.yaml").train.lr in (0.01, 0.05)
    assert (out / "sweep.html").is_file() and (out / "metrics_vs_knn.png").is_file()

    # the same trial trained without interruption (in this process, from the trial's own resolved recipe)
    trial = out / "trials" / "trial-1"
    assert cli.main(["train", str(trial / "recipe.yaml"), f"train.output_dir={tmp_path / 'ref'}"]) == 0
    resumed, uninterrupted = _encoder_metrics(trial), _encoder_metrics(tmp_path / "ref" / "trial-1")
    assert resumed == pytest.approx(uninterrupted, rel=1e-6, abs=1e-9)
