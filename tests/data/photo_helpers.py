"""A generated folder of "photos": JPEGs of mixed sizes with coloured shapes on gradients, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photo(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """An RGB image with a colour gradient, a few ellipses and rectangles, and mild noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([120 + 60 * np.sin(xx / rng.uniform(8, 40) + rng.uniform(0, 6)) + yy * 0.2 for _ in range(3)], -1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = (
            int(rng.integers(0, width)),
            int(rng.integers(0, height)),
            int(rng.integers(3, max(width, height) // 3)),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r // 2], fill=colour)
    noisy = np.asarray(image).astype(np.float32) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_photo_folder(
    root: Path, *, per_class: int = 6, classes: int = 2, sides: tuple[int, int] = (40, 90), test: int = 0
) -> Path:
    """``root/train/class_k/*.jpg`` (and ``root/test/...`` with ``test`` images per class) of random sizes.

    Returns ``root``.
    """
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            for i in range(n):
                folder.mkdir(parents=True, exist_ok=True)
                height, width = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
                photo(rng, height, width).save(folder / f"{i:03d}.jpg", quality=90)
    return root
