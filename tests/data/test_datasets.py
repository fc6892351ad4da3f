"""Datasets: image-folder decoding of PIL modes, the corrupt-file policy, the Fashion-MNIST IDX reader."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_toolkit.data import ArrayDataset, FashionMNIST, ImageFolder, build_dataset, datasets
from ssl_toolkit.errors import ConfigError, DataError


def _write_folder(root: Path) -> None:
    """cat/ and dog/ with RGB, L, LA, RGBA, P, I;16 and CMYK images, a truncated JPEG, a garbage PNG."""
    gen = np.random.default_rng(0)  # only to make fixture pixels; the library itself never uses numpy RNGs
    noise = gen.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(noise).save(root / "cat" / "a_rgb.jpg", quality=90)
    Image.new("L", (20, 16), 77).save(root / "cat" / "b_grey.png")
    Image.new("LA", (20, 16), (200, 128)).save(root / "cat" / "c_la.png")
    Image.new("RGBA", (12, 12), (10, 20, 30, 255)).save(root / "dog" / "d_rgba.png")
    pal = Image.new("P", (9, 9), 1)
    pal.putpalette([0, 0, 0, 250, 100, 50] + [0] * 762)
    pal.save(root / "dog" / "e_pal.png")
    Image.fromarray(np.full((10, 14), 40000, dtype=np.uint16)).save(root / "dog" / "f_i16.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(root / "dog" / "g_cmyk.jpg")
    buf = root / "dog" / "h_truncated.jpg"
    Image.fromarray(noise).save(buf, quality=95)
    buf.write_bytes(buf.read_bytes()[: len(buf.read_bytes()) // 2])
    (root / "cat" / "z_garbage.png").write_bytes(b"this is not an image" * 10)


def test_image_folder_modes_labels_and_corrupt_files(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    with pytest.warns(UserWarning, match="z_garbage.png"):
        ds = ImageFolder(str(tmp_path))
    assert len(ds) == 8 and ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert ds.mean == (0.485, 0.456, 0.406) and ds.native_size is None
    with pytest.warns(UserWarning, match="h_truncated.jpg") as record:
        items = [ds[i] for i in range(len(ds))]
    assert len(record) == 1  # one warning per file, not per access
    for image, label in items:
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
        assert label in (0, 1)
    by_name = {Path(p).stem: items[k][0] for k, p in enumerate(ds.samples)}
    assert by_name["b_grey"].shape == (3, 16, 20) and (by_name["b_grey"] == 77).all()
    assert (by_name["c_la"] == 100).all()  # 200 * 128 / 255, composited onto black
    assert by_name["d_rgba"][:, 0, 0].tolist() == [10, 20, 30]
    assert by_name["e_pal"][:, 0, 0].tolist() == [250, 100, 50]
    assert (by_name["f_i16"] == 156).all()  # 40000 / 65535 * 255
    assert by_name["g_cmyk"].shape == (3, 8, 8)
    # the truncated file (last index) is replaced by the next readable one, wrapping around to index 0
    assert torch.equal(items[-1][0], items[0][0]) and items[-1][1] == 0
    assert len(ds.skipped) == 2 and ds.summary().startswith("2 corrupt or unreadable files skipped:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known-bad file is not decoded (nor warned about) again
        assert torch.equal(ds[7][0], items[0][0])


def test_failures_in_loader_workers_reach_the_main_process_summary(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    with pytest.warns(UserWarning, match="z_garbage.png"):
        ds = ImageFolder(str(tmp_path))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=list)
    assert sum(len(batch) for batch in loader) == 8  # the truncated file was replaced in the worker
    summary = ds.summary()
    assert summary.startswith("2 corrupt or unreadable files skipped:") and "h_truncated.jpg" in summary


def test_image_folder_unlabelled_and_errors(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        Image.new("RGB", (8, 8), (k, k, k)).save(flat / f"{k}.png")
    ds = ImageFolder(str(flat), native_size=8, mean=(0.5,), std=(0.25,))
    assert ds.labels is None and ds.num_classes is None and ds.std == (0.25, 0.25, 0.25)
    assert [ds[k][1] for k in range(3)] == [-1, -1, -1]
    assert ImageFolder(str(tmp_path), labelled=False)[0][1] == -1
    (tmp_path / "top.png").write_bytes((flat / "0.png").read_bytes())
    with pytest.raises(DataError, match="class subfolder"):
        ImageFolder(str(tmp_path), labelled=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no readable image"):
        ImageFolder(str(empty))
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(str(tmp_path / "missing"))


def test_build_dataset_image_folder_splits(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "a" / f"{split}.png")
    train = build_dataset(name="image_folder", root=str(tmp_path))
    test = build_dataset(name="image_folder", split="test", root=str(tmp_path))
    assert Path(train.samples[0]).name == "train.png" and Path(test.samples[0]).name == "val.png"
    with pytest.raises(ConfigError, match="fashion_mnist, hf_dataset, image_folder, webdataset"):
        build_dataset(name="cifar10")
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(name="image_folder")


def _idx(images: np.ndarray, labels: np.ndarray) -> tuple[bytes, bytes]:
    head = struct.pack(">4B3I", 0, 0, 8, 3, *images.shape)
    return head + images.tobytes(), struct.pack(">4BI", 0, 0, 8, 1, len(labels)) + labels.tobytes()


@pytest.mark.parametrize("layout", ["gz_raw_subfolder", "plain_root"])
def test_fashion_mnist_reads_idx(tmp_path: Path, layout: str) -> None:
    images = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    img_bytes, lab_bytes = _idx(images, labels)
    if layout == "gz_raw_subfolder":
        raw = tmp_path / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(img_bytes))
        (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab_bytes))
    else:
        (tmp_path / "t10k-images-idx3-ubyte").write_bytes(img_bytes)
        (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(lab_bytes)
    ds = FashionMNIST("test", root=str(tmp_path))
    assert len(ds) == 5 and ds.native_size == 28 and ds.num_classes == 10
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [3, 1, 4, 1, 5]
    image, label = ds[2]
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8 and label == 4
    assert torch.equal(image[1], torch.from_numpy(images[2])) and ds.mean == (0.2860,) * 3


def test_fashion_mnist_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        FashionMNIST("train")
    message = str(err.value)
    assert "no-debian" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.download=true" in message and "data.root=" in message
    with pytest.raises(DataError, match="bogus holds no Fashion-MNIST files.*data.name=image_folder"):
        FashionMNIST("train", root=str(tmp_path / "bogus"))  # a root never falls back to another copy
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="3 dimensions"):
        FashionMNIST("train", root=str(tmp_path))
    with pytest.raises(ConfigError, match="train, test"):
        FashionMNIST("val", root=str(tmp_path))


def test_array_dataset() -> None:
    images = torch.randint(0, 256, (4, 10, 12), dtype=torch.uint8)
    ds = ArrayDataset(images, None, mean=(0.5,) * 3, std=(0.5,) * 3)
    image, label = ds[1]
    assert image.shape == (3, 10, 12) and label == -1 and ds.native_size == 10 and ds.num_classes is None
    labelled = ArrayDataset(images.unsqueeze(1), torch.tensor([0, 2, 1, 2]), mean=(0.5,), std=(0.5,))
    assert labelled[3][1] == 2 and labelled.num_classes == 3
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(images.float(), None, mean=(0.5,), std=(0.5,))
