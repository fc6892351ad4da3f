"""End to end through the command line: train (tiny recipe) -> export -> eval, then `export` and `eval` alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from ssl_toolkit.export import load_encoder
from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_toolkit", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.mark.slow
def test_tiny_recipe_train_export_eval(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images")
    proc = _cli(
        "train", "recipes/tests/tiny.yaml", f"data.root={data}", f"train.output_dir={tmp_path}",
        "monitor.every=4", "monitor.samples=24", "monitor.knn_bank=16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "tiny"
    for name in (
        "recipe.yaml",
        "metrics.csv",
        "metrics.json",
        "encoder/model.safetensors",
        "encoder/config.json",
        "monitor.csv",
        "report.html",
        "report_curves.png",
        "report_monitor.png",
        "report_views.png",
        "report_neighbours.png",
    ):
        assert (run / name).is_file(), name
    assert "kNN instdisc" in proc.stdout and "raw_pixels" in proc.stdout and "random_init" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    for model in ("encoder", "raw_pixels", "random_init"):
        assert 0.0 <= metrics[model]["knn_instdisc"] <= 100.0 and metrics[model]["rankme"] >= 1.0

    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "kNN instdisc" in page and "random_init" in page

    encoder = load_encoder(run / "encoder")
    x = torch.randn(2, 3, 16, 16)
    timm_encoder = timm.create_model(f"local-dir:{run / 'encoder'}", pretrained=True, num_classes=0).eval()
    assert torch.equal(encoder(x), timm_encoder(x))

    proc = _cli("export", str(run))  # re-export from checkpoints/last gives the same weights
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(load_encoder(run / "encoder")(x), encoder(x))

    out = tmp_path / "eval.json"
    proc = _cli(
        "eval",
        str(run / "encoder"),
        "--dataset",
        "image_folder",
        "--root",
        str(data),
        "--no-floors",
        "--linear-epochs",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["encoder"]["knn_instdisc"] == metrics["encoder"]["knn_instdisc"]  # deterministic features
    assert "raw_pixels" not in again
