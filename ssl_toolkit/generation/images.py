"""Validating, encoding and writing one generated image (the last step before its manifest row).

An output is checked before it is written (finite pixels, (H, W, 3), the requested size after an antialiased
resize) and after (the file decodes to RGB of that size); a failing one is never left on disk. Images are
saved as RGB, never BGR (AdaInf's ``cv2.imread`` pitfall, spec §3.3). PNG is the default because it is
lossless, so the sha256 of a regenerated image is reproducible; WebP and JPEG are written at quality 95.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_toolkit.generation.manifest import write_atomic

# --format -> (PIL format, file extension, save options)
FORMATS: dict[str, tuple[str, str, dict]] = {
    "png": ("PNG", ".png", {}),
    "webp": ("WEBP", ".webp", {"quality": 95}),
    "jpeg": ("JPEG", ".jpg", {"quality": 95}),
}


class InvalidOutput(ValueError):
    """An output that failed validation; it is not written."""


def encode_image(array: np.ndarray, size: tuple[int, int], image_format: str) -> bytes:
    """Validate a float (H, W, 3) image in [0, 1], resize it (antialiased) to ``size`` = (W, H), encode it."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidOutput(f"output has shape {tuple(array.shape)}, expected (H, W, 3)")
    if not np.isfinite(array).all():
        raise InvalidOutput("output has non-finite values (NaN or Inf)")
    image = Image.fromarray(np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))  # RGB
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.LANCZOS)
    if image.size != tuple(size):
        raise InvalidOutput(f"output size {image.size} after resizing, expected {tuple(size)}")
    pil_format, _, options = FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def write_checked(path: Path, data: bytes, size: tuple[int, int]) -> str:
    """Write ``data`` atomically, re-open it with PIL (decode + size check); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    try:
        with Image.open(path) as image:
            image.load()
            if image.size != tuple(size) or image.mode != "RGB":
                raise InvalidOutput(f"written file is {image.mode} {image.size}, expected RGB {tuple(size)}")
    except InvalidOutput:
        path.unlink(missing_ok=True)
        raise
    except Exception as err:  # PIL raises many types on a bad file
        path.unlink(missing_ok=True)
        raise InvalidOutput(f"written file does not decode: {type(err).__name__}: {err}") from err
    return hashlib.sha256(data).hexdigest()
