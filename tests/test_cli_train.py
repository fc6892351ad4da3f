"""A run that talks: ``ssl-toolkit train`` from another directory on a folder with two broken files prints a start
and an end summary, one line per skipped file and no warning source lines, writes run.json, skipped.txt and the
report without evaluation; ``eval`` and ``report`` on the run then point to skipped.txt instead of repeating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
RUN_JSON_TYPES = {  # the contract between the command line and the report (COMMON.md / docs/cli.md)
    "started": str, "finished": (str, type(None)), "wall_s": (float, type(None)), "step": int, "total_steps": int,
    "epochs": int, "steps_per_epoch": int, "images_per_s": (float, type(None)), "dataset": str,
    "root": (str, type(None)), "train_images": int, "labelled": bool, "classes": (int, type(None)),
    "skipped_files": int, "image_size": int, "views": str, "device": str, "precision": str, "processes": int,
    "machine": str, "resumed_from": (int, type(None)), "encoder": (str, type(None)),
}  # fmt: skip


@pytest.fixture(scope="module")
def talking_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("talk")
    data = make_image_folder(base / "images")
    (data / "train" / "class_0" / "bad.png").write_bytes(b"not an image")  # fails the header check (scan)
    whole = (data / "train" / "class_1" / "000.png").read_bytes()
    (data / "train" / "class_1" / "trunc.png").write_bytes(whole[: len(whole) // 2])  # fails to decode (worker)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_toolkit", "train", "tiny", f"data.root={data}", "data.num_workers=1",
         f"train.output_dir={base / 'runs'}", "eval.after_train=false"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600,
    )  # fmt: skip
    return {"proc": proc, "run": base / "runs" / "tiny", "data": data}


@pytest.mark.slow
def test_train_prints_start_and_end_summaries(talking_run: dict) -> None:
    proc, run = talking_run["proc"], talking_run["run"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for fragment in (
        f"pretraining tiny -> {run} (new run of 8)",
        f"image_folder at {talking_run['data']}: 33 training images, 2 classes, 1 skipped file",
        "views     2x16 per image",
        "4 per epoch x 2 epochs -> 8 steps of 8 images (8 x 1 process)",
        "device    cpu, fp32, 1 process (",
        "logs      metrics.csv, tensorboard",
        "done: tiny, step 8 of 8 in 0:",
        f"encoder   {run / 'encoder'}",
        f"report    {run / 'report.html'}",  # written without evaluation
        f"skipped   2 files, see {run / 'skipped.txt'}",
        f"next      ssl-toolkit eval {run / 'encoder'}",
    ):
        assert fragment in out, f"{fragment!r} not in:\n{out}"
    assert (run / "report.html").is_file() and not (run / "metrics.json").exists()


@pytest.mark.slow
def test_skipped_files_are_one_line_each_without_source_lines(talking_run: dict) -> None:
    stderr = talking_run["proc"].stderr
    lines = stderr.splitlines()
    assert sum("bad.png" in line for line in lines) == 1 and sum("trunc.png" in line for line in lines) == 1
    assert any(line.startswith("ssl-toolkit: skipped ") and "bad.png (UnidentifiedImageError" in line for line in lines)
    assert "UserWarning" not in stderr and "warnings.warn" not in stderr, stderr
    assert not [line for line in lines if line.startswith(" ")], stderr  # no quoted source lines
    skipped = (talking_run["run"] / "skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in skipped) == ["bad.png", "trunc.png"]


@pytest.mark.slow
def test_run_json_follows_the_contract(talking_run: dict) -> None:
    info = json.loads((talking_run["run"] / "run.json").read_text())
    assert set(info) == set(RUN_JSON_TYPES)
    wrong = {k: type(v).__name__ for k, v in info.items() if not isinstance(v, RUN_JSON_TYPES[k])}
    assert wrong == {}
    expected = {"step": 8, "total_steps": 8, "epochs": 2, "steps_per_epoch": 4, "dataset": "image_folder",
                "train_images": 33, "labelled": True, "classes": 2, "skipped_files": 2, "image_size": 16,
                "views": "2x16", "device": "cpu", "precision": "fp32", "processes": 1, "resumed_from": None,
                "encoder": str(talking_run["run"] / "encoder"), "root": str(talking_run["data"])}  # fmt: skip
    assert {k: info[k] for k in expected} == expected
    assert info["finished"] >= info["started"] and info["wall_s"] > 0 and info["images_per_s"] > 0
    assert "cores" in info["machine"]


@pytest.mark.slow
def test_eval_and_report_point_to_skipped_txt(talking_run: dict, capfd: pytest.CaptureFixture[str]) -> None:
    from ssl_toolkit import cli

    run = talking_run["run"]
    capfd.readouterr()
    evaluate = ["eval", str(run / "encoder"), "--no-floors", "--linear-epochs", "1", "--lidar-samples", "0"]
    for argv in (evaluate, ["report", str(run)]):
        assert cli.main(argv) == 0
        err = capfd.readouterr().err
        assert "bad.png" not in err and "trunc.png" not in err, err
        assert f"skipped files not repeated, see {run / 'skipped.txt'}" in err


@pytest.mark.parametrize(
    ("overrides", "run_json", "longer"),
    [
        (["train.epochs=3"], {"epochs": 3, "steps_per_epoch": 10}, "tiny data.root=D train.epochs=6"),
        # max_steps capped the run: more epochs would add no step, so the suggestion doubles max_steps
        (["train.max_steps=2"], {"epochs": 5, "steps_per_epoch": 10}, "tiny data.root=D train.max_steps=4"),
        # max_steps above the epochs' steps did not cap it: more epochs
        (["train.max_steps=90"], {"epochs": 2, "steps_per_epoch": 10},
         "tiny data.root=D train.max_steps=90 train.epochs=4"),
    ],
)  # fmt: skip
def test_next_command_trains_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], run_json: dict, longer: str
) -> None:
    import argparse

    from ssl_toolkit import config
    from ssl_toolkit.cli_train import _next
    from ssl_toolkit.recipe_files import resolve_recipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "D").mkdir()
    cfg = config.load(resolve_recipe("tiny"), ["data.root=D", "eval.after_train=true", *overrides])
    (tmp_path / "run.json").write_text(json.dumps(run_json))
    args = argparse.Namespace(recipe="tiny", overrides=["data.root=D", *overrides])
    assert _next(args, cfg, tmp_path) == [f"ssl-toolkit train {longer}   (trains longer: resumes)"]
