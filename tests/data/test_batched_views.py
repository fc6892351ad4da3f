"""Batched (kornia) views: same recipes as the per-image pipeline, per-image randomness, exact seeding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_toolkit.data import ArrayDataset, EpochSampler, build_view_transform, build_view_transforms
from ssl_toolkit.data.batched_views import BatchViewCollate, PositionedImages, build_batch_view_transform
from ssl_toolkit.errors import ConfigError, DataError

MEAN, STD = (0.286,) * 3, (0.353,) * 3
GROUPS = [
    {"name": "global", "n": 2, "size": 28, "scale": [0.2, 1.0], "augment": "simclr", "strength": 0.5},
    {"name": "local", "n": 3, "size": 12, "scale": (0.05, 0.3), "augment": "simclr", "strength": 1.0},
]


def _images(n: int = 12) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen), None, mean=MEAN, std=STD)


def _loader(dataset, transforms, *, epoch: int, workers: int) -> DataLoader:
    sampler = EpochSampler(len(dataset), seed=5)
    sampler.set_epoch(epoch)
    collate = BatchViewCollate(transforms, n=len(dataset), seed=5)
    return DataLoader(PositionedImages(dataset), batch_size=4, sampler=sampler, collate_fn=collate, num_workers=workers)


def test_none_preset_matches_the_per_image_pipeline() -> None:
    images = torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8)
    batched = build_batch_view_transform(augment="none", size=16, mean=MEAN, std=STD)
    single = build_view_transform(augment="none", size=16, mean=MEAN, std=STD)
    assert torch.allclose(batched(images), torch.stack([single(x) for x in images]), atol=1e-6)


def test_views_are_seeded_by_position_not_by_workers() -> None:
    dataset = _images()
    transforms, kinds, n_global = build_view_transforms(GROUPS, mean=MEAN, std=STD, batched=True)
    assert kinds == ("global",) * 2 + ("local",) * 3 and n_global == 2
    runs = [list(_loader(dataset, transforms, epoch=1, workers=w)) for w in (0, 2)]
    for a, b in zip(*runs):
        assert torch.equal(a.ids, b.ids)
        assert [v.shape for v in a.views] == [(4, 3, 28, 28)] * 2 + [(4, 3, 12, 12)] * 3
        assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
    epoch2 = list(_loader(dataset, transforms, epoch=2, workers=0))
    assert not torch.equal(runs[0][0].views[0], epoch2[0].views[0])
    ids = torch.cat([batch.ids for batch in runs[0]])
    assert sorted(ids.tolist()) == list(range(len(dataset)))


def test_randomness_is_per_image_and_leaves_the_global_rng_alone() -> None:
    same = torch.full((8, 3, 28, 28), 100, dtype=torch.uint8)
    same[:, :, 4:20, 6:14] = 250  # an off-centre block, so different crops give different views
    transform = build_batch_view_transform(augment="simclr", size=28, scale=(0.2, 0.6), mean=MEAN, std=STD)
    collate = BatchViewCollate([transform], n=8, seed=0)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    (view,) = collate([(image, i) for i, image in enumerate(same)]).views
    assert torch.equal(torch.rand(1), expected_next)
    distinct = {tuple(v.flatten().tolist()) for v in view.round(decimals=4)}
    assert len(distinct) == 8  # identical inputs, eight different views


def test_greyscale_images_stay_grey_and_normalised() -> None:
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8).expand(16, 3, 28, 28)
    transform = build_batch_view_transform(
        augment="simclr", size=28, strength=1.0, jitter_p=1.0, mean=(0.5,) * 3, std=(0.5,) * 3, greyscale=True
    )
    out = transform(images)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5


def test_same_validation_as_the_per_image_pipeline() -> None:
    with pytest.raises(ConfigError, match="scale must be"):
        build_batch_view_transform(size=28, scale=(0.5, 0.2), mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="unknown augment preset"):
        build_batch_view_transform(augment="fancy", size=28, mean=MEAN, std=STD)


def test_images_of_different_sizes_are_a_clear_error() -> None:
    collate = BatchViewCollate([lambda x: x], n=2)
    batch = [(torch.zeros(3, 28, 28, dtype=torch.uint8), 0), (torch.zeros(3, 30, 30, dtype=torch.uint8), 1)]
    with pytest.raises(DataError, match="view_backend=per_image"):
        collate(batch)
