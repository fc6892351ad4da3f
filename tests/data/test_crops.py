"""Batched random resized crops: torchvision's box distribution per image size, torchvision's resize per crop."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data.crops import aa_weights, image_sizes, resized_crops, sample_crop_boxes


def _torchvision_boxes(height: int, width: int, scale: tuple[float, float], n: int) -> torch.Tensor:
    image = torch.zeros(1, height, width)
    return torch.tensor([v2.RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(n)])


@pytest.mark.parametrize(("height", "width", "scale"), [(300, 500, (0.08, 1.0)), (96, 120, (0.05, 0.14))])
def test_boxes_follow_torchvision_distribution(height: int, width: int, scale: tuple[float, float]) -> None:
    n = 4000
    torch.manual_seed(0)
    ours = sample_crop_boxes(torch.tensor([[height, width]] * n), scale=scale)
    torch.manual_seed(1)
    ref = _torchvision_boxes(height, width, scale, n)
    for boxes in (ours, ref):
        top, left, h, w = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    for k in range(4):  # top, left, height, width: means and spreads agree within sampling error
        a, b = ours[:, k].double(), ref[:, k].double()
        sem = math.sqrt((a.var() + b.var()).item() / n)
        assert abs(a.mean() - b.mean()) < 4 * sem + 0.5
        assert abs(a.std() - b.std()) < 0.08 * b.std() + 0.5
    area = lambda b: (b[:, 2] * b[:, 3]).double() / (height * width)  # noqa: E731
    assert abs(area(ours).mean() - area(ref).mean()) < 0.02


def test_fallback_is_torchvision_centre_crop() -> None:
    # a 4 x 400 strip: no try of aspect ratio in [3/4, 4/3] fits, so both fall back to the same centre crop
    torch.manual_seed(0)
    ours = sample_crop_boxes(torch.tensor([[4, 400]] * 5), scale=(0.5, 1.0))
    ref = _torchvision_boxes(4, 400, (0.5, 1.0), 5)
    assert torch.equal(ours, ref)


def test_each_image_gets_boxes_from_its_own_size() -> None:
    sizes = torch.tensor([[40, 60], [300, 200], [17, 17]])
    torch.manual_seed(3)
    boxes = sample_crop_boxes(sizes.repeat(200, 1), scale=(0.3, 1.0))
    fits = (boxes[:, 0] + boxes[:, 2] <= sizes.repeat(200, 1)[:, 0]) & (
        boxes[:, 1] + boxes[:, 3] <= sizes.repeat(200, 1)[:, 1]
    )
    assert fits.all()
    assert boxes[1::3, 2].max() > 150 and boxes[2::3, 2].max() <= 17


def test_resized_crops_of_mixed_sizes_equal_torchvision_per_crop() -> None:
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in [(90, 70), (64, 130)]]
    images.append(images[0].permute(1, 2, 0).contiguous().permute(2, 0, 1))  # a channels-last view, as decoded
    torch.manual_seed(1)
    boxes = sample_crop_boxes(image_sizes(images), scale=(0.1, 1.0))
    out = resized_crops(images, boxes, 48)
    assert out.shape == (3, 3, 48, 48) and out.dtype == torch.uint8
    for image, box, crop in zip(images, boxes.tolist(), out):
        assert torch.equal(crop, TF.resized_crop(image, *box, [48, 48], antialias=True))


@pytest.mark.parametrize("size", [12, 40])  # down- and up-scaling
def test_batched_matrix_crops_match_torchvision_within_rounding(size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 28, 30), dtype=torch.uint8, generator=gen)  # small: matrix path
    torch.manual_seed(2)
    boxes = sample_crop_boxes(image_sizes(images), scale=(0.1, 1.0))
    out = resized_crops(images, boxes, size)
    ref = torch.stack(
        [TF.resized_crop(x.float(), *b, [size, size], antialias=True) for x, b in zip(images, boxes.tolist())]
    )
    assert (out.float() - ref).abs().max() <= 0.5 + 1e-3  # float reference rounded by us: within rounding


def test_aa_weights_rows_are_pytorch_interpolation() -> None:
    # resizing the columns 3..19 of an identity image to 5 columns with torchvision gives the weight matrix
    weights = aa_weights(torch.tensor([3]), torch.tensor([17]), 5, 24)[0]  # (5, 24)
    identity = torch.eye(24)[None]  # (1, 24, 24)
    resized = TF.resize(identity[:, :, 3:20], [24, 5], antialias=True)[0]  # (24, 5)
    assert torch.allclose(weights.T.float(), resized, atol=1e-5)
    assert torch.allclose(weights.sum(1), torch.ones(5, dtype=torch.float64))
