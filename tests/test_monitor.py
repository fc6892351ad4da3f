"""Online monitoring: RankMe/alpha-ReQ/LiDAR/k-NN on a fixed subset, collapse flag, best export, no effect on
training. alpha-ReQ and LiDAR are checked against numpy re-computations (covariance eigenvalues + polyfit; the
generalised eigenproblem of the per-sample scatters) on the same images and seeded views."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from ssl_toolkit import config, engine
from ssl_toolkit.data import ArrayDataset
from ssl_toolkit.eval import extract_view_features
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


def _noisy_view(x: torch.Tensor) -> torch.Tensor:  # a random "augmentation" drawn from the global RNG
    return x.float() / 255 + 0.2 * torch.randn(x.shape)


def _effective_rank(x: torch.Tensor) -> float:  # RankMe written out again, in float64
    s = torch.linalg.svdvals(x.double())
    p = s / s.sum() + 1e-7
    return math.exp(-(p * p.log()).sum().item())


def _numpy_alpha(h: np.ndarray) -> float:  # covariance eigenvalues, ranks 11..100, weights 1/i on squared residuals
    lam = np.linalg.eigvalsh(np.cov(h.T))[::-1]
    ranks = np.arange(11, min(100, len(lam)) + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(lam[ranks - 1]), 1, w=1 / np.sqrt(ranks))
    return -slope


def _numpy_lidar(z: np.ndarray, delta: float = 1e-4, eps: float = 1e-7) -> float:  # S_b x = lambda S_w x
    n, v, d = z.shape
    mu = z.mean(axis=1)
    s_b = (mu - mu.mean(axis=0)).T @ (mu - mu.mean(axis=0)) / (n - 1)
    within = (z - mu[:, None]).reshape(n * v, d)
    s_w = within.T @ within / (n * (v - 1)) + delta * np.eye(d)
    lam = np.clip(np.linalg.eigvals(np.linalg.solve(s_w, s_b)).real, 0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def test_scores_match_a_direct_computation_and_leave_training_state_alone() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(192, 24), nn.BatchNorm1d(24))
    projector = nn.Linear(24, 8)
    monitor = Monitor(
        _dataset(), _transform, samples=48, knn_bank=32, seed=1, view_transform=_noisy_view, lidar_samples=20,
        lidar_views=3,
    )  # fmt: skip
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
    first = Subset(monitor.subset, range(20))  # LiDAR's images: the first of the subset, views from the seed
    hv = extract_view_features({"e": encoder}, first, transform=_noisy_view, n_views=3, seed=1, progress=False)["e"]
    assert out["rankme"] == pytest.approx(_effective_rank(h), rel=1e-4)
    assert out["rankme_projector"] == pytest.approx(_effective_rank(z), rel=1e-4)
    assert out["alpha_req"] == pytest.approx(_numpy_alpha(h.double().numpy()), rel=1e-4)
    assert out["lidar"] == pytest.approx(_numpy_lidar(hv.double().numpy()), rel=1e-4)
    assert 0.0 <= out["knn_dino"] <= 100.0
    assert out["best"] and not out["collapse"]
    again = monitor.score(encoder, projector, torch.device("cpu"))
    assert not again["best"]  # same score is not a new best
    assert again["lidar"] == out["lidar"]  # the same seeded views at every check


def test_lidar_is_off_without_a_view_transform_or_samples() -> None:
    encoder, projector = nn.Sequential(nn.Flatten(), nn.Linear(192, 16)), nn.Identity()
    assert "lidar" not in Monitor(_dataset(), _transform, samples=32, knn_bank=16).score(encoder, projector, "cpu")
    off = Monitor(_dataset(), _transform, samples=32, knn_bank=16, view_transform=_noisy_view, lidar_samples=0)
    assert "lidar" not in off.score(encoder, projector, "cpu")


def test_a_collapsed_encoder_is_flagged() -> None:
    class OneDirection(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1, keepdim=True) * torch.ones(1, 64)  # rank 1

    out = Monitor(_dataset(), _transform, samples=32, knn_bank=16).score(OneDirection(), nn.Identity(), "cpu")
    assert out["rankme"] < 1.5 and out["collapse"]


def test_a_collapse_during_training_is_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from ssl_toolkit.cli_warnings import WarningLines
    from ssl_toolkit.monitor import TrainingMonitor

    class OneDirection(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1, keepdim=True) * torch.ones(1, 64)

    watch = TrainingMonitor(_dataset(), tmp_path, step=0, size=8, samples=32, knn_bank=16, collapse_fraction=0.05,
                            export_best=False, export=lambda *a, **k: tmp_path)  # fmt: skip
    stream = io.StringIO()
    with WarningLines(stream):
        watch.check(7, OneDirection(), nn.Identity(), torch.device("cpu"))
    watch.close()
    assert stream.getvalue().startswith("ssl-toolkit: warning: step 7: RankMe 1.0 is below 5% of the embedding width")
    assert stream.getvalue().count("\n") == 1 and capsys.readouterr().out == ""  # not mixed into stdout


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
    lidars = column(watched / "monitor.csv", "lidar")  # on by default: simclr views of the subset's first images
    assert len(lidars) == 3 and all(1.0 <= v <= 64 for v in lidars)
    assert len(column(watched / "monitor.csv", "alpha_req")) == 3
    saved = json.loads((watched / "encoder_best" / "config.json").read_text())["ssl_toolkit"]["monitor"]
    assert saved["rankme"] == pytest.approx(max(rankmes))
    assert "knn_dino" in saved and "lidar" in saved
