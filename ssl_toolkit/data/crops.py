"""Random resized crops for a whole batch of images of any sizes: boxes drawn as torchvision draws them, crops
resized with torchvision's antialiased bilinear filter.

`sample_crop_boxes` is torchvision's ``RandomResizedCrop.get_params`` (10 tries of area and log-aspect-ratio,
then a centre-crop fallback) vectorised over the batch, each image drawn from its own size: the same
distribution, fewer generator calls. `resized_crops` cuts and resizes them.

Why per crop, and why not ``roi_align`` or kornia: torchvision's resize of a uint8 crop (a view of the decoded
channels-last image, no copy) runs PyTorch's antialiased bilinear kernel, which is separable and vectorised:
measured on one core (``benchmarks/views_resize_quality.py``), 0.16 ms for a 300 px crop to 224 px against 5 ms for
``torchvision.ops.roi_align`` with adaptive sampling (a box filter that samples O(scale^2) points per pixel) and
a padded float batch (768 MB for 256 images of 500 px). kornia's ``crop_and_resize`` samples bilinearly without
antialiasing, which aliases when a 500 px photo becomes a 96 px crop (the same script prints the PSNR of each
against torchvision's antialiased resize). Each crop is one call, so on tiny images the call overhead (~50 us)
dominates; there, when the batch shares one size, the same filter runs as two batched matrix products
(`aa_weights`: the rows of PyTorch's antialiased bilinear interpolation matrix, restricted to each crop), equal
to the per-crop result up to rounding (at most 1 of 255).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# Same-size batches up to this many pixels per image are resized with batched matrix products.
MATMUL_MAX_PIXELS = 64 * 64
_TRIES = 10


def sample_crop_boxes(
    sizes: Tensor, *, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> Tensor:
    """Per image, a RandomResizedCrop box drawn from the global torch generator as torchvision draws it.

    Args:
        sizes: (B, 2) int heights and widths.
        scale: area range of the crop, a fraction of the image area.
        ratio: aspect-ratio (width / height) range.

    Returns:
        (B, 4) int64 boxes ``(top, left, height, width)``.

    Shape:
        sizes (B, 2); returns (B, 4).
    """
    sizes = sizes.to(torch.float64)
    height, width = sizes[:, :1], sizes[:, 1:]  # (B, 1)
    n = sizes.shape[0]
    area = height * width * torch.empty(n, _TRIES).uniform_(scale[0], scale[1]).double()  # (B, T)
    log_ratio = torch.empty(n, _TRIES).uniform_(math.log(ratio[0]), math.log(ratio[1])).double()
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))  # round half to even, as Python's round()
    h = torch.round(torch.sqrt(area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, T)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # first valid try (0 when none is valid)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    height, width = height.squeeze(1), width.squeeze(1)
    u_top, u_left = torch.rand(n).double(), torch.rand(n).double()
    top = torch.floor(u_top * (height - h + 1))
    left = torch.floor(u_left * (width - w + 1))
    # fallback (no valid try): the largest centred crop within the ratio range, as torchvision
    fb_w, fb_h = width.clone(), height.clone()
    narrow, wide = width / height < min(ratio), width / height > max(ratio)
    fb_h = torch.where(narrow, torch.round(width / min(ratio)), fb_h)
    fb_w = torch.where(wide, torch.round(height * max(ratio)), fb_w)
    fallback = ~ok.any(dim=1)
    h, w = torch.where(fallback, fb_h, h), torch.where(fallback, fb_w, w)
    top = torch.where(fallback, torch.div(height - h, 2, rounding_mode="floor"), top)
    left = torch.where(fallback, torch.div(width - w, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def aa_weights(start: Tensor, length: Tensor, size: int, extent: int) -> Tensor:
    """Rows of PyTorch's antialiased bilinear resize of ``[start, start + length)`` to ``size`` samples.

    The filter of ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` (PIL's): a triangle
    whose support widens by the downscaling factor, weights normalised over the pixels of the crop.

    Args:
        start: (B,) first pixel of each crop along this axis.
        length: (B,) crop lengths.
        size: output length.
        extent: length of the image axis (the matrix has this many columns; pixels outside the crop get 0).

    Returns:
        (B, size, extent) float64 interpolation matrices.
    """
    start, length = start.to(torch.float64)[:, None, None], length.to(torch.float64)[:, None, None]
    scale = length / size  # (B, 1, 1)
    support = torch.clamp(scale, min=1.0)
    centre = start + (torch.arange(size, dtype=torch.float64)[None, :, None] + 0.5) * scale  # (B, S, 1)
    pixel = torch.arange(extent, dtype=torch.float64)[None, None, :] + 0.5  # (1, 1, E)
    weights = torch.clamp(1.0 - torch.abs(pixel - centre) / support, min=0.0)  # (B, S, E)
    inside = (pixel > start) & (pixel < start + length)
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def _crops_by_matmul(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Same-size uint8 batch (B, 3, H, W) -> (B, 3, size, size) uint8 with two batched matrix products."""
    _, _, height, width = images.shape
    wy = aa_weights(boxes[:, 0], boxes[:, 2], size, height).to(images.device, torch.float32)  # (B, S, H)
    wx = aa_weights(boxes[:, 1], boxes[:, 3], size, width).to(images.device, torch.float32)  # (B, S, W)
    x = images.to(torch.float32)
    out = torch.matmul(torch.matmul(wy[:, None], x), wx[:, None].transpose(-1, -2))  # (B, 3, S, S)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _crops_one_by_one(images: Sequence[Tensor], boxes: Tensor, size: int) -> Tensor:
    rows = boxes.tolist()
    crops = [
        TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        for image, (top, left, h, w) in zip(images, rows)
    ]
    return torch.stack(crops)


def resized_crops(images: Tensor | Sequence[Tensor], boxes: Tensor, size: int) -> Tensor:
    """Cut ``boxes`` out of ``images`` and resize each to ``size`` square (antialiased bilinear).

    Args:
        images: a uint8 batch (B, 3, H, W), or B uint8 images (3, H_i, W_i) of any sizes, on one device.
        boxes: (B, 4) int ``(top, left, height, width)`` inside each image (see `sample_crop_boxes`).
        size: output side.

    Returns:
        uint8 (B, 3, size, size) on the images' device.

    Shape:
        images (B, 3, H, W) or B x (3, H_i, W_i); boxes (B, 4); returns (B, 3, size, size).
    """
    if isinstance(images, Tensor) and images.shape[-2] * images.shape[-1] <= MATMUL_MAX_PIXELS:
        return _crops_by_matmul(images, boxes, size)
    return _crops_one_by_one(images, boxes, size)


def image_sizes(images: Tensor | Sequence[Tensor]) -> Tensor:
    """(B, 2) heights and widths of a batch or a list of images."""
    if isinstance(images, Tensor):
        return torch.tensor([list(images.shape[-2:])], dtype=torch.int64).expand(images.shape[0], 2)
    return torch.tensor([list(image.shape[-2:]) for image in images], dtype=torch.int64)
