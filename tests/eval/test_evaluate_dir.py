"""`evaluate_encoder_dir` cannot silently lie: recorded data by default (and says so), other data in its own
metrics file, matching class names, label-free evaluation of unlabelled or test-less folders, a bounded
raw-pixel floor."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssl_toolkit import cli
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.evaluate import evaluate_encoder_dir, format_table, recorded_target
from ssl_toolkit.export import export_encoder
from ssl_toolkit.model import build_encoder
from tests.engine.helpers import make_image_folder

TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}
QUICK = {"floors": False, "linear_epochs": 1, "lidar_samples": 6, "lidar_views": 2, "progress": False}


def _export(run: Path, *, size: int = 16, recipe: dict | None = None, extra: dict | None = None) -> Path:
    encoder = build_encoder("resnet10t", backbone_kwargs=TINY)
    return export_encoder(
        encoder, run / "encoder", backbone="resnet10t", backbone_kwargs=TINY, input_size=(size, size),
        mean=(0.5,) * 3, std=(0.25,) * 3, recipe_name="t",
        recipe_yaml=yaml.safe_dump(recipe) if recipe is not None else None, extra=extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("evaldata") / "images")


def _run(tmp_path: Path, root: Path) -> Path:
    recipe = {"data": {"name": "image_folder", "root": str(root)}, "eval": {"dataset": None, "root": None}}
    return _export(tmp_path / "run", recipe=recipe, extra={"dataset": "image_folder"})


def test_recorded_data_by_default_and_named_in_the_table(tmp_path: Path, data: Path) -> None:
    encoder_dir = _run(tmp_path, data)
    said: list[str] = []
    results = evaluate_encoder_dir(encoder_dir, log=said.append, **QUICK)
    assert "recorded with the export" in said[0] and str(data) in said[0]
    setup = results["setup"]
    assert (setup["dataset"], setup["root"], setup["eval_size"]) == ("image_folder", str(data), 16)
    assert (setup["train_size"], setup["test_size"], setup["runs_own_data"]) == (32, 16, True)
    assert setup["classes"] == ["class_0", "class_1"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["setup"]["metrics_path"] == str(tmp_path / "run" / "metrics.json")
    table = format_table(written)
    assert f"dataset image_folder at {data}; train 32 / test 16; image size 16 px" in table
    for column in ("kNN instdisc", "kNN dino", "linear", "RankMe", "alpha-ReQ", "LiDAR", "dead dims"):
        assert column in table
    m = written["encoder"]
    assert m["lidar"] >= 1.0 and m["rankme"] >= 1.0 and 0.0 <= m["dead_fraction"] <= 1.0


def test_other_data_never_overwrites_the_runs_metrics(tmp_path: Path, data: Path) -> None:
    encoder_dir = _run(tmp_path, data)
    own = tmp_path / "run" / "metrics.json"
    own.write_text('{"sentinel": 1}\n')
    other = make_image_folder(tmp_path / "other photos", per_class=8)
    said: list[str] = []
    results = evaluate_encoder_dir(encoder_dir, root=str(other), log=said.append, **QUICK)
    assert "--root given" in said[0] and "the run's own: image_folder at" in said[0]
    assert results["setup"]["metrics_path"] == str(tmp_path / "run" / "metrics-image_folder-other_photos.json")
    assert (tmp_path / "run" / "metrics-image_folder-other_photos.json").is_file()
    evaluate_encoder_dir(encoder_dir, size=24, **QUICK)  # the run's data at another size
    assert (tmp_path / "run" / f"metrics-image_folder-{data.name}-24px.json").is_file()
    assert own.read_text() == '{"sentinel": 1}\n'


def test_class_names_must_match(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "mismatch"
    shutil.copytree(data, root)
    shutil.rmtree(root / "test" / "class_1")
    shutil.copytree(root / "test" / "class_0", root / "test" / "class_9")
    encoder_dir = _run(tmp_path, root)
    with pytest.raises(ConfigError, match=r"missing from test: \['class_1'\]; only in test: \['class_9'\]"):
        evaluate_encoder_dir(encoder_dir, **QUICK)
    assert cli.main(["eval", str(encoder_dir), "--no-floors"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class_1" in err and "class_9" in err


def test_unlabelled_folder_gets_a_label_free_evaluation(tmp_path: Path, data: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, png in enumerate(sorted((data / "train").rglob("*.png"))):
        shutil.copy(png, flat / f"{i:03d}.png")
    encoder_dir = _run(tmp_path, flat)
    said: list[str] = []
    results = evaluate_encoder_dir(encoder_dir, log=said.append, **QUICK)
    assert "label-free" in said[1] and "no labels" in said[1]
    m = results["encoder"]
    assert "knn_dino" not in m and "linear" not in m
    assert {"rankme", "alpha_req", "lidar", "norm_mean", "dim_std_mean", "dead_fraction"} <= set(m)
    assert results["setup"]["labelled"] is False and results["setup"]["test_size"] is None
    table = format_table(results)
    assert "kNN" not in table and "LiDAR" in table and "no labelled test split: label-free" in table


def test_labelled_folder_without_a_test_split_is_label_free(tmp_path: Path, data: Path) -> None:
    encoder_dir = _run(tmp_path, data / "train")  # class sub-folders, no train/ and test/
    results = evaluate_encoder_dir(encoder_dir, **QUICK)
    assert "no labelled test split" in results["setup"]["label_free_reason"]
    assert "rankme" in results["encoder"] and "knn_dino" not in results["encoder"]


def test_what_the_export_records(tmp_path: Path, data: Path) -> None:
    plain = _export(tmp_path / "a", extra={"dataset": "fashion_mnist"})
    assert recorded_target(plain) == {"dataset": "fashion_mnist", "root": None, "size": 16}
    with pytest.raises(ConfigError, match="--root given without --dataset"):
        evaluate_encoder_dir(plain, root=str(data), **QUICK)
    recipe = {"data": {"name": "image_folder", "root": "/pretrain"}, "eval": {"dataset": "fashion_mnist"}}
    assert recorded_target(_export(tmp_path / "b", recipe=recipe, extra={"dataset": "image_folder"}))["dataset"] == (
        "fashion_mnist"  # the run evaluated on eval.dataset, not on its pretraining data
    )
    explicit = {"dataset": "image_folder", "eval_dataset": "image_folder", "eval_root": str(data)}
    assert recorded_target(_export(tmp_path / "c", recipe=recipe, extra=explicit))["root"] == str(data)
    with pytest.raises(ConfigError, match="records no dataset"):
        evaluate_encoder_dir(_export(tmp_path / "d"), **QUICK)


def _feature_widths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Records the width of every feature matrix the evaluation extracts, by its progress label."""
    from ssl_toolkit.eval import run

    widths: dict[str, int] = {}
    original = run.extract_features

    def spy(model, dataset, **kwargs):
        feats, labels = original(model, dataset, **kwargs)
        widths[kwargs["desc"]] = feats.shape[1]
        return feats, labels

    monkeypatch.setattr(run, "extract_features", spy)
    return widths


def test_raw_pixel_floor_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = make_image_folder(tmp_path / "big", per_class=4, size=48)
    recipe = {"data": {"name": "image_folder", "root": str(big)}}
    encoder_dir = _export(tmp_path / "run", size=48, recipe=recipe)
    widths = _feature_widths(monkeypatch)
    results = evaluate_encoder_dir(encoder_dir, **{**QUICK, "floors": True})
    assert widths["raw_pixels train"] == 3 * 32 * 32  # not 3 * 48 * 48
    assert results["setup"]["raw_pixels_size"] == 32 and "here 32 px" in results["definitions"]["raw_pixels"]


def _fake_fashion_mnist(root: Path, size: int = 16) -> Path:
    """IDX files of a small two-class Fashion-MNIST stand-in (grey noise, a bright left or right half by class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n, dtype=np.uint8) % 2
        left = (np.arange(size) < size // 2)[None, None, :]
        bright = np.where(labels[:, None, None] == 1, left, ~left)  # (n, 1, size)
        images = rng.integers(0, 60, size=(n, size, size)) + 180 * bright
        head = struct.pack(">4B3I", 0, 0, 8, 3, n, size, size)
        (root / f"{split}-images-idx3-ubyte").write_bytes(head + images.astype(np.uint8).tobytes())
        (root / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">4BI", 0, 0, 8, 1, n) + labels.tobytes())
    return root


def test_raw_pixel_floor_of_grey_images_reads_one_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_fashion_mnist(tmp_path)
    recipe = {"data": {"name": "fashion_mnist", "root": str(root)}}
    encoder_dir = _export(tmp_path / "run", recipe=recipe, extra={"dataset": "fashion_mnist"})
    widths = _feature_widths(monkeypatch)
    results = evaluate_encoder_dir(encoder_dir, **{**QUICK, "floors": True})
    assert widths["raw_pixels train"] == widths["raw_pixels test"] == 16 * 16  # the grey values once, not 3 copies
    assert widths["encoder train"] == 64  # the encoder still sees three channels
    assert results["raw_pixels"]["knn_dino"] == 100.0  # the bright half separates the classes
    assert "greyscale datasets: one channel" in results["definitions"]["raw_pixels"]
