"""Faults injected into real runs: kills, signals, a second writer, a changed resume, divergence, a full disk,
damaged checkpoints and metrics, and exports others must read. See docs/reliability.md for the promises."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import stat
from pathlib import Path

import pytest
import yaml

from ssl_toolkit import config, engine
from ssl_toolkit.checkpoint import last_checkpoint
from ssl_toolkit.cli import main
from tests.engine.helpers import make_image_folder
from tests.reliability.helpers import TINY, cli, losses, one_line_error, start, tiny_args, wait_for_step

LONG = ["train.epochs=100", "train.max_steps=24", "train.save_every=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))  # 32 train images: 4 steps per epoch


def _reference(tmp_path: Path, data: Path, *extra: str) -> dict[int, float]:
    args = tiny_args(data, tmp_path / "ref", "ref", *extra)
    return losses(engine.train(config.load(args[1], args[2:])))


def test_random_kill_9_then_resume_is_exact(tmp_path: Path, data: Path) -> None:
    reference = _reference(tmp_path, data, *LONG)
    run = tmp_path / "runs" / "killed"
    rng = random.Random(0)
    for _ in range(3):  # kill -9 at a random point (mid-step, mid-save, mid-log), three times
        proc = start(*tiny_args(data, tmp_path / "runs", "killed", *LONG))
        wait_for_step(run, rng.randint(1, 12), proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = cli(*tiny_args(data, tmp_path / "runs", "killed", *LONG))
    assert done.returncode == 0, done.stderr
    assert losses(run) == reference  # bit-identical, every step


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_then_resume_is_exact(tmp_path: Path, data: Path, signum: int) -> None:
    extra = ["train.epochs=100", "train.max_steps=16", "train.save_every=1000", "train.log_every=1"]
    reference = _reference(tmp_path, data, *extra)
    run = tmp_path / "runs" / "signalled"
    proc = start(*tiny_args(data, tmp_path / "runs", "signalled", *extra))
    wait_for_step(run, 3, proc)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    stopped_at = int(one_line_error(err).split("after step ")[1].split(",")[0])
    assert last_checkpoint(run / "checkpoints").name == f"step-{stopped_at:08d}"  # saved on the way out
    done = cli(*tiny_args(data, tmp_path / "runs", "signalled", *extra))
    assert done.returncode == 0, done.stderr
    assert losses(run) == reference


def test_second_writer_is_refused_and_a_stale_lock_is_not(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "runs" / "shared"
    first = start(*tiny_args(data, tmp_path / "runs", "shared", "train.epochs=1000", "train.save_every=5"))
    try:
        wait_for_step(run, 2, first)
        second = cli(*tiny_args(data, tmp_path / "runs", "shared", "train.epochs=1000", "train.max_steps=4"))
        assert second.returncode == 2
        assert f"in use by train (pid {first.pid}" in one_line_error(second.stderr)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # leaves .lock and .lock.holder.json behind
        first.wait()
    reached = max(losses(run))
    resumed = cli(*tiny_args(data, tmp_path / "runs", "shared", "train.epochs=1000", f"train.max_steps={reached + 4}"))
    assert resumed.returncode == 0, resumed.stderr
    steps = list(losses(run))
    assert steps == sorted(set(steps)) and steps[-1] == reached + 4  # one writer at a time: no interleaved rows


PAYLOAD = {"name": "subprocess:Popen", "args": "touch PWNED", "shell": True}


def _plant(path: Path, objective: dict) -> None:
    recipe = yaml.safe_load(path.read_text())
    recipe["objective"] = objective
    path.write_text(yaml.safe_dump(recipe))


@pytest.mark.parametrize("objective", [PAYLOAD, {"name": "evil:Evil"}], ids=["popen", "planted-module"])
def test_a_malicious_run_folder_runs_nothing(tmp_path: Path, data: Path, objective: dict) -> None:
    run = engine.train(config.load(TINY, tiny_args(data, tmp_path / "runs", "shared")[2:] + ["train.max_steps=3"]))
    _plant(run / "recipe.yaml", objective)
    _plant(run / "encoder" / "recipe.yaml", objective)
    (run / "evil.py").write_text("open('PWNED', 'w').close()\nclass Evil: pass\n")  # imported = executed
    commands = [
        ["report", str(run)],
        ["export", str(run)],
        ["eval", str(run / "encoder"), "--max-train", "16", "--max-test", "8", "--no-floors", "--linear-epochs", "1"],
        tiny_args(data, tmp_path / "runs", "shared", "train.max_steps=4"),  # a resume reads the saved recipe
    ]
    for args in commands:
        proc = cli(*args, cwd=run)
        assert proc.returncode in (0, 2), proc.stderr
        assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_resume_with_a_changed_recipe(tmp_path: Path, data: Path, capsys) -> None:
    base = tiny_args(data, tmp_path / "runs", "changed", "train.max_steps=3")
    assert main(base) == 0
    run = tmp_path / "runs" / "changed"
    saved = (run / "recipe.yaml").read_bytes()
    capsys.readouterr()
    assert main([*base, "model.backbone=resnet18", "views.0.size=20"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "model.backbone: 'resnet10t' -> 'resnet18'" in line and "views.0.size: 16 -> 20" in line
    assert (run / "recipe.yaml").read_bytes() == saved  # refused before anything was written
    assert main(["export", str(run)]) == 0  # the run is intact
    assert main([*base, "train.resume=false"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main([*tiny_args(data, tmp_path / "runs", "changed", "train.max_steps=6", "train.lr=0.01")]) == 0
    out = capsys.readouterr().out
    assert "train.lr: 0.05 -> 0.01" in out and "train.max_steps: 3 -> 6" in out
    resumed = yaml.safe_load((run / "recipe.resumed-3.yaml").read_text())
    assert resumed["train"]["lr"] == 0.01 and (run / "recipe.yaml").read_bytes() == saved


def test_divergence_names_a_checkpoint_that_resumes(tmp_path: Path, data: Path, capsys) -> None:
    args = tiny_args(data, tmp_path / "runs", "div", "train.epochs=100", "train.save_every=2", "train.warmup_steps=0")
    assert main([*args, "train.max_steps=4"]) == 0  # healthy until step 4
    assert main([*args, "train.max_steps=12", "train.lr=1e20"]) == 1  # then a learning rate that diverges
    for _ in range(3):  # follow the advice: a lower lr, and going back one checkpoint when told to
        message = one_line_error(capsys.readouterr().err)
        assert "loss is nan" in message and "step-" in message, message
        if "whose weights are likely diverged" in message:  # the second divergence from one checkpoint
            shutil.rmtree(message.split("rm -r ")[1].split(")")[0])
        if main([*args, "train.max_steps=12", "train.lr=0.05"]) == 0:
            break
    else:
        pytest.fail("following the divergence advice never finished the run")
    assert max(losses(tmp_path / "runs" / "div")) == 12


def test_full_disk_during_a_save(tmp_path: Path, data: Path, monkeypatch, capsys) -> None:
    from accelerate import Accelerator

    real = Accelerator.save_state

    def fill_the_disk(self, output_dir=None, **kw):
        if "step-00000006" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "partial").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", fill_the_disk)
    assert main(tiny_args(data, tmp_path / "runs", "disk", "train.save_every=3")) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "No space left on device" in line and "step-00000003" in line
    ckpts = tmp_path / "runs" / "disk" / "checkpoints"
    assert last_checkpoint(ckpts).name == "step-00000003" and not list(ckpts.glob(".tmp-*"))


def test_a_damaged_checkpoint_is_one_line_with_the_way_back(tmp_path: Path, data: Path, capsys) -> None:
    args = tiny_args(data, tmp_path / "runs", "damaged", "train.save_every=2")
    assert main([*args, "train.max_steps=4"]) == 0
    last = last_checkpoint(tmp_path / "runs" / "damaged" / "checkpoints")
    (last / "optimizer.bin").write_bytes(b"this is not a checkpoint")
    capsys.readouterr()
    assert main([*args, "train.max_steps=6"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "step-00000004" in line and "to resume from step-00000002" in line and "weights_only" not in line
    shutil.rmtree(last)
    assert main([*args, "train.max_steps=6"]) == 0  # back from step 2


def test_a_torn_metrics_line_does_not_stop_resume(tmp_path: Path, data: Path) -> None:
    args = tiny_args(data, tmp_path / "runs", "torn", "train.save_every=2")
    assert main([*args, "train.max_steps=4"]) == 0
    run = tmp_path / "runs" / "torn"
    with (run / "metrics.csv").open("a") as f:
        f.write("5,0.41")  # a kill in the middle of a row
    assert main([*args, "train.max_steps=6"]) == 0
    assert list(losses(run)) == [1, 2, 3, 4, 5, 6]


def test_exports_are_readable_by_others(tmp_path: Path, data: Path) -> None:
    old = os.umask(0o022)
    try:
        run = engine.train(config.load(TINY, tiny_args(data, tmp_path / "runs", "perm", "train.max_steps=2")[2:]))
    finally:
        os.umask(old)
    encoder = run / "encoder"
    assert stat.S_IMODE(encoder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in encoder.iterdir()} == {0o644}


def test_evaluation_refuses_misaligned_classes(tmp_path: Path, data: Path) -> None:
    run = engine.train(config.load(TINY, tiny_args(data, tmp_path / "runs", "cls", "train.max_steps=2")[2:]))
    folder = tmp_path / "misaligned"
    shutil.copytree(data, folder)
    shutil.rmtree(folder / "test" / "class_1")
    proc = cli("eval", str(run / "encoder"), "--dataset", "image_folder", "--root", str(folder), "--no-floors")
    assert proc.returncode == 2
    assert "class_1" in one_line_error(proc.stderr)
