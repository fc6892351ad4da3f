"""Image files -> uint8 RGB tensors (3, H, W): torchvision's decoders where they give what the policy wants, PIL
for the rest.

torchvision (libjpeg-turbo, libpng) decodes straight into a tensor: about half PIL's time on a 480x360 JPEG and
no ``permute().contiguous()`` copy (the result is a channels-last (3, H, W) view, which torchvision's resize
reads fastest). It is used for JPEG (any colour space; greyscale and CMYK come out as RGB, equal to PIL's) and
for 8-bit greyscale/RGB PNG. Everything else (palettes, alpha, 16-bit and float images, GIF, WebP, TIFF, BMP)
goes through PIL and `pil_to_rgb_uint8`, which composites alpha onto black and scales high bit depths. A file
torchvision refuses is tried with PIL, so a corrupt file fails with PIL's message.

`encoded_jpeg` hands out a JPEG's bytes undecoded for decoding later in a batch (`decode_batch`, on any device:
nvJPEG on a GPU). torchvision calls its decoders deprecated since 0.29 (in favour of TorchCodec) and warns on
every call; the warning is silenced here, where the call is made.

PIL's decompression-bomb warning is silenced too: image folders enforce their own pixel limit from the header
before decoding (``data.max_pixels``, see ``image_folder.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def pil_to_rgb_uint8(img: Image.Image) -> Tensor:
    """Decode a PIL image into a (3, H, W) uint8 tensor (a channels-last view, no copy after decoding).

    Greyscale is repeated to 3 channels, alpha is composited onto black (premultiplied, so hidden colours
    of transparent pixels do not leak), palettes are expanded, 16-bit ("I;16", "I") is scaled from
    [0, 65535] to [0, 255], float ("F") from [0, 1] when its maximum is at most 1, CMYK converted.
    """
    mode = img.mode
    if mode in _HIGH_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        if mode != "F":
            arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
        elif arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        grey = torch.from_numpy(np.rint(np.clip(arr, 0, 255)).astype(np.uint8))
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "1":
        img = img.convert("L")
    if img.mode == "L":
        grey = torch.from_numpy(np.array(img, dtype=np.uint8))
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    if img.mode in _ALPHA_MODES:
        rgba = torch.from_numpy(np.array(img.convert("RGBA"), dtype=np.uint8)).permute(2, 0, 1)
        rgb = (rgba[:3].to(torch.int32) * rgba[3:].to(torch.int32) + 127) // 255  # (3, H, W), rounded
        return rgb.to(torch.uint8)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def torchvision_decodes(head: bytes) -> bool:
    """Whether torchvision decodes a file starting with ``head`` (>= 26 bytes) as the policy wants."""
    if head.startswith(JPEG_MAGIC):
        return True
    if head.startswith(PNG_MAGIC) and head[12:16] == b"IHDR" and len(head) >= 26:
        bit_depth, colour_type = head[24], head[25]
        return bit_depth == 8 and colour_type in (0, 2)  # greyscale or RGB, 8 bits, no alpha, no palette
    return False


def _torchvision():
    import torchvision.io as tio

    return tio


def _decode_bytes(data: Tensor) -> Tensor:
    tio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tio.decode_image(data, mode=tio.ImageReadMode.RGB)


def decode_pil(path: str | Path) -> Tensor:
    """Decode with PIL (any format it reads); raises whatever PIL raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()
            return pil_to_rgb_uint8(img)


def read_bytes(path: str | Path) -> Tensor:
    """The file's bytes as a 1-D uint8 tensor (what torchvision's decoders take)."""
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def decode_file(path: str | Path) -> Tensor:
    """Decode an image file into uint8 (3, H, W); raises what PIL raises for a file neither library reads."""
    data = read_bytes(path)
    if torchvision_decodes(data[:32].numpy().tobytes()):
        try:
            return _decode_bytes(data)
        except RuntimeError:
            pass  # e.g. an unusual JPEG variant: PIL decodes it or raises a readable error
    return decode_pil(path)


def encoded_jpeg(path: str | Path) -> Tensor | None:
    """A JPEG file's bytes (1-D uint8) to decode later with `decode_batch`, or None for any other format."""
    data = read_bytes(path)
    return data if data[:3].numpy().tobytes() == JPEG_MAGIC else None


def is_encoded(image: Tensor) -> bool:
    """A 1-D uint8 tensor holds an encoded file; decoded images are (3, H, W)."""
    return image.dim() == 1


def decode_batch(encoded: Sequence[Tensor], device: torch.device | str) -> list[Tensor | None]:
    """Decode JPEG bytes (CPU tensors) into uint8 (3, H, W) images on ``device`` in one call (nvJPEG on CUDA).

    When the batch call fails (a corrupt file), each image is decoded alone; an image that fails alone too is
    None in the result, for the caller to replace.
    """
    tio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(tio.decode_jpeg(list(encoded), mode=tio.ImageReadMode.RGB, device=device))
        except RuntimeError:
            out: list[Tensor | None] = []
            for data in encoded:
                try:
                    out.append(tio.decode_jpeg(data, mode=tio.ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out
