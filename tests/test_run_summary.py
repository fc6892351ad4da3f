"""The run's account of itself without training: summary lines, the skipped-files list, atomic run.json."""

from __future__ import annotations

import json
from pathlib import Path

from ssl_toolkit.run_summary import (
    RUN_JSON,
    end_lines,
    read_run_json,
    read_skipped,
    record_skipped,
    start_lines,
    views_text,
    write_json,
)

INFO = {
    "name": "mine", "resumed_from": 120, "total_steps": 400, "labelled": False, "classes": None,
    "skipped_files": 0, "root": "/photos", "dataset": "image_folder", "train_images": 1000,
    "views": "2x96 + 6x48", "steps_per_epoch": 15, "epochs": 27, "images_per_step": 128, "batch_size": 32,
    "processes": 2, "grad_accum": 2, "device": "cuda:0 NVIDIA H200", "precision": "bf16", "machine": "x, 2 cores",
}  # fmt: skip


def test_start_lines_of_a_resumed_unlabelled_run() -> None:
    lines = start_lines(INFO, Path("runs/mine"), ["tensorboard", "mlflow"])
    assert lines[0] == "pretraining mine -> runs/mine (resuming at step 120 of 400)"
    assert lines[1] == "  data      image_folder at /photos: 1000 training images, unlabelled"
    assert "15 per epoch x 27 epochs -> 400 steps of 128 images (32 x 2 processes x 2 accumulated)" in lines[3]
    assert lines[4].startswith("  device    cuda:0 NVIDIA H200, bf16, 2 processes")
    assert lines[5] == "  logs      metrics.csv, tensorboard, mlflow"


def test_start_line_of_a_run_already_past_its_steps() -> None:
    done = {**INFO, "resumed_from": 126, "total_steps": 120}  # resumed with a lower train.max_steps
    assert start_lines(done, Path("r"), [])[0] == (
        "pretraining mine -> r (at step 126 of 120: nothing to train; raise train.epochs or train.max_steps to go on)"
    )


def test_views_text() -> None:
    assert views_text([{"n": 2, "size": 28}, {"n": 4, "size": 14}]) == "2x28 + 4x14"


def test_skipped_list_round_trips_and_grows_without_duplicates(tmp_path: Path) -> None:
    assert record_skipped(tmp_path, {"/a b/x.png": "OSError: broken\nstream\tend"}) == 1
    assert record_skipped(tmp_path, {"/a b/x.png": "again", "/y.jpg": "ValueError: empty"}) == 2
    assert read_skipped(tmp_path) == {"/a b/x.png": "OSError: broken stream end", "/y.jpg": "ValueError: empty"}


def test_run_json_is_replaced_whole_and_read_back(tmp_path: Path) -> None:
    write_json(tmp_path / RUN_JSON, {"step": 3})
    write_json(tmp_path / RUN_JSON, {"step": 4, "finished": None})
    assert read_run_json(tmp_path) == {"step": 4, "finished": None}
    assert [p.name for p in tmp_path.iterdir()] == [RUN_JSON]  # no temporary file left behind
    (tmp_path / RUN_JSON).write_text("{torn")
    assert read_run_json(tmp_path) == {}


def test_end_lines_say_where_everything_is(tmp_path: Path) -> None:
    info = {"step": 400, "total_steps": 400, "wall_s": 3725.0, "images_per_s": 1234.5, "skipped_files": 3,
            "encoder": str(tmp_path / "encoder")}  # fmt: skip
    (tmp_path / RUN_JSON).write_text(json.dumps(info))
    lines = end_lines(tmp_path, metrics=None, report=tmp_path / "report.html", next_commands=["ssl-toolkit eval X"])
    assert lines[0] == f"done: {tmp_path.name}, step 400 of 400 in 1:02:05 (1234 images/s)"
    assert f'timm.create_model("local-dir:{tmp_path / "encoder"}", pretrained=True, num_classes=0).eval()' in lines[1]
    assert lines[2:] == [
        f"  report    {tmp_path / 'report.html'}",
        f"  skipped   3 files, see {tmp_path / 'skipped.txt'}",
        "  next      ssl-toolkit eval X",
    ]
