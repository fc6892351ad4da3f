"""An offset table of WebDataset tar shards: where each sample's image lies, and its label, built once.

WebDataset shards are plain (uncompressed) tar files in which the files of one sample share a key and
follow each other (``000017.jpg``, ``000017.cls``); the key is the path up to the first dot of the base name
(``webdataset.tariterators.base_plus_ext``, used here so the grouping is webdataset's own). The index reads
only the tar headers (stdlib ``tarfile`` seeks over the data) plus the few bytes of each label, and records
per sample: shard number, byte offset and size of the image, label (-1 when absent). A sample is then one
``os.pread`` away, which makes the shards a map-style dataset of known length.

The index is cached beside the first shard as ``.ssl-toolkit-index-<digest>.npz`` (numpy arrays only, loaded
with ``allow_pickle=False``: reading it never executes code), keyed by the shard paths relative to that
folder and checked against each shard's size and modification time; a stale or foreign cache is rebuilt.
A ``filelock`` lock makes concurrent processes (``accelerate launch``) build it once. When the folder is
read-only the index is kept in memory and rebuilt on each run, with a warning.

Compressed shards (``.tar.gz``) cannot be read by offset and are refused with a message to repack them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_toolkit.errors import ConfigError, DataError

INDEX_VERSION = 1
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")
LABEL_SUFFIXES = ("cls", "cls.txt", "label", "label.txt")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members, skipped like its readers do


def require_webdataset():
    """The ``webdataset`` module, or a ConfigError saying how to install it."""
    try:
        import webdataset
    except ImportError as exc:
        raise ConfigError("WebDataset shards need the `webdataset` package: pip install 'ssl-toolkit[shards]'") from exc
    return webdataset


@dataclass
class ShardIndex:
    """Per-sample arrays over a list of shards (all of length N, except ``missing``)."""

    shards: list[str]  # absolute paths, in order
    shard: np.ndarray  # (N,) int32: which shard holds the sample
    offset: np.ndarray  # (N,) int64: byte offset of the image data in that shard
    nbytes: np.ndarray  # (N,) int64: size of the image data
    label: np.ndarray  # (N,) int64: the cls/label value, -1 when the sample has none
    missing: list[str]  # "shard:key" of samples without an image member (skipped, reported)

    def __len__(self) -> int:
        return len(self.offset)


def _label(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> int:
    data = tar.extractfile(member).read()  # type: ignore[union-attr]
    try:
        return int(data.decode("utf-8").strip())
    except ValueError as exc:
        raise DataError(f"{where}: label {data[:40]!r} is not an integer; cls/label members must hold one") from exc


def scan_shard(path: str) -> tuple[list[tuple[int, int, int]], list[str]]:
    """The samples of one uncompressed tar shard as ``(offset, nbytes, label)``, and keys without an image.

    Raises:
        DataError: the file is not an uncompressed tar file, or a label is not an integer.
    """
    base_plus_ext = require_webdataset().tariterators.base_plus_ext
    samples: list[tuple[int, int, int]] = []
    missing: list[str] = []
    current: list = [None, None, -1]  # key, (offset, nbytes) of the image, label

    def flush() -> None:
        key, image, label = current
        if key is None:
            return
        if image is None:
            missing.append(f"{path}:{key}")
        else:
            samples.append((image[0], image[1], label))

    try:
        tar = tarfile.open(path, "r:")  # "r:" refuses compressed archives, which cannot be read by offset
    except (tarfile.TarError, OSError) as exc:
        hint = "; repack it uncompressed (ssl-toolkit pack)" if str(path).endswith(("gz", "bz2", "xz")) else ""
        raise DataError(f"{path} is not an uncompressed tar shard ({exc}){hint}") from exc
    with tar:
        for member in tar:
            tar.members.clear()  # the index keeps its own table; tarfile's would grow with the shard
            if not member.isreg() or _META.match(member.name):
                continue
            key, suffix = base_plus_ext(member.name)
            if key is None:
                continue
            suffix = suffix.lower()
            if key != current[0]:
                flush()
                current[:] = [key, None, -1]
            if suffix in IMAGE_SUFFIXES and current[1] is None:
                current[1] = (member.offset_data, member.size)
            elif suffix in LABEL_SUFFIXES:
                current[2] = _label(tar, member, f"{path}:{member.name}")
        flush()
    return samples, missing


def build_index(shards: list[str]) -> ShardIndex:
    """Scan every shard (headers and labels only) into a `ShardIndex`."""
    shard, offset, nbytes, label, missing = [], [], [], [], []
    for k, path in enumerate(shards):
        samples, lost = scan_shard(path)
        missing += lost
        shard += [k] * len(samples)
        for off, size, lab in samples:
            offset.append(off)
            nbytes.append(size)
            label.append(lab)
    return ShardIndex(
        shards=list(shards),
        shard=np.asarray(shard, dtype=np.int32),
        offset=np.asarray(offset, dtype=np.int64),
        nbytes=np.asarray(nbytes, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64),
        missing=missing,
    )


def _stamps(shards: list[str]) -> np.ndarray:
    stats = [os.stat(p) for p in shards]
    return np.asarray([[s.st_size, s.st_mtime_ns] for s in stats], dtype=np.int64).reshape(-1, 2)


def index_path(shards: list[str]) -> Path:
    """Where the cached index of ``shards`` lives: beside the first shard, named by the shard list."""
    folder = Path(shards[0]).parent
    rel = [os.path.relpath(p, folder) for p in shards]
    digest = hashlib.sha1("\n".join(rel).encode()).hexdigest()[:16]
    return folder / f".ssl-toolkit-index-{digest}.npz"


def _read_cache(path: Path, shards: list[str]) -> ShardIndex | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            rel = [os.path.relpath(p, path.parent) for p in shards]
            if int(z["version"]) != INDEX_VERSION or z["shards"].tolist() != rel:
                return None
            if not np.array_equal(z["stamps"], _stamps(shards)):
                return None
            arrays = {k: z[k] for k in ("shard", "offset", "nbytes", "label")}
            return ShardIndex(shards=list(shards), missing=z["missing"].tolist(), **arrays)
    except (OSError, KeyError, ValueError):  # absent, partial or foreign file: rebuild it
        return None


def _write_cache(path: Path, index: ShardIndex) -> None:
    rel = [os.path.relpath(p, path.parent) for p in index.shards]
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            version=np.asarray(INDEX_VERSION),
            shards=np.asarray(rel, dtype=str),
            stamps=_stamps(index.shards),
            shard=index.shard,
            offset=index.offset,
            nbytes=index.nbytes,
            label=index.label,
            missing=np.asarray(index.missing, dtype=str),
        )
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def load_index(shards: list[str]) -> ShardIndex:
    """The index of ``shards`` from its cache, or built (and cached when the folder is writable)."""
    from filelock import FileLock

    path = index_path(shards)
    cached = _read_cache(path, shards)
    if cached is not None:
        return cached
    try:
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as exc:  # a read-only folder
        warnings.warn(f"cannot cache the shard index in {path.parent} ({exc}); it is rebuilt on each run", stacklevel=2)
        return build_index(shards)
    try:
        cached = _read_cache(path, shards)  # another process may have built it meanwhile
        if cached is not None:
            return cached
        index = build_index(shards)
        try:
            _write_cache(path, index)
        except OSError as exc:
            warnings.warn(f"cannot cache the shard index as {path} ({exc}); it is rebuilt on each run", stacklevel=2)
        return index
    finally:
        lock.release()
