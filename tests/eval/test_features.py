"""Feature extraction, BatchNorm re-estimation and the `evaluate` pipeline with its floors."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Subset

from ssl_toolkit.data import ArrayDataset, build_eval_transform
from ssl_toolkit.eval.features import extract_features, recalibrate_batchnorm, reset_norm_affine
from ssl_toolkit.eval.run import evaluate, format_table


def _dataset(n: int = 120, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 3, 8, 8, generator=g) * 60
    for c in range(3):
        images[labels == c, :, :, 2 * c : 2 * c + 3] += 180  # a class-specific vertical band
    images = images.to(torch.uint8)
    return ArrayDataset(images, labels, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _transform():
    return build_eval_transform(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_pixels_when_no_encoder_and_dataset_order_kept() -> None:
    ds = _dataset()
    feats, labels = extract_features(None, ds, transform=_transform(), batch_size=7, progress=False)
    expected = torch.stack([_transform()(ds[i][0]).flatten() for i in range(len(ds))])
    assert torch.equal(feats, expected) and torch.equal(labels, ds.labels)


def test_in_memory_batches_equal_the_per_image_loader() -> None:
    """Datasets with ``image_batch`` are transformed a batch at a time: same values as the per-image DataLoader
    (kept for other datasets, here through a `Subset`), grey and unlabelled images included, resize included."""
    g = torch.Generator().manual_seed(1)
    grey = ArrayDataset(torch.randint(0, 256, (50, 1, 12, 12), generator=g, dtype=torch.uint8), mean=(0.5,) * 3,
                        std=(0.25,) * 3)  # fmt: skip
    resize = build_eval_transform(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    for model in (None, encoder):
        batched = extract_features(model, grey, transform=resize, batch_size=16, progress=False)
        per_image = extract_features(model, Subset(grey, range(len(grey))), transform=resize, batch_size=16,
                                     progress=False)  # fmt: skip
        assert torch.equal(batched[0], per_image[0]) and batched[0].shape[1] == (3 * 64 if model is None else 144)
        assert torch.equal(batched[1], per_image[1]) and batched[1].tolist() == [-1] * 50


def test_recalibrated_statistics_equal_the_data_moments() -> None:
    ds = _dataset()
    conv = nn.Conv2d(3, 4, 3, bias=False)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.Flatten())
    recalibrate_batchnorm(model, ds, transform=_transform(), num_batches=3, batch_size=40)
    with torch.no_grad():
        out = conv(torch.stack([_transform()(ds[i][0]) for i in range(len(ds))]))  # all 120 = 3 x 40
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)
    assert not bn.training and bn.momentum == 0.1  # eval mode, momentum restored


def test_reset_norm_affine_undoes_zero_init() -> None:
    bn = nn.BatchNorm1d(3)
    nn.init.zeros_(bn.weight)
    nn.init.ones_(bn.bias)
    reset_norm_affine(nn.Sequential(bn))
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))


def test_evaluate_reports_encoder_and_both_floors(tmp_path) -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    random_encoder = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    results = evaluate(
        encoder,
        train_set=_dataset(),
        test_set=_dataset(60, seed=1),
        transform=_transform(),
        random_encoder=random_encoder,
        out_path=tmp_path / "m.json",
        progress=False,
        linear_epochs=5,
        rankme_samples=100,
    )
    assert set(results) >= {"encoder", "raw_pixels", "random_init", "definitions"}
    assert results["raw_pixels"]["knn_instdisc"] > 90.0  # class-specific bands: pixels separate them
    table = format_table(results)
    assert table.count("\n") == 4 and "random_init" in table
    assert (tmp_path / "m.json").is_file()
