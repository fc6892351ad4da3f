"""Crop-and-resize for batched views: quality against torchvision's antialiased resize, and time per crop.

The reference is torchvision's ``resized_crop(antialias=True)`` in float (PIL's filter). Candidates, each on
the same boxes of a 500 x 400 image: what ``data/crops.py`` uses (torchvision per crop on uint8, and its batched
matrix form for small same-size batches), ``torchvision.ops.roi_align`` with adaptive sampling (a box filter),
kornia's ``crop_and_resize`` (bilinear, no antialiasing) and ``F.interpolate`` bilinear without antialiasing.
Two images: a photo-like one (gradients, shapes, noise) and a zone plate (rings of rising frequency, where
aliasing shows). Prints PSNR in dB (higher is closer; inf = identical) and the median time per crop, one thread.

    python benchmarks/views_resize_quality.py
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data.crops import _crops_by_matmul, resized_crops

BOXES = {  # (top, left, height, width) in a 400 x 500 image -> output side
    "whole image -> 96 px (5.2x down)": ((0, 0, 400, 500), 96),
    "global crop -> 224 px (1.4x down)": ((40, 60, 300, 320), 224),
    "local crop -> 96 px (1.3x down)": ((100, 200, 120, 130), 96),
}


def photo_like() -> torch.Tensor:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:400, 0:500].astype(np.float32)
    image = np.stack([120 + 60 * np.sin(xx / 17 + k) + 40 * np.cos(yy / 23 - k) for k in range(3)])
    for _ in range(20):
        y, x, r = rng.integers(0, 400), rng.integers(0, 500), rng.integers(5, 60)
        image[:, max(0, y - r) : y + r, max(0, x - r) : x + r] = rng.integers(0, 256, (3, 1, 1))
    image += rng.normal(0, 8, image.shape)
    return torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8))


def zone_plate() -> torch.Tensor:
    yy, xx = np.mgrid[0:400, 0:500].astype(np.float64)
    r2 = (yy - 200) ** 2 + (xx - 250) ** 2
    plate = 127.5 + 127.5 * np.cos(math.pi * r2 / 500.0)
    return torch.from_numpy(np.repeat(plate[None], 3, 0).round().astype(np.uint8))


def candidates(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> dict:
    from kornia.geometry.transform import crop_and_resize
    from torchvision.ops import roi_align

    top, left, h, w = box
    boxes = torch.tensor([box])
    corners = torch.tensor([[[left, top], [left + w - 1, top], [left + w - 1, top + h - 1], [left, top + h - 1]]])
    x = image[None].float()
    return {
        "ssl_toolkit per crop (torchvision, uint8)": lambda: resized_crops([image], boxes, size)[0].float(),
        "ssl_toolkit batched matrices": lambda: _crops_by_matmul(image[None], boxes, size)[0].float(),
        "roi_align, adaptive sampling": lambda: roi_align(
            x, torch.tensor([[0, left, top, left + w, top + h]], dtype=torch.float32), size, 1.0, 0, True
        )[0],
        "kornia crop_and_resize (no AA)": lambda: crop_and_resize(x, corners.float(), (size, size))[0],
        "F.interpolate bilinear (no AA)": lambda: F.interpolate(
            x[:, :, top : top + h, left : left + w], size=(size, size), mode="bilinear", align_corners=False
        )[0],
    }


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def median_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    torch.set_num_threads(1)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, 1 thread, torch {torch.__version__}")
    for image_name, image in (("photo-like", photo_like()), ("zone plate", zone_plate())):
        for box_name, (box, size) in BOXES.items():
            top, left, h, w = box
            ref = TF.resized_crop(image.float(), top, left, h, w, [size, size], antialias=True)
            print(f"\n{image_name}, {box_name}:   PSNR vs torchvision antialiased float | ms per crop")
            for name, fn in candidates(image, box, size).items():
                print(f"  {name:42s} {psnr(fn(), ref):7.1f} dB  {median_ms(fn):7.3f} ms")


if __name__ == "__main__":
    main()
