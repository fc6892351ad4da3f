"""Views: group expansion, per-(seed, epoch, index) determinism across loaders, sampler, errors, collate."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ssl_toolkit.data import (
    ArrayDataset,
    EpochSampler,
    ViewDataset,
    build_eval_transform,
    build_view_transform,
    build_view_transforms,
    collate_views,
)
from ssl_toolkit.errors import ConfigError

MEAN, STD = (0.286,) * 3, (0.353,) * 3
GROUPS = [
    {"name": "global", "n": 2, "size": 28, "scale": [0.2, 1.0], "augment": "simclr", "strength": 0.5},
    {"name": "local", "n": 3, "size": 12, "scale": (0.05, 0.3), "augment": "simclr", "strength": 1.0},
]


def _views_dataset(n: int = 6, seed: int = 3) -> ViewDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen)
    base = ArrayDataset(images, mean=MEAN, std=STD)
    transforms, _, _ = build_view_transforms(GROUPS, mean=MEAN, std=STD)
    return ViewDataset(base, transforms, seed=seed)


def _flatten(transform: object) -> list[object]:
    inner = getattr(transform, "transforms", None)
    return [transform] + [t for child in (inner or []) for t in _flatten(child)]


def test_groups_expand_to_views_with_shapes() -> None:
    transforms, kinds, n_global = build_view_transforms(GROUPS, mean=MEAN, std=STD)
    assert len(transforms) == 5 and kinds == ("global", "global", "local", "local", "local") and n_global == 2
    views, index, extras = _views_dataset()[4]
    assert extras == {}
    assert index == 4
    assert [tuple(v.shape) for v in views] == [(3, 28, 28)] * 2 + [(3, 12, 12)] * 3
    assert all(v.dtype == torch.float32 for v in views)


def test_views_depend_only_on_seed_epoch_index() -> None:
    ds = _views_dataset()
    n = len(ds)
    rng_before = torch.get_rng_state()
    forward = {j: ds[j][0] for j in range(2 * n)}
    backward = {j: ds[j][0] for j in reversed(range(2 * n))}
    assert torch.equal(rng_before, torch.get_rng_state())  # the global RNG is left untouched
    for j in range(2 * n):
        assert all(torch.equal(a, b) for a, b in zip(forward[j], backward[j], strict=True))
    assert not torch.equal(forward[1][0], forward[1][1])  # two views of one sample differ
    assert not torch.equal(forward[1][0], forward[n + 1][0])  # a new epoch draws new views
    other_seed = _views_dataset(seed=4)[1][0]
    assert not torch.equal(forward[1][0], other_seed[0])

    def run(num_workers: int) -> dict[int, list[torch.Tensor]]:
        sampler = EpochSampler(n, seed=7)
        sampler.set_epoch(1)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=num_workers, collate_fn=collate_views)
        out: dict[int, list[torch.Tensor]] = {}
        for batch in loader:
            for b, i in enumerate(batch.ids.tolist()):
                out[i] = [v[b] for v in batch.views]
        return out

    serial, parallel = run(0), run(1)
    assert sorted(serial) == list(range(n))
    for i in range(n):
        for a, b, c in zip(serial[i], parallel[i], forward[n + i], strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)


def test_epoch_sampler_permutations() -> None:
    sampler = EpochSampler(10, seed=1)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert sorted(i - epoch * 10 for i in indices) == list(range(10)) and len(sampler) == 10
        assert indices == list(sampler)  # same (seed, epoch) gives the same order
        epochs.append([i - epoch * 10 for i in indices])
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    ordered = EpochSampler(4, shuffle=False)
    ordered.set_epoch(2)
    assert list(ordered) == [8, 9, 10, 11]


def test_blur_defaults_by_size() -> None:
    def blurs(transform: object) -> list[v2.GaussianBlur]:
        return [t for t in _flatten(transform) if isinstance(t, v2.GaussianBlur)]

    assert blurs(build_view_transform(size=28, mean=MEAN, std=STD)) == []
    assert blurs(build_view_transform(size=32, mean=MEAN, std=STD)) == []
    (big,) = blurs(build_view_transform(size=64, mean=MEAN, std=STD))
    assert big.kernel_size == (7, 7) and tuple(big.sigma) == (0.1, 2.0)
    (forced,) = blurs(build_view_transform(size=28, blur_p=0.5, mean=MEAN, std=STD))
    assert forced.kernel_size == (3, 3)
    assert blurs(build_view_transform(size=224, blur_p=0.0, mean=MEAN, std=STD)) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"augment": "byol"}, "simclr, simclr_weak, none"),
        ({"scale": (0.0, 1.0)}, "0 < a <= b <= 1"),
        ({"scale": (0.6, 0.2)}, "0 < a <= b <= 1"),
        ({"scale": (0.1, 1.5)}, "0 < a <= b <= 1"),
        ({"scale": (0.1,)}, "0 < a <= b <= 1"),
        ({"size": 0}, "size"),
        ({"gray_p": 1.5}, "gray_p"),
        ({"strength": 3.0}, "strength"),
    ],
)
def test_view_transform_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_view_transform(**{"size": 28, **kwargs}, mean=MEAN, std=STD)


def test_group_errors() -> None:
    with pytest.raises(ConfigError, match="unknown source 'diffusion'; accepted: real, generated"):
        build_view_transforms([{**GROUPS[0], "source": "diffusion"}], mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="largest size"):
        build_view_transforms(GROUPS[::-1], mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="unknown keys"):
        build_view_transforms([{**GROUPS[0], "colour": 1}], mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="n must be"):
        build_view_transforms([{**GROUPS[0], "n": 0}], mean=MEAN, std=STD)


def test_eval_transform_and_collate() -> None:
    evaluate = build_eval_transform(size=28, mean=(0.0,), std=(1.0,))
    image = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.allclose(evaluate(image), image.float() / 255)  # no resize at the native size
    assert evaluate(torch.zeros(3, 40, 30, dtype=torch.uint8)).shape == (3, 28, 28)
    items = [([torch.full((3, 4, 4), float(k)), torch.zeros(3, 2, 2)], k + 10, {}) for k in range(3)]
    batch = collate_views(items)
    views, ids = batch.views, batch.ids
    assert batch.extras == {}
    assert [tuple(v.shape) for v in views] == [(3, 3, 4, 4), (3, 3, 2, 2)]
    assert ids.dtype == torch.int64 and ids.tolist() == [10, 11, 12] and views[0][2, 0, 0, 0] == 2.0
