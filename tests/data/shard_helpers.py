"""Fixtures for shard and Hugging Face dataset tests: mixed-size images, hand-written shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """``array`` (H, W, 3) uint8 encoded as ``fmt``."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def noise_image(seed: int, height: int, width: int) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_mixed_folder(root: Path, n: int = 6, *, corrupt: bool = False) -> Path:
    """A flat folder of ``n`` JPEG/PNG images of different sizes; with ``corrupt``, a garbage PNG and a
    truncated JPEG too."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
        (root / f"img_{i:02d}.{ext}").write_bytes(encode(noise_image(i, 10 + 3 * i, 14 + i), fmt))
    if corrupt:
        (root / "zz_garbage.png").write_bytes(b"not an image at all" * 8)
        data = encode(noise_image(99, 40, 40), "JPEG")
        (root / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def write_shard(path: Path, samples: list[dict]) -> Path:
    """One tar shard written with webdataset's TarWriter from ready-made samples."""
    import webdataset

    path.parent.mkdir(parents=True, exist_ok=True)
    with webdataset.TarWriter(str(path), mtime=0) as writer:
        for sample in samples:
            writer.write(sample)
    return path
