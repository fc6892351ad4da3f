"""A folder of images (optionally one subfolder per class) as uint8 RGB tensors, with a corrupt-file policy.

Corrupt-file policy: construction opens every file's *header* only (``PIL.Image.open``; cheap, catches
garbage and unknown formats) and skips the failures. Full decoding happens lazily in ``__getitem__``; a
file that fails to decode there (truncated JPEG, broken PNG stream) is skipped too, and the next readable
index (wrapping around) is returned instead, so a deterministic sample comes back and training never
crashes on one bad file. Every skipped file gets one ``warnings.warn`` naming it and the error, and goes
into ``skipped`` (path -> reason; per process, so DataLoader workers keep their own lazily found entries).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS as TORCHVISION_EXTENSIONS

from ssl_toolkit.data.view_specs import as_triple
from ssl_toolkit.errors import DataError

IMG_EXTENSIONS = (*TORCHVISION_EXTENSIONS, ".gif")  # torchvision's list, plus GIF (PIL reads its first frame)
IMAGENET_MEAN: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_MEAN)  # timm's constants
IMAGENET_STD: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_STD)
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def pil_to_rgb_uint8(img: Image.Image) -> Tensor:
    """Decode a PIL image into a (3, H, W) uint8 tensor.

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
        return rgb.to(torch.uint8).contiguous()
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def _scan(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``root``, recursively, sorted, hidden entries skipped, symlink cycles broken."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(Path(dirpath) / name)
    return found


class ImageFolder(Dataset):
    """Images under ``root`` (recursive), labelled by their first-level subfolder or unlabelled (-1).

    Args:
        root: the folder to scan.
        labelled: True labels by first-level subfolder (every image must sit in one); False gives -1;
            None (default) labels when every image sits in a subfolder of ``root``.
        extensions: file name endings to accept (case-insensitive).
        mean: per-channel mean for normalisation (ImageNet by default).
        std: per-channel std for normalisation (ImageNet by default).
        native_size: side of the images if known (used to size the eval resize); None otherwise.

    Raises:
        DataError: ``root`` is missing, holds no readable image, or ``labelled=True`` with top-level images.
    """

    def __init__(
        self,
        root: str,
        *,
        labelled: bool | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        native_size: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"image folder {str(root)!r} does not exist or is not a directory; set data.root to a "
                "folder of images (one subfolder per class for labels)"
            )
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.mean = as_triple(mean, "mean")
        self.std = as_triple(std, "std")
        self.native_size = native_size
        self.skipped: dict[str, str] = {}
        files = _scan(self.root, exts)
        readable = [p for p in files if self._header_ok(p)]
        if not readable:
            raise DataError(
                f"no readable image under {str(self.root)!r}: {len(files)} files with extensions "
                f"{', '.join(exts)} found, {len(self.skipped)} unreadable"
            )
        nested = [len(p.relative_to(self.root).parts) > 1 for p in readable]
        if labelled is None:
            labelled = all(nested)
        if labelled and not all(nested):
            top = [p.name for p, n in zip(readable, nested, strict=True) if not n][:5]
            raise DataError(
                f"labelled=True needs every image in a class subfolder of {str(self.root)!r}, "
                f"but some sit at the top level: {', '.join(top)}; use labelled=false for unlabelled data"
            )
        self.samples = [str(p) for p in readable]
        # Files that failed a full decode, shared with DataLoader workers so the main process can count them.
        self._failed = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()
        self.labelled = bool(labelled)
        if self.labelled:
            first = [p.relative_to(self.root).parts[0] for p in readable]
            self.classes = sorted(set(first))
            index = {c: k for k, c in enumerate(self.classes)}
            self.labels: Tensor | None = torch.tensor([index[c] for c in first], dtype=torch.int64)
            self.num_classes: int | None = len(self.classes)
        else:
            self.classes = []
            self.labels = None
            self.num_classes = None

    def _skip(self, path: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.skipped[path] = reason
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)

    def _header_ok(self, path: Path) -> bool:
        try:
            with Image.open(path) as img:
                if img.width < 1 or img.height < 1:
                    raise ValueError(f"empty image size {img.size}")
        except Exception as exc:  # PIL plugins raise many types (OSError, SyntaxError, ValueError, ...)
            self._skip(str(path), exc)
            return False
        return True

    def load(self, index: int) -> Tensor:
        """Fully decode sample ``index`` as (3, H, W) uint8; raises whatever PIL raises."""
        with Image.open(self.samples[index]) as img:
            img.load()
            return pil_to_rgb_uint8(img)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self.samples)
        for k in range(n):
            j = (int(index) + k) % n
            path = self.samples[j]
            if path in self.skipped or bool(self._failed[j]):
                continue
            try:
                image = self.load(j)
            except Exception as exc:  # a truncated or broken file: skip it, try the next index
                self._failed[j] = True
                self._skip(path, exc)
                continue
            label = int(self.labels[j]) if self.labels is not None else -1
            return image, label
        raise DataError(f"no readable image left in {str(self.root)!r}: {self.summary()}")

    def summary(self) -> str:
        """One line: how many files were skipped so far (in any process, workers included) and why."""
        reasons = dict(self.skipped)
        for j in self._failed.nonzero().flatten().tolist():
            reasons.setdefault(self.samples[j], "failed to decode (in a data-loader worker; see its warning)")
        n = len(reasons)
        if n == 0:
            return "0 corrupt or unreadable files skipped"
        items = list(reasons.items())
        shown = "; ".join(f"{p} ({r})" for p, r in items[:10])
        more = f"; ... and {n - 10} more" if n > 10 else ""
        return f"{n} corrupt or unreadable files skipped: {shown}{more}"
