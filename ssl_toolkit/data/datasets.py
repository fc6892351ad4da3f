"""Datasets yielding ``(image, label)``: Fashion-MNIST from local IDX files, image folders, in-memory arrays,
WebDataset tar shards (``shards.py``) and local Hugging Face datasets (``hf.py``).

Every dataset here yields a uint8 tensor (3, H, W) and an int label (-1 when unlabelled), and carries
``mean``, ``std``, ``native_size``, ``num_classes`` and ``labels`` (int64 tensor or None). Fashion-MNIST
is read straight from its IDX files (gzip or raw) with numpy, because torchvision's checksums reject the
Debian package's files; torchvision is used only to download when asked. The corrupt-file policy of image
folders is described in ``image_folder.py`` (the same for shards and HF datasets: ``encoded.py``); views and
their determinism in ``view_dataset.py``.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssl_toolkit.data.hf import build_hf_dataset
from ssl_toolkit.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolder
from ssl_toolkit.data.shards import build_webdataset
from ssl_toolkit.data.view_specs import as_triple
from ssl_toolkit.errors import ConfigError, DataError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
LOCAL_FASHION_MNIST = "./data/FashionMNIST/raw"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when the name ends in ``.gz``).

    Raises:
        DataError: the file cannot be read or is not a uint8 IDX file with ``ndim`` dimensions.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    offset = 4 + 4 * ndim
    if len(data) < offset or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DataError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    count = math.prod(dims)
    if len(data) - offset != count:
        raise DataError(f"{path}: header says shape {dims} ({count} bytes) but {len(data) - offset} follow")
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=offset).reshape(dims)


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_dirs(root: str | None) -> list[Path]:
    """Folders searched for the IDX files: ``root/FashionMNIST/raw`` and ``root`` when a root is given (only
    those: a root that holds something else must not silently fall back to another copy), else Debian's
    package folder and ``./data/FashionMNIST/raw``."""
    if root:
        return [Path(root).expanduser() / "FashionMNIST" / "raw", Path(root).expanduser()]
    return [Path(DEBIAN_FASHION_MNIST), Path(LOCAL_FASHION_MNIST)]


class FashionMNIST(Dataset):
    """Fashion-MNIST (60k train / 10k test, 28x28 greyscale, 10 classes) held as one uint8 tensor.

    Args:
        split: "train" or "test".
        root: folder holding the IDX files (or ``FashionMNIST/raw`` below it); searched before the
            Debian package's ``/usr/share/datasets/fashion-mnist`` and ``./data/FashionMNIST/raw``.
        download: when no files are found, download them with torchvision into ``root or ./data``.

    Raises:
        ConfigError: unknown split.
        DataError: no files found (and no download asked for), or malformed files.
    """

    def __init__(self, split: str = "train", *, root: str | None = None, download: bool = False) -> None:
        if split not in _IDX_FILES:
            raise ConfigError(f"Fashion-MNIST split {split!r} is unknown; accepted: {', '.join(_IDX_FILES)}")
        images_path, labels_path = self._locate(split, root, download)
        images = read_idx(images_path, 3)
        labels = read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels")
        self.split = split
        self.source = str(images_path.parent)
        self.images = torch.from_numpy(images.copy())  # (N, 28, 28) uint8, about 47 MB for train
        self.labels: Tensor | None = torch.from_numpy(labels.astype(np.int64))
        self.classes = list(FASHION_MNIST_CLASSES)
        self.num_classes: int | None = len(self.classes)
        self.native_size = int(images.shape[1])
        self.greyscale = True  # views skip colour-only augmentations
        self.mean, self.std = NORMALIZATION["fashion_mnist"]

    @staticmethod
    def _locate(split: str, root: str | None, download: bool) -> tuple[Path, Path]:
        names = _IDX_FILES[split]
        dirs = fashion_mnist_dirs(root)
        for directory in dirs:
            found = [_find(directory, name) for name in names]
            if found[0] is not None and found[1] is not None:
                return found[0], found[1]
        if download:
            from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

            target = root or "./data"
            try:
                TorchvisionFashionMNIST(target, train=split == "train", download=True)
            except Exception as exc:  # network and checksum errors come in many types
                raise DataError(f"downloading Fashion-MNIST into {target!r} failed: {exc}") from exc
            raw = Path(target).expanduser() / "FashionMNIST" / "raw"
            found = [_find(raw, name) for name in names]
            if found[0] is not None and found[1] is not None:
                return found[0], found[1]
            dirs.append(raw)
        looked = ", ".join(str(d) for d in dirs)
        if root and not download:
            raise DataError(
                f"data.root={root} holds no Fashion-MNIST files ({names[0]}[.gz]); for a folder of your own images "
                "use data.name=image_folder, for Fashion-MNIST leave data.root unset"
            )
        raise DataError(
            f"Fashion-MNIST {split} files ({names[0]}[.gz], {names[1]}[.gz]) not found; looked in: {looked}. "
            "Fix: `apt-get install dataset-fashion-mnist`, or set data.download=true, "
            "or data.root=<folder with the IDX files>"
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index].unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, 28, 28), 2.3 kB copy
        return image, int(self.labels[index])  # type: ignore[index]

    def image_batch(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Items ``start:stop`` at once, as ``__getitem__`` gives them. Shape: (B, 3, 28, 28) uint8, (B,) int64."""
        return self.images[start:stop].unsqueeze(1).expand(-1, 3, -1, -1), self.labels[start:stop]  # type: ignore[index]


class ArrayDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) with C in {1, 3}, or (N, H, W), and optional labels.

    Args:
        images: uint8 tensor; greyscale is repeated to 3 channels per item.
        labels: (N,) integer labels, or None for unlabelled data (items get -1).
        mean: per-channel mean for normalisation.
        std: per-channel std for normalisation.
        native_size: side used by the eval resize; defaults to the shorter image side.

    Shape:
        images: (N, C, H, W) or (N, H, W); labels: (N,).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        native_size: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8:
            raise DataError(f"ArrayDataset images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape)
            raise DataError(f"ArrayDataset images must be (N, H, W) or (N, 1|3, H, W), got {shape}")
        if labels is not None and (labels.dim() != 1 or len(labels) != len(images)):
            raise DataError(f"labels must be ({len(images)},), got {tuple(labels.shape)}")
        self.images = images
        self.labels: Tensor | None = None if labels is None else labels.to(torch.int64)
        has_labels = self.labels is not None and len(self.labels) > 0 and int(self.labels.max()) >= 0
        self.num_classes: int | None = int(self.labels.max()) + 1 if has_labels else None  # type: ignore[union-attr]
        self.native_size = native_size or int(min(images.shape[-2:]))
        self.mean = as_triple(mean, "mean")
        self.std = as_triple(std, "std")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index].expand(3, -1, -1).contiguous()  # (3, H, W)
        return image, (int(self.labels[index]) if self.labels is not None else -1)

    def image_batch(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Items ``start:stop`` at once, as ``__getitem__`` gives them. Shape: (B, 3, H, W) uint8, (B,) int64."""
        images = self.images[start:stop].expand(-1, 3, -1, -1)
        labels = self.labels[start:stop] if self.labels is not None else torch.full((len(images),), -1)
        return images, labels


def _fashion_mnist(
    *, split: str, root: str | None, download: bool, labelled: bool | None, max_pixels: int | None = None
) -> Dataset:
    return FashionMNIST(split, root=root, download=download)  # always labelled; `labelled`, `max_pixels` ignored


def _image_folder(
    *, split: str, root: str | None, download: bool, labelled: bool | None, max_pixels: int | None = None
) -> Dataset:
    if root is None:
        raise ConfigError("data.name=image_folder needs data.root=<folder of images>")
    if download:
        raise ConfigError("image_folder cannot be downloaded; set data.download=false and data.root=<folder>")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"image_folder split {split!r} is unknown; accepted: train, val, test")
    base = Path(root).expanduser()
    has_splits = (base / "train").is_dir() and ((base / "test").is_dir() or (base / "val").is_dir())
    if has_splits:
        other = "val" if split == "test" else "test"
        folder = base / split if (base / split).is_dir() else base / other
    elif split == "train":
        folder = base
    else:
        raise DataError(f"split {split!r} needs {base}/train and {base}/test (or val); neither layout found")
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}  # None: the folder's default limit
    return ImageFolder(str(folder), labelled=labelled, **limit)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "fashion_mnist": _fashion_mnist,
    "image_folder": _image_folder,
    "webdataset": build_webdataset,  # tar shards (data/shards.py; `ssl-toolkit pack` writes them)
    "hf_dataset": build_hf_dataset,  # a local Hugging Face dataset folder (data/hf.py)
}
# Per-channel normalisation each dataset uses, known without reading it (exports from a checkpoint need it).
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "image_folder": (IMAGENET_MEAN, IMAGENET_STD),
    "webdataset": (IMAGENET_MEAN, IMAGENET_STD),
    "hf_dataset": (IMAGENET_MEAN, IMAGENET_STD),
}


def build_dataset(
    *,
    name: str,
    split: str = "train",
    root: str | None = None,
    download: bool = False,
    labelled: bool | None = None,
    max_pixels: int | None = None,
) -> Dataset:
    """Build a dataset from ``DATASETS`` by name.

    Args:
        name: a key of ``DATASETS``.
        split: "train" or "test" ("val" too for image folders with a ``val`` subfolder).
        root: where the data lives (required for image_folder, webdataset and hf_dataset).
        download: download when missing (Fashion-MNIST only).
        labelled: image_folder, webdataset, hf_dataset: force labels on/off; None infers from the data.
        max_pixels: image_folder only: skip larger images (None: `image_folder.DEFAULT_MAX_PIXELS`).

    Raises:
        ConfigError: unknown name or split, or missing root; DataError when the data cannot be read.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; accepted: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split=split, root=root, download=download, labelled=labelled, max_pixels=max_pixels)
