"""Batched views: same recipes as the per-image pipeline, torchvision's result per image, images of any sizes,
per-image randomness, exact seeding, the same views in the workers and in the main process (the GPU path)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data import ArrayDataset, EpochSampler, batched_views, build_view_transform, build_view_transforms
from ssl_toolkit.data.batched_collate import BatchViewCollate, PositionedImages
from ssl_toolkit.data.batched_views import ImageBatch, build_batch_view_transform
from ssl_toolkit.data.colour import JITTER_OPS
from ssl_toolkit.data.crops import image_sizes, resized_crops
from ssl_toolkit.errors import ConfigError

MEAN, STD = (0.286,) * 3, (0.353,) * 3
GROUPS = [
    {"name": "global", "n": 2, "size": 28, "scale": [0.2, 1.0], "augment": "simclr", "strength": 0.5},
    {"name": "local", "n": 3, "size": 12, "scale": (0.05, 0.3), "augment": "simclr", "strength": 1.0},
]


def _images(n: int = 12) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen), None, mean=MEAN, std=STD)


def _loader(dataset, transforms, *, epoch: int, workers: int, defer: bool = False) -> DataLoader:
    sampler = EpochSampler(len(dataset), seed=5)
    sampler.set_epoch(epoch)
    collate = BatchViewCollate(transforms, n=len(dataset), seed=5, defer=defer)
    return DataLoader(PositionedImages(dataset), batch_size=4, sampler=sampler, collate_fn=collate, num_workers=workers)


class MixedSizes(torch.utils.data.Dataset):
    """Images of 70-100 px of different sizes (3, H, W)."""

    def __init__(self, n: int = 8) -> None:
        gen = torch.Generator().manual_seed(1)
        sizes = [(70 + 4 * k, 100 - 3 * k) for k in range(n)]
        self.images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in sizes]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], -1


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


def _reference(view, crops: torch.Tensor, params) -> torch.Tensor:
    """torchvision's per-image functions applied with the drawn parameters (the independent reference)."""
    steps = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }
    out = []
    for b, crop in enumerate(crops):
        x = TF.hflip(crop) if params.flip[b] else crop
        x = x.float() / 255
        if params.jitter[b]:
            for k in params.order:
                name = JITTER_OPS[k]
                if name in params.factors:
                    x = steps[name](x, float(params.factors[name][b]))
        if params.grey[b]:
            x = TF.rgb_to_grayscale(x, 3)
        if params.blur[b]:
            sigma = float(params.sigma[b])
            x = TF.gaussian_blur(x, [view.kernel, view.kernel], [sigma, sigma])
        out.append(TF.normalize(x, list(MEAN), list(STD)))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [None, 2], ids=["one_chunk", "chunks_of_2"])
@pytest.mark.parametrize("mixed", [True, False], ids=["mixed_sizes", "one_size"])
def test_each_view_is_torchvision_per_image_with_the_drawn_parameters(mixed: bool, chunk, monkeypatch) -> None:
    if chunk is not None:  # the CPU works a few images at a time, in `chunk_order`: the result must not change
        monkeypatch.setattr(batched_views, "CHUNK_BYTES", chunk * 3 * 24 * 24 * 4)
    images = MixedSizes().images if mixed else list(_images(8).images.expand(8, 3, 28, 28))
    view = build_batch_view_transform(
        size=24, scale=(0.1, 1.0), jitter_p=0.7, gray_p=0.4, blur_p=0.6, mean=MEAN, std=STD
    )
    sizes = image_sizes(images)
    torch.manual_seed(4)
    params = view.draw(sizes)
    assert 0 < int(params.jitter.sum()) < 8 and 0 < int(params.blur.sum()) < 8  # both branches exercised
    batch = images if mixed else torch.stack(images)
    out = view.apply(batch, params)
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    crops = resized_crops(batch, params.boxes, 24)
    assert torch.allclose(out, _reference(view, crops, params), atol=1e-4)
    torch.manual_seed(4)
    assert torch.equal(view(batch), out)  # __call__ = draw + apply


def test_chunk_order_groups_images_by_blur_width_then_jitter_and_grey() -> None:
    view = build_batch_view_transform(size=224, scale=(0.1, 1.0), mean=MEAN, std=STD)
    torch.manual_seed(0)
    params = view.draw(torch.tensor([[300, 400]] * 64))
    order = batched_views.chunk_order(params)
    assert sorted(order.tolist()) == list(range(64))
    blur, sigma = params.blur[order], params.sigma[order]
    assert not blur[: int((~params.blur).sum())].any() and blur[int((~params.blur).sum()) :].all()
    reach = torch.ceil(batched_views.TRUNCATE * sigma[blur])
    assert torch.equal(reach, reach.sort().values)  # blurred images: narrowest kernels first


def test_mixed_sizes_train_batches_in_workers_and_main_process_alike() -> None:
    dataset = MixedSizes(12)
    groups = [{"name": "global", "n": 2, "size": 32}, {"name": "local", "n": 2, "size": 16, "scale": [0.05, 0.3]}]
    transforms, _, _ = build_view_transforms(groups, mean=MEAN, std=STD, batched=True)
    in_workers = list(_loader(dataset, transforms, epoch=1, workers=2))
    in_main = list(_loader(dataset, transforms, epoch=1, workers=0))
    deferred = _loader(dataset, transforms, epoch=1, workers=2, defer=True)
    for a, b, raw in zip(in_workers, in_main, deferred):
        assert isinstance(raw, ImageBatch) and len(raw) == 4 and raw.images["real"][0].dim() == 3
        c = deferred.collate_fn.finish(raw.to("cpu"))  # what the engine does on the training device
        assert [v.shape for v in a.views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2
        assert torch.equal(a.ids, b.ids) and torch.equal(a.ids, c.ids)
        for x, y, z in zip(a.views, b.views, c.views):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)  # workers: 1 thread (bit-equal here, 2 cores)
            assert torch.equal(y, z)  # the same process: bit-equal


def test_deferred_jpeg_decoding_gives_the_same_views(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from ssl_toolkit.data import ImageFolder
    from ssl_toolkit.data.image_folder import JpegBytes

    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(40, 60), (50, 44), (36, 36), (64, 48)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{k}.jpg", quality=90)
    Image.new("RGBA", (30, 40), (200, 10, 10, 128)).save(tmp_path / "4.png")  # not a JPEG: decoded in the worker
    folder = ImageFolder(str(tmp_path))
    transforms, _, _ = build_view_transforms([{"name": "g", "n": 2, "size": 20}], mean=MEAN, std=STD, batched=True)
    collate = BatchViewCollate(transforms, n=5, seed=2)
    deferred = BatchViewCollate(transforms, n=5, seed=2, defer=True)
    items = [(folder[i][0], i, i) for i in range(5)]
    encoded = [(JpegBytes(folder)[i][0], i, i) for i in range(5)]
    assert [x[0].dim() for x in encoded] == [1, 1, 1, 1, 3]
    a, b = collate(items), deferred.finish(deferred(encoded).to("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))


@pytest.mark.parametrize("device", ["cpu", "meta"])  # meta: the non-CPU branch (one index_copy_), shapes only
def test_put_writes_the_images_at_the_indices(device: str) -> None:
    dst = torch.zeros(6, 3, 4, 4, device=device)
    src = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32, device=device).reshape(2, 3, 4, 4)
    index = torch.tensor([4, 1], device=device)
    batched_views._put(dst, index, src)
    if device == "cpu":
        expected = torch.zeros(6, 3, 4, 4)
        expected[index] = src
        assert torch.equal(dst, expected)
    assert dst.shape == (6, 3, 4, 4)
