"""Online monitoring: RankMe/k-NN on a fixed subset, collapse flag, best export, no effect on training."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_toolkit import config, engine
from ssl_toolkit.data import ArrayDataset
from ssl_toolkit.monitor import Monitor
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tests" / "tiny.yaml"


def _dataset(n: int = 64) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = (torch.rand(n, 8, 8, generator=g) * 60 + labels[:, None, None] * 50).to(torch.uint8)
    return ArrayDataset(images, labels, mean=(0.5,) * 3, std=(0.25,) * 3)


def _transform(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


def _effective_rank(x: torch.Tensor) -> float:  # RankMe written out again, in float64
    s = torch.linalg.svdvals(x.double())
    p = s / s.sum() + 1e-7
    return math.exp(-(p * p.log()).sum().item())


def test_scores_match_a_direct_computation_and_leave_training_state_alone() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.BatchNorm1d(16), nn.ReLU())
    projector = nn.Linear(16, 8)
    monitor = Monitor(_dataset(), _transform, samples=48, knn_bank=32, seed=1)
    torch.manual_seed(5)
    expected_draw = torch.rand(1)
    torch.manual_seed(5)
    out = monitor.score(encoder, projector, torch.device("cpu"))
    assert torch.equal(torch.rand(1), expected_draw)  # no RNG consumed
    assert encoder.training and projector.training  # train mode restored
    encoder.eval()
    x = torch.stack([_transform(monitor.subset[i][0]) for i in range(48)])
    with torch.no_grad():
        h = encoder(x)
        z = projector(h)
    assert out["rankme"] == pytest.approx(_effective_rank(h), rel=1e-4)
    assert out["rankme_projector"] == pytest.approx(_effective_rank(z), rel=1e-4)
    assert 0.0 <= out["knn_dino"] <= 100.0
    assert out["best"] and not out["collapse"]
    assert not monitor.score(encoder, projector, torch.device("cpu"))["best"]  # same score is not a new best


def test_a_collapsed_encoder_is_flagged() -> None:
    class OneDirection(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1, keepdim=True) * torch.ones(1, 64)  # rank 1

    out = Monitor(_dataset(), _transform, samples=32, knn_bank=16).score(OneDirection(), nn.Identity(), "cpu")
    assert out["rankme"] < 1.5 and out["collapse"]


def test_engine_logs_monitor_rows_exports_the_best_and_trains_the_same(tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState

    data = make_image_folder(tmp_path / "images")
    base = [f"data.root={data}", f"train.output_dir={tmp_path / 'runs'}", "eval.after_train=false"]
    AcceleratorState._reset_state(reset_partial_state=True)
    plain = engine.train(config.load(TINY, [*base, "train.run_name=plain"]))
    AcceleratorState._reset_state(reset_partial_state=True)
    watched = engine.train(
        config.load(
            TINY,
            [
                *base,
                "train.run_name=watched",
                "monitor.every=3",
                "monitor.samples=24",
                "monitor.knn_bank=16",
                "monitor.export_best=true",
            ],
        )  # fmt: skip
    )

    def column(path: Path, name: str) -> list[float]:
        with path.open() as f:
            return [float(r[name]) for r in csv.DictReader(f)]

    assert column(plain / "metrics.csv", "loss") == column(watched / "metrics.csv", "loss")
    assert column(watched / "monitor.csv", "step") == [3.0, 6.0, 8.0]  # every 3 steps and the last
    rankmes = column(watched / "monitor.csv", "rankme")
    saved = json.loads((watched / "encoder_best" / "config.json").read_text())["ssl_toolkit"]["monitor"]
    assert saved["rankme"] == pytest.approx(max(rankmes))
    assert "knn_dino" in saved
