"""``ssl-toolkit pack``: an image folder written as WebDataset tar shards (``webdataset.ShardWriter``).

The folder is read as ``data.name=image_folder`` reads it: ``ImageFolder`` lists the files (same order),
labels them by class sub-folder and checks their headers; a folder with ``train/`` and ``test/`` (or
``val/``) becomes one shard set per split (``OUT/train/shard-000000.tar``, ``OUT/test/...``), any other
folder one set (``OUT/shard-000000.tar``), so ``data.root=OUT`` finds the splits as it does for folders.
Each image is decoded once, exactly as the shard reader will decode it, and its original bytes are written
unchanged (no re-encoding) as ``<key>.<ext>`` with its label as ``<key>.cls``; unreadable files are skipped
and counted. Class indices come from the sorted union of the class names of all splits, so ``cls`` agrees
between train and test even when a split lacks a class, and the names go to ``classes.txt`` beside each
set. Tar members get mtime 0, so packing the same folder twice gives identical shards. The shard index is
built at the end, so the first training run starts at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ssl_toolkit.data.encoded import decode_image_bytes
from ssl_toolkit.data.image_folder import ImageFolder
from ssl_toolkit.data.shard_index import IMAGE_SUFFIXES, load_index, require_webdataset
from ssl_toolkit.data.shards import CLASSES_FILE
from ssl_toolkit.errors import ConfigError, DataError

SHARD_PATTERN = "shard-%06d.tar"


@dataclass
class PackedSplit:
    """One shard set written by `pack_folder`."""

    name: str  # train | val | test, or "" for a folder without splits
    folder: Path
    samples: int = 0
    shards: list[str] = field(default_factory=list)


@dataclass
class PackResult:
    """What `pack_folder` wrote and what it skipped."""

    out: Path
    splits: list[PackedSplit]
    classes: list[str]
    skipped: dict[str, str]  # file -> reason

    def summary(self) -> str:
        """One line: samples and shards per split, classes, and the files skipped (first 5 named)."""
        parts = [f"{s.samples} images in {len(s.shards)} shard(s) ({s.folder})" for s in self.splits]
        labels = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        n = len(self.skipped)
        skipped = "; ".join(f"{p} ({r})" for p, r in list(self.skipped.items())[:5]) + ("; ..." if n > 5 else "")
        tail = f"{n} corrupt or unreadable files skipped" + (f": {skipped}" if n else "")
        return f"packed {', '.join(parts)}; {labels}; {tail}"


def split_folders(folder: Path) -> list[tuple[str, Path]]:
    """``(split, folder)`` pairs: train/val/test sub-folders when the folder has train and test (or val)."""
    if (folder / "train").is_dir() and ((folder / "test").is_dir() or (folder / "val").is_dir()):
        return [(s, folder / s) for s in ("train", "val", "test") if (folder / s).is_dir()]
    return [("", folder)]


def _write_split(images: ImageFolder, split: PackedSplit, classes: list[str], writer_kwargs: dict, bar) -> dict:
    """Decode-check and write one split's images; return the files skipped (path -> reason)."""
    webdataset = require_webdataset()
    skipped: dict[str, str] = {}
    index = {c: k for k, c in enumerate(classes)}
    pattern = str(split.folder / SHARD_PATTERN)
    with webdataset.ShardWriter(pattern, verbose=0, mtime=0, **writer_kwargs) as writer:
        for j, path in enumerate(images.samples):
            bar.update(1)
            ext = Path(path).suffix.lower().lstrip(".")
            try:
                data = Path(path).read_bytes()
                decode_image_bytes(data)
                if ext not in IMAGE_SUFFIXES:
                    raise ValueError(f"extension .{ext} has no WebDataset image suffix ({', '.join(IMAGE_SUFFIXES)})")
            except Exception as exc:  # PIL raises many types for broken files
                skipped[path] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"skipping unreadable image {path}: {skipped[path]}", stacklevel=2)
                continue
            sample = {"__key__": f"{split.samples:09d}", ext: data}
            if images.labels is not None:
                sample["cls"] = index[images.classes[int(images.labels[j])]]
            writer.write(sample)
            split.samples += 1
    split.shards = sorted(str(p) for p in split.folder.glob("*.tar"))
    return skipped


def pack_folder(
    folder: str | Path,
    out: str | Path,
    *,
    shard_size: int = 10_000,
    max_bytes: float = 1e9,
    labelled: bool | None = None,
    progress: bool = True,
) -> PackResult:
    """Write the images under ``folder`` as WebDataset shards under ``out`` (see the module docstring).

    Args:
        folder: an image folder (class sub-folders for labels; train/ and test/ or val/ for splits).
        out: the output folder; it must not hold shards already.
        shard_size: at most this many samples per shard.
        max_bytes: a shard is closed once it holds this many bytes (so it may exceed it by one sample).
        labelled: as for ``ImageFolder``: None labels when every image sits in a class sub-folder.
        progress: show a tqdm bar.

    Raises:
        ConfigError: bad sizes, or ``out`` already holds shards. DataError: no readable image in a split.
    """
    from tqdm.auto import tqdm

    if shard_size < 1 or max_bytes < 1:
        raise ConfigError(f"pack needs --shard-size >= 1 and --max-bytes >= 1, got {shard_size} and {max_bytes}")
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if not folder.is_dir():
        raise DataError(f"pack: {folder} is not a folder of images")
    splits = [(name, src, PackedSplit(name, out / name if name else out)) for name, src in split_folders(folder)]
    for _, _, split in splits:
        if list(split.folder.glob("*.tar")):
            raise ConfigError(f"pack: {split.folder} already holds .tar shards; choose an empty --out or delete them")
    sources = [ImageFolder(str(src), labelled=labelled) for _, src, _ in splits]  # warns about bad headers
    classes = sorted({c for images in sources for c in images.classes})
    skipped = {path: reason for images in sources for path, reason in images.skipped.items()}
    writer_kwargs = {"maxcount": int(shard_size), "maxsize": float(max_bytes)}
    with tqdm(total=sum(len(s) for s in sources), desc="pack", unit="img", disable=not progress) as bar:
        for images, (_, src, split) in zip(sources, splits):
            split.folder.mkdir(parents=True, exist_ok=True)
            skipped.update(_write_split(images, split, classes, writer_kwargs, bar))
            if split.samples == 0:
                raise DataError(f"pack: no readable image in {src}")
            if images.labels is not None:
                (split.folder / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes))
            load_index(split.shards)
    return PackResult(out, [s for _, _, s in splits], classes, skipped)
