"""WebDataset tar shards as a map-style dataset: ``data.name=webdataset``, ``data.root=<folder or pattern>``.

Design: the shards are indexed once (``shard_index.py``: per sample, the shard, the byte offset and size of
its image, its label; cached beside the shards) so they form a ``Dataset`` of known length whose sample ``i``
is one ``os.pread`` away. Everything the project guarantees for folders then holds unchanged: `EpochSampler`
orders the samples by (seed, epoch), accelerate shards that order across processes, DataLoader workers take
whole batches, views are seeded by (seed, epoch, index), and a resumed run skips the batches already seen
(``skip_first_batches``) and continues bit-identically mid-epoch. The alternative, webdataset's streaming
``WebDataset`` pipeline, reads shards sequentially per worker (faster on spinning disks and object stores),
but its order then depends on the number of processes and workers and it has no exact mid-epoch resume;
webdataset's own indexed reader (``wids``) is a separate alpha package whose tar-index cache is a pickle,
which the project never loads. Memory is bounded: 28 bytes of index per sample (shared copy-on-write
with forked workers) and at most ``OPEN_SHARDS`` open file descriptors per process, reopened after a fork.

From webdataset this uses the tar format and its sample convention (``base_plus_ext`` groups a sample's
files; ``cls`` holds the label), pattern expansion (``expand_urls``: ``shard-{000000..000099}.tar``), and,
in ``pack.py``, ``ShardWriter``. Written here: the offset index, the positional reads, and decoding through
``pil_to_rgb_uint8`` with the corrupt-sample policy of image folders (``encoded.py``), because webdataset's
decoders and error handlers work on streams, not on indexed samples.

Layouts of ``data.root``: a folder with ``train/`` and ``test/`` (or ``val/``) sub-folders of ``*.tar`` files
(what ``ssl-toolkit pack`` writes for a folder with splits), a folder of ``*.tar`` files (the train split), or
a pattern (braces and/or ``*``) in which ``{split}`` stands for the split name. A ``classes.txt`` beside the
shards (one name per line, written by ``pack``) names the labels. Uncompressed local files only.
"""

from __future__ import annotations

import glob
import os
import tarfile
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from ssl_toolkit.data.encoded import EncodedImages
from ssl_toolkit.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
from ssl_toolkit.data.shard_index import load_index, require_webdataset
from ssl_toolkit.data.view_specs import as_triple
from ssl_toolkit.errors import ConfigError, DataError

OPEN_SHARDS = 16  # file descriptors kept open per process (least recently used closed first)
CLASSES_FILE = "classes.txt"
_PATTERN_CHARS = ("{", "*", "?", "[")


def is_pattern(root: str) -> bool:
    """Whether ``root`` is a shard pattern (braces or glob characters) rather than a folder."""
    return any(c in root for c in _PATTERN_CHARS)


def _tars(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.tar") if p.is_file()) if folder.is_dir() else []


def _expand(pattern: str) -> list[str]:
    expand_urls = require_webdataset().shardlists.expand_urls
    paths: list[str] = []
    for item in expand_urls(os.path.expanduser(pattern)):
        paths += sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(f"shard pattern {pattern!r}: {', '.join(missing[:3])}{more} not found")
    return paths


def shard_paths(root: str, split: str = "train") -> list[str]:
    """The shard files of ``split`` under ``root`` (see the module docstring for the layouts), absolute.

    Raises:
        DataError: no shard found, or a split that the layout does not have.
    """
    if is_pattern(root):
        if "{split}" not in root and split != "train":
            raise DataError(f"shard pattern {root!r} names one split; write {{split}} in it for the {split} split")
        paths = _expand(root.replace("{split}", split))
    else:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise DataError(f"shard folder {root!r} does not exist; set data.root to a folder of .tar shards")
        if _tars(base / "train") and (_tars(base / "test") or _tars(base / "val")):
            other = "val" if split == "test" else "test"
            paths = _tars(base / split) or _tars(base / other)
        elif split == "train":
            paths = _tars(base)
        else:
            raise DataError(f"split {split!r} needs {base}/train and {base}/test (or val) with .tar shards")
    if not paths:
        raise DataError(f"no .tar shard for split {split!r} under {root!r} (ssl-toolkit pack writes them)")
    return [os.path.abspath(p) for p in paths]


def read_classes(folder: str | Path) -> list[str] | None:
    """The class names of ``folder/classes.txt`` (one per line), or None when there is no such file."""
    path = Path(folder) / CLASSES_FILE
    return path.read_text().splitlines() if path.is_file() else None


class WebDatasetShards(EncodedImages):
    """WebDataset tar shards read by sample index, yielding ``(image (3, H, W) uint8, label or -1)``.

    Args:
        shards: the tar files, in order (``shard_paths`` resolves a root).
        labelled: True needs a ``cls``/``label`` member in every sample; False gives -1; None (default)
            labels when every sample has one.
        classes: class names (index = label); default ``classes.txt`` beside the first shard, else "0", "1"...
        mean: per-channel mean for normalisation (ImageNet by default, as for image folders).
        std: per-channel std for normalisation.
        native_size: side of the images if known (sizes the eval resize); None otherwise.

    Raises:
        DataError: unreadable or compressed shards, no sample with an image, or missing labels with
            ``labelled=True``.
    """

    def __init__(
        self,
        shards: Sequence[str],
        *,
        labelled: bool | None = None,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        native_size: int | None = None,
    ) -> None:
        self.index = load_index([os.path.abspath(p) for p in shards])
        where = f"{len(shards)} shard(s) from {self.index.shards[0]}"
        missing = {name: "no image member (jpg, png, webp, ...)" for name in self.index.missing}
        for name in list(missing)[:10]:
            warnings.warn(f"skipping sample without an image: {name}", stacklevel=2)
        if len(self.index) == 0:
            raise DataError(f"no sample with an image in {where}: {len(missing)} without one")
        self._init_skipping(len(self.index), where, missing)
        has_label = self.index.label >= 0
        if labelled is None:
            labelled = bool(has_label.all())
        if labelled and not has_label.all():
            raise DataError(
                f"labelled=True needs a cls/label member in every sample, but {int((~has_label).sum())} of "
                f"{len(has_label)} in {where} have none; use labelled=false for unlabelled data"
            )
        self.labelled = bool(labelled)
        self.labels = torch.from_numpy(self.index.label) if self.labelled else None
        names = list(classes) if classes is not None else read_classes(Path(self.index.shards[0]).parent)
        top = int(self.index.label.max()) + 1 if self.labelled else 0
        if not self.labelled:
            self.classes: list[str] = []
        elif names is not None and len(names) >= top:
            self.classes = names
        else:
            self.classes = [str(k) for k in range(top)]
        self.num_classes: int | None = len(self.classes) if self.labelled else None
        self.mean, self.std = as_triple(mean, "mean"), as_triple(std, "std")
        self.native_size = native_size
        self._pid, self._fds = os.getpid(), OrderedDict()

    def _fd(self, shard: int) -> int:
        """An open descriptor of shard ``shard``, per process (fork-safe: a child reopens its own)."""
        if self._pid != os.getpid():  # inherited from the parent: pread is position-free, but keep them private
            for fd in self._fds.values():
                os.close(fd)
            self._pid, self._fds = os.getpid(), OrderedDict()
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.index.shards[shard], os.O_RDONLY)
            if len(self._fds) > OPEN_SHARDS:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(shard)
        return fd

    def read(self, index: int) -> bytes:
        """The encoded image bytes of sample ``index``, read at its offset."""
        shard, offset, size = int(self.index.shard[index]), int(self.index.offset[index]), int(self.index.nbytes[index])
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"read {len(data)} of {size} bytes: the shard changed or was truncated after indexing")
        return data

    def sample_name(self, index: int) -> str:
        """``shard:member`` of sample ``index`` (the member name read from the tar header before its data)."""
        shard, offset = int(self.index.shard[index]), int(self.index.offset[index])
        path = self.index.shards[shard]
        try:
            header = os.pread(self._fd(shard), tarfile.BLOCKSIZE, offset - tarfile.BLOCKSIZE)
            return f"{path}:{tarfile.TarInfo.frombuf(header, 'utf-8', 'surrogateescape').name}"
        except (OSError, tarfile.TarError):
            return f"{path}:byte {offset}"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = OrderedDict()  # descriptors do not travel to spawned workers
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def build_webdataset(
    *, split: str, root: str | None, download: bool, labelled: bool | None, max_pixels: int | None = None
) -> WebDatasetShards:
    """``DATASETS["webdataset"]``: the shards of ``split`` under ``root``."""
    if root is None:
        raise ConfigError("data.name=webdataset needs data.root=<folder of .tar shards, or a pattern>")
    if download:
        raise ConfigError("webdataset shards cannot be downloaded; set data.download=false and data.root=<shards>")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"webdataset split {split!r} is unknown; accepted: train, val, test")
    shards = WebDatasetShards(shard_paths(root, split), labelled=labelled)
    if max_pixels is not None:
        shards.max_pixels = int(max_pixels)
    return shards
