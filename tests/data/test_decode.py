"""Decoding (torchvision where it applies, PIL otherwise) and the pixel limit of image folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_toolkit.data import ImageFolder
from ssl_toolkit.data.decode import decode_batch, decode_file, decode_pil, encoded_jpeg, read_bytes, torchvision_decodes


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_jpeg_and_plain_png_decode_with_torchvision_like_pil(tmp_path: Path) -> None:
    Image.fromarray(_noise(30, 41)).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(_noise(30, 41)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(_noise(30, 41)).convert("L").save(tmp_path / "grey.jpg")
    Image.fromarray(_noise(17, 9)).save(tmp_path / "b.png")
    Image.fromarray(_noise(17, 9)[..., 0]).save(tmp_path / "grey.png")
    for name in ("a.jpg", "cmyk.jpg", "grey.jpg", "b.png", "grey.png"):
        path = tmp_path / name
        assert torchvision_decodes(read_bytes(path)[:32].numpy().tobytes())
        image, reference = decode_file(path), decode_pil(path)
        assert image.shape == reference.shape and image.dtype == torch.uint8
        assert (image.int() - reference.int()).abs().max() <= 1  # the same libjpeg-turbo / libpng result
        assert image.permute(1, 2, 0).is_contiguous()  # channels-last, as decoded: no permute copy
    batch = decode_batch([encoded_jpeg(tmp_path / "a.jpg"), encoded_jpeg(tmp_path / "grey.jpg")], "cpu")
    assert torch.equal(batch[0], decode_file(tmp_path / "a.jpg")) and batch[1].shape == (3, 30, 41)
    assert encoded_jpeg(tmp_path / "b.png") is None


def test_other_formats_go_through_pil(tmp_path: Path) -> None:
    Image.new("RGBA", (6, 5), (200, 100, 50, 128)).save(tmp_path / "alpha.png")
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(_noise(8, 8)).save(tmp_path / "c.webp")
    assert not torchvision_decodes(read_bytes(tmp_path / "alpha.png")[:32].numpy().tobytes())
    assert decode_file(tmp_path / "alpha.png")[:, 0, 0].tolist() == [100, 50, 25]  # composited onto black
    assert (decode_file(tmp_path / "deep.png") == 156).all()  # 40000 / 65535 * 255
    assert decode_file(tmp_path / "c.webp").shape == (3, 8, 8)


def test_a_corrupt_jpeg_in_a_batch_decode_is_none(tmp_path: Path) -> None:
    Image.fromarray(_noise(20, 20)).save(tmp_path / "good.jpg")
    data = read_bytes(tmp_path / "good.jpg")
    out = decode_batch([data, data[: len(data) // 3]], "cpu")
    assert out[0].shape == (3, 20, 20) and out[1] is None


def test_images_above_max_pixels_are_skipped_from_their_header(tmp_path: Path) -> None:
    Image.fromarray(_noise(10, 10)).save(tmp_path / "small.png")
    Image.fromarray(_noise(60, 50)).save(tmp_path / "big.jpg")
    with pytest.warns(UserWarning, match=r"big.jpg: ValueError: 50x60 = 0.0 MP is above data.max_pixels") as record:
        folder = ImageFolder(str(tmp_path), max_pixels=2000)
    assert len(record) == 1 and len(folder) == 1 and folder.too_large == 1
    assert folder.summary().startswith("1 corrupt or unreadable files skipped (1 of them above data.max_pixels)")
    assert len(ImageFolder(str(tmp_path))) == 2  # the default limit is 64 MP


def test_pil_decompression_bombs_never_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1000 pixels and refuses above 2000
    Image.fromarray(_noise(30, 40)).save(tmp_path / "warned.png")  # 1200 pixels
    Image.fromarray(_noise(60, 60)).save(tmp_path / "refused.png")  # 3600 pixels
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        folder = ImageFolder(str(tmp_path), max_pixels=None)
        image, _ = folder[0]
    assert [Path(p).name for p in folder.samples] == ["warned.png"] and image.shape == (3, 30, 40)
    assert len(record) == 1 and "refused.png: DecompressionBombError" in str(record[0].message)
