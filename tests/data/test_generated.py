"""Generated images in training: the bank reader, GenView view-level mixing, AdaInf inflation, simclr_weak.

Banks here are written by hand (PNG files plus manifest rows), so these tests need no diffusers; the
generator side is tested in tests/generation/.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler
from torchvision.transforms import v2

from ssl_toolkit.data import ArrayDataset, EpochSampler, ViewDataset, build_view_transform, collate_views
from ssl_toolkit.data.batched_views import BatchViewCollate, PositionedImages, build_batch_view_transform
from ssl_toolkit.data.generated import GenViewImages, InflatedImages, Sample, ViewBank
from ssl_toolkit.data.view_groups import build_view_transforms
from ssl_toolkit.data.view_specs import count_global_views, view_sources
from ssl_toolkit.errors import ConfigError, DataError
from tests.conftest import reference
from tests.data.bank_helpers import write_bank

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def real_images(n: int, size: int = 8) -> ArrayDataset:
    """Image i is constant ``i`` (so any view of it is recognisable), label ``i % 2``."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return ArrayDataset(images, torch.arange(n) % 2, mean=MEAN, std=STD)


def value_of(view: torch.Tensor) -> float:
    """The pixel value a normalised view of a constant image came from."""
    return round(float((view.mean() * STD[0] + MEAN[0]) * 255))


# ---------------------------------------------------------------- simclr_weak


def _flatten(t: object) -> list[object]:
    out = []
    for step in getattr(t, "transforms", [t]):
        out += _flatten(step) if isinstance(step, (v2.Compose, v2.RandomApply)) and step is not t else [step]
        if isinstance(step, v2.RandomApply):
            out.append(step)
    return out


def test_simclr_weak_has_adainf_defaults_and_recipe_values_win() -> None:
    steps = _flatten(build_view_transform(augment="simclr_weak", size=32, mean=MEAN, std=STD))
    crop = next(s for s in steps if isinstance(s, v2.RandomResizedCrop))
    jitter = next(s for s in steps if isinstance(s, v2.ColorJitter))
    apply = next(s for s in steps if isinstance(s, v2.RandomApply) and isinstance(s.transforms[0], v2.ColorJitter))
    assert crop.scale == (0.2, 1.0)
    assert apply.p == 0.4
    assert jitter.brightness == (0.6, 1.4) and jitter.contrast == (0.6, 1.4) and jitter.saturation == (0.6, 1.4)
    assert jitter.hue == pytest.approx((-0.1, 0.1))
    gray = next(s for s in steps if isinstance(s, v2.RandomGrayscale))
    assert gray.p == 0.2  # unchanged by AdaInf
    strong = _flatten(build_view_transform(augment="simclr", size=32, mean=MEAN, std=STD))
    assert next(s for s in strong if isinstance(s, v2.RandomResizedCrop)).scale == (0.08, 1.0)
    given = _flatten(build_view_transform(augment="simclr_weak", size=32, scale=(0.5, 1.0), mean=MEAN, std=STD))
    assert next(s for s in given if isinstance(s, v2.RandomResizedCrop)).scale == (0.5, 1.0)


def test_simclr_weak_batched_matches_the_preset() -> None:
    view = build_batch_view_transform(augment="simclr_weak", size=16, mean=MEAN, std=STD)
    assert view.scale == pytest.approx((0.2, 1.0)) and view.jitter_p == pytest.approx(0.4)
    brightness = view.draw(torch.tensor([[16, 16]] * 512)).factors["brightness"]
    assert 0.6 <= brightness.min() < 0.65 and 1.35 < brightness.max() <= 1.4  # (1 - 0.4, 1 + 0.4)


# ---------------------------------------------------------------- bank and GenView


def test_view_bank_groups_variants_and_resizes(tmp_path: Path) -> None:
    bank = ViewBank(write_bank(tmp_path / "bank", {0: [100, 110], 2: [120]}, unconditional=[7], size=12))
    assert bank.variants == {0: ["images/train/000000/v0.png", "images/train/000000/v1.png"],
                             2: ["images/train/000002/v0.png"]}  # fmt: skip
    assert len(bank) == 4 and bank.samples[0] == ("images/unconditional/000000/v0.png", -1)
    image = bank.load(bank.variants[0][1], size=(8, 8))
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8) and int(image.float().mean()) == 110
    with pytest.raises(DataError, match="generate-views"):
        ViewBank(tmp_path / "nowhere")


def test_genview_views_come_from_the_right_image(tmp_path: Path) -> None:
    bank = ViewBank(write_bank(tmp_path / "bank", {i: [100 + i, 200 + i] for i in range(6)}))
    with pytest.warns(UserWarning, match="2 of 8 images have no variant"):
        images = GenViewImages(real_images(8), bank, p_generated=1.0)
    assert images.missing == 2
    groups = [
        {"name": "global", "n": 1, "size": 8, "augment": "none"},
        {"name": "generated", "n": 1, "size": 8, "augment": "none", "source": "generated", "global": True},
        {"name": "local", "n": 1, "size": 4, "augment": "none"},
    ]
    transforms, kinds, n_global = build_view_transforms(groups, mean=MEAN, std=STD)
    assert kinds == ("global", "generated", "local") and n_global == 2 == count_global_views(groups)
    dataset = ViewDataset(images, transforms, seed=1, sources=view_sources(groups))
    seen = set()
    for epoch in range(4):
        for i in range(8):
            views, sample_id, extras = dataset[epoch * 8 + i]
            is_generated = extras["is_generated"]
            assert sample_id == i and value_of(views[0]) == i and value_of(views[2]) == i
            if i < 6:
                assert is_generated and value_of(views[1]) in (100 + i, 200 + i)
                seen.add(value_of(views[1]) - i)
            else:  # no variant: the real image, counted at build time
                assert not is_generated and value_of(views[1]) == i
    assert seen == {100, 200}  # both variants get drawn
    again = dataset[3 * 8 + 4]
    assert all(torch.equal(a, b) for a, b in zip(again[0], dataset[3 * 8 + 4][0]))


def test_genview_batched_matches_the_sources(tmp_path: Path) -> None:
    bank = ViewBank(write_bank(tmp_path / "bank", {i: [100 + i] for i in range(8)}))
    images = GenViewImages(real_images(8), bank, p_generated=1.0)
    collate = BatchViewCollate([lambda x: x, lambda x: x], n=8, seed=0, sources=("real", "generated"))
    items = [PositionedImages(images, seed=0)[p] for p in range(8, 16)]  # epoch 1
    batch = collate(items)
    (real, generated), ids, flags = batch.views, batch.ids, batch.extras["is_generated"]
    assert ids.tolist() == list(range(8)) and flags.all()
    assert real[:, 0, 0, 0].tolist() == list(range(8))
    assert generated[:, 0, 0, 0].tolist() == [100 + i for i in range(8)]


def test_genview_p_generated_proportion(tmp_path: Path) -> None:
    n, p = 400, 0.3
    bank = ViewBank(write_bank(tmp_path / "bank", {i: [200] for i in range(n)}, size=2))
    images = GenViewImages(real_images(n, size=2), bank, p_generated=p)
    dataset = PositionedImages(images, seed=11)
    hits = sum(bool(dataset[p_][0].is_generated) for p_ in range(n))
    sd = math.sqrt(n * p * (1 - p))
    assert abs(hits - n * p) < 4 * sd, (hits, n * p)
    assert [dataset[5][0].is_generated for _ in range(3)] == [dataset[5][0].is_generated] * 3  # seeded


def test_genview_rejects_a_bank_of_another_dataset(tmp_path: Path) -> None:
    bank = ViewBank(write_bank(tmp_path / "bank", {0: [1], 50: [2]}))
    with pytest.raises(DataError, match="another dataset"):
        GenViewImages(real_images(8), bank)


# ---------------------------------------------------------------- AdaInf


class _SizedBank:
    """Stands in for a ViewBank of ``n`` images where only the length matters."""

    def __init__(self, n: int) -> None:
        self.samples = [("x.png", -1)] * n

    def __len__(self) -> int:
        return len(self.samples)


def test_adainf_mixing_matches_reference() -> None:
    ref = reference("views_eval_reference.json")["adainf"]
    real = ArrayDataset(torch.zeros(ref["n_real"], 1, 1, dtype=torch.uint8), mean=MEAN, std=STD)
    for key, case in ref["mixing"].items():
        dup = int(key.removeprefix("dup"))
        data = InflatedImages(real, _SizedBank(ref["n_gen"]), dup=dup)  # type: ignore[arg-type]
        assert len(data) == case["dataset_len"]
        assert data.p_real == pytest.approx(case["p_draw_real"], abs=1e-10)
        assert len(data) // 256 == case["steps_per_epoch_bs256_droplast"]
        assert dup * data.n_real // data.n_real == case["real_draws_per_real_image_per_epoch"]


def test_adainf_samples_ids_labels_and_ddp_shards(tmp_path: Path) -> None:
    n_real, dup, n_gen = 20, 10, 100
    bank = ViewBank(write_bank(tmp_path / "bank", {}, unconditional=[50 + k % 100 for k in range(n_gen)]))
    data = InflatedImages(real_images(n_real), bank, dup=dup)
    assert len(data) == 300 and data.p_real == pytest.approx(2 / 3)
    sample, label = data[45]  # a real image, copy 2
    assert isinstance(sample, Sample) and not sample.is_generated and label == 45 % n_real % 2
    assert data.sample_id(45) == 5 and data.sample_id(200) == 20 and data.sample_id(299) == 119
    sample, label = data[205]
    assert sample.is_generated and label == -1 and int(sample.real[0, 0, 0]) == 55
    # one epoch over two processes, split as accelerate splits a prepared loader's batches
    sampler = EpochSampler(len(data), seed=3)
    sampler.set_epoch(1)
    batches = BatchSampler(sampler, batch_size=10, drop_last=True)
    shards = [list(BatchSamplerShard(batches, num_processes=2, process_index=r)) for r in range(2)]
    drawn = [[j % len(data) for batch in shard for j in batch] for shard in shards]
    assert sorted(drawn[0] + drawn[1]) == list(range(len(data)))  # disjoint and complete
    for idx in drawn:  # each process sees about P(real) real samples (hypergeometric, 4 sd)
        real = sum(j < dup * n_real for j in idx)
        assert abs(real - len(idx) * 2 / 3) < 4 * math.sqrt(len(idx) * 2 / 9), real
    dataset = PositionedImages(data, seed=None)
    _, _, sample_id = dataset[300 + 45]  # epoch 1
    assert sample_id == 5
    with pytest.raises(ConfigError, match="dup"):
        InflatedImages(real_images(4), bank, dup=0)


def test_collate_views_carries_the_flags(tmp_path: Path) -> None:
    bank = ViewBank(write_bank(tmp_path / "bank", {0: [9]}))
    with pytest.warns(UserWarning):
        images = GenViewImages(real_images(2), bank)
    identity = build_view_transform(augment="none", size=8, mean=MEAN, std=STD)
    dataset = ViewDataset(images, [identity, identity], seed=0, sources=("real", "generated"))
    batch = collate_views([dataset[0], dataset[1]])
    views, ids, flags = batch.views, batch.ids, batch.extras["is_generated"]
    assert ids.tolist() == [0, 1] and flags.tolist() == [True, False] and views[1].shape == (2, 3, 8, 8)


def test_a_damaged_bank_file_costs_one_sample_not_the_run(tmp_path: Path) -> None:
    bank_dir = write_bank(tmp_path / "bank", {0: [90]}, unconditional=[50, 60])
    (bank_dir / "images/unconditional/000000/v0.png").write_bytes(b"not a png")
    inflated = InflatedImages(real_images(4), ViewBank(bank_dir), dup=1)
    with pytest.warns(UserWarning, match="cannot read generated image"):
        sample, label = inflated[4]  # the first bank image (unconditional rows sort first: src_id -1)
    assert not sample.is_generated and torch.equal(sample.real, inflated[0][0].real) and label == 0
    assert inflated[5][0].is_generated  # the next bank image still loads
    (bank_dir / "images/train/000000/v0.png").write_bytes(b"")
    genview = GenViewImages(real_images(4), ViewBank(bank_dir), p_generated=1.0)
    with pytest.warns(UserWarning):
        sample, _ = genview[0]
    assert not sample.is_generated and torch.equal(sample.generated, sample.real)
