"""Source images of a bank: a dataset from ``ssl_toolkit.data`` seen as keys, labels and PIL images.

The bank mirrors its source: an image folder's variants live under the file's path relative to the folder
(without extension), a dataset's under ``<split>/<index:06d>``. Sources are decoded with ``ImageFolder.load``
rather than ``__getitem__``, because the dataset replaces an undecodable file by the next readable one, which
would silently give an item another image's variants; here such an item is reported as invalid instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ssl_toolkit.errors import ConfigError, DataError


class Sources:
    """Items ``0..n-1`` of a dataset with their bank key, source path, label and RGB image.

    Args:
        name: a dataset name of ``ssl_toolkit.data.DATASETS`` (``fashion_mnist``, ``image_folder``).
        split: dataset split.
        root: dataset root (required for image folders).
        limit: keep only the first ``limit`` items (for trials).

    Raises:
        ConfigError: unknown dataset or split; DataError: unreadable data or two files mapping to one key.
    """

    def __init__(self, name: str, *, split: str = "train", root: str | None = None, limit: int | None = None) -> None:
        from ssl_toolkit.data import ImageFolder, build_dataset

        if limit is not None and limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {limit}")
        self.dataset = build_dataset(name=name, split=split, root=root, download=False, labelled=None)
        self.name, self.split = name, split
        n = len(self.dataset)  # type: ignore[arg-type]
        self.n = n if limit is None else min(n, limit)
        self.folder: Path | None = None
        self.paths: list[str] = []
        if isinstance(self.dataset, ImageFolder):
            self.folder = self.dataset.root
            self.paths = [Path(p).relative_to(self.folder).as_posix() for p in self.dataset.samples[: self.n]]
            keys = [str(Path(p).with_suffix("")) for p in self.paths]
            seen: dict[str, str] = {}
            for path, key in zip(self.paths, keys):
                if key in seen:
                    raise DataError(
                        f"{seen[key]} and {path} in {self.folder} map to the same bank key {key!r} (the key drops "
                        "the extension); rename one of them"
                    )
                seen[key] = path
            self.keys = keys
        else:
            self.keys = [f"{split}/{i:06d}" for i in range(self.n)]
        labels = getattr(self.dataset, "labels", None)
        self.labels = [int(x) for x in labels[: self.n]] if labels is not None else [-1] * self.n

    def __len__(self) -> int:
        return self.n

    def src_path(self, i: int) -> str:
        """The file relative to the image folder, or the bank key for datasets held in memory."""
        return self.paths[i] if self.paths else self.keys[i]

    def image(self, i: int) -> Image.Image:
        """Item ``i`` decoded as an RGB PIL image (greyscale repeated); raises whatever decoding raises."""
        ds = self.dataset
        if hasattr(ds, "load"):  # ImageFolder: decode this file, never a substitute
            tensor = ds.load(i)
        elif hasattr(ds, "images") and getattr(ds, "greyscale", False):
            return Image.fromarray(np.asarray(ds.images[i], dtype=np.uint8)).convert("RGB")
        else:
            tensor = ds[i][0]
        return Image.fromarray(tensor.permute(1, 2, 0).contiguous().numpy())
