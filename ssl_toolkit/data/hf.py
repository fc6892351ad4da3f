"""Local Hugging Face ``datasets`` as a map-style dataset: ``data.name=hf_dataset``, ``data.root=<folder>``.

``data.root`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``datasets.load_from_disk``, memory-mapped Arrow) or any local folder that ``datasets.load_dataset`` reads
(parquet or arrow files, an ``imagefolder``), whose splits come from the file names (``train-*.parquet``,
``test-*.parquet``). Nothing downloads: only existing local folders are accepted, and ``load_dataset``
writes its Arrow cache where ``datasets`` keeps it (``HF_DATASETS_CACHE``).

From ``datasets`` this uses loading, the Arrow storage, memory mapping (DataLoader workers share the pages)
and the ``Image``/``ClassLabel`` features. The image column is cast to ``Image(decode=False)`` so that rows
give the encoded bytes, decoded here through ``pil_to_rgb_uint8`` with the corrupt-sample policy of image
folders (``encoded.py``); HF's own decoding would raise inside the loader on the first broken image. Rows are
read by index, so determinism and exact resume come from `EpochSampler` as for every map-style dataset.

Columns: the image is the one ``Image`` feature (or a column named image/img); the label is a ``ClassLabel``
(whose names become ``classes``) or an integer column named label/labels/cls; missing values are -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssl_toolkit.data.encoded import EncodedImages
from ssl_toolkit.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from ssl_toolkit.data.view_specs import as_triple
from ssl_toolkit.errors import ConfigError, DataError

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "cls")
_SPLIT_ALIASES = {"train": ("train",), "test": ("test", "validation", "val"), "val": ("validation", "val", "test")}


def _require_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        hint = "pip install 'ssl-toolkit[shards]'"
        raise ConfigError(f"data.name=hf_dataset needs the `datasets` package: {hint}") from exc
    return datasets


def load_local(root: str) -> Any:
    """The ``Dataset`` or ``DatasetDict`` stored in the local folder ``root`` (never downloads).

    Raises:
        DataError: ``root`` is not a folder, or ``datasets`` cannot read it.
    """
    datasets = _require_datasets()
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"Hugging Face dataset folder {root!r} does not exist; set data.root to a local folder")
    saved = (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()
    try:
        return datasets.load_from_disk(str(folder)) if saved else datasets.load_dataset(str(folder))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, its own DatasetNotFoundError...
        raise DataError(f"cannot read {root!r} as a Hugging Face dataset: {type(exc).__name__}: {exc}") from exc


def pick_split(data: Any, split: str, root: str) -> Any:
    """The ``split`` of a ``DatasetDict`` (test falls back to validation/val, val to validation/test); a single
    ``Dataset`` is the train split."""
    if not hasattr(data, "keys"):
        if split == "train":
            return data
        raise DataError(f"{root!r} holds one Hugging Face dataset without splits; split {split!r} needs a DatasetDict")
    for name in _SPLIT_ALIASES.get(split, (split,)):
        if name in data:
            return data[name]
    raise DataError(f"{root!r} has no {split!r} split; it has: {', '.join(data.keys())}")


def _image_column(table: Any) -> str:
    from datasets import Image

    typed = [name for name, feature in table.features.items() if isinstance(feature, Image)]
    if len(typed) == 1:
        return typed[0]
    named = [name for name in IMAGE_COLUMNS if name in table.column_names]
    if named:
        return named[0]
    raise DataError(f"no image column (an Image feature, or one named image/img) among {table.column_names}")


def _label_column(table: Any) -> str | None:
    from datasets import ClassLabel

    typed = [name for name, feature in table.features.items() if isinstance(feature, ClassLabel)]
    if typed:
        return typed[0]
    return next((name for name in LABEL_COLUMNS if name in table.column_names), None)


class HFImages(EncodedImages):
    """Rows of a Hugging Face ``Dataset`` yielding ``(image (3, H, W) uint8, label or -1)``.

    Args:
        table: a ``datasets.Dataset``.
        name: how errors and warnings name it (e.g. the folder and split).
        labelled: True needs a label column without missing values; False gives -1; None (default) labels
            when a label column exists and every row has a value.
        mean: per-channel mean for normalisation (ImageNet by default, as for image folders).
        std: per-channel std for normalisation.
        native_size: side of the images if known (sizes the eval resize); None otherwise.

    Raises:
        DataError: no image column, an empty table, or missing labels with ``labelled=True``.
    """

    def __init__(
        self,
        table: Any,
        *,
        name: str = "hf_dataset",
        labelled: bool | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        native_size: int | None = None,
    ) -> None:
        import pyarrow.compute as pc
        from datasets import ClassLabel, Image

        if len(table) == 0:
            raise DataError(f"Hugging Face dataset {name} has no rows")
        self.image_column = _image_column(table)
        self.label_column = _label_column(table)
        self._init_skipping(len(table), name)
        labels = None
        if self.label_column is not None:
            column = table.with_format("arrow")[self.label_column]
            labels = torch.from_numpy(pc.fill_null(column, -1).to_numpy().astype("int64"))
        complete = labels is not None and bool((labels >= 0).all())
        if labelled is None:
            labelled = complete
        if labelled and not complete:
            raise DataError(
                f"labelled=True needs a label column ({', '.join(LABEL_COLUMNS)} or a ClassLabel) with a value in "
                f"every row of {name}; columns: {table.column_names}; use labelled=false for unlabelled data"
            )
        self.labelled = bool(labelled)
        self.labels = labels if self.labelled else None
        feature = table.features.get(self.label_column) if self.label_column else None
        top = int(labels.max()) + 1 if self.labelled else 0  # type: ignore[union-attr]
        if not self.labelled:
            self.classes: list[str] = []
        elif isinstance(feature, ClassLabel) and feature.num_classes >= top:
            self.classes = list(feature.names)
        else:
            self.classes = [str(k) for k in range(top)]
        self.num_classes: int | None = len(self.classes) if self.labelled else None
        # rows give {"bytes": ..., "path": ...} instead of a decoded PIL image
        self.table = table.select_columns([self.image_column]).cast_column(self.image_column, Image(decode=False))
        self.mean, self.std = as_triple(mean, "mean"), as_triple(std, "std")
        self.native_size = native_size

    def read(self, index: int) -> bytes:
        """The encoded image bytes of row ``index`` (from the table, or from the file it points to)."""
        cell = self.table[int(index)][self.image_column]
        if cell is None:
            raise ValueError("the image cell is empty")
        if isinstance(cell, dict) and cell.get("bytes") is None and cell.get("path"):
            return Path(cell["path"]).read_bytes()
        return cell["bytes"] if isinstance(cell, dict) else bytes(cell)

    def sample_name(self, index: int) -> str:
        """``name[row]``, with the image's file path when the table stores one."""
        try:
            cell = self.table[int(index)][self.image_column]
            path = cell.get("path") if isinstance(cell, dict) else None
        except Exception:  # noqa: BLE001 - naming a broken row must not fail
            path = None
        return f"{self.where}[{index}]" + (f" ({path})" if path else "")


def build_hf_dataset(
    *, split: str, root: str | None, download: bool, labelled: bool | None, max_pixels: int | None = None
) -> HFImages:
    """``DATASETS["hf_dataset"]``: the ``split`` of the local Hugging Face dataset at ``root``."""
    if root is None:
        raise ConfigError("data.name=hf_dataset needs data.root=<folder saved with save_to_disk, or of parquet files>")
    if download:
        raise ConfigError("hf_dataset reads local folders only; set data.download=false and data.root=<folder>")
    table = pick_split(load_local(root), split, root)
    images = HFImages(table, name=f"{root}[{split}]", labelled=labelled)
    if max_pixels is not None:
        images.max_pixels = int(max_pixels)
    return images
