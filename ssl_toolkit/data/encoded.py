"""Datasets of encoded images (bytes in shards or Arrow tables): decoding and the corrupt-sample policy.

Decoding goes through PIL and ``image_folder.pil_to_rgb_uint8``, so a sample read from a shard or a Hugging
Face table gives the same (3, H, W) uint8 tensor as the same file read from a folder (modes, alpha, 16-bit).

The corrupt-sample policy is that of ``image_folder.ImageFolder``: a sample that fails to decode in
``__getitem__`` is flagged in a shared-memory tensor (so the main process can count what DataLoader workers
found), warned about once per process with its name and the error, and the next readable index (wrapping
around) is returned instead. The replacement depends only on the data, never on which process or worker met
the bad sample first, so views stay seeded by (seed, epoch, index) and resume stays exact. Samples found
unusable before training (a WebDataset sample without an image) are listed in ``skipped`` and counted too.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssl_toolkit.data.image_folder import DEFAULT_MAX_PIXELS, pil_to_rgb_uint8
from ssl_toolkit.errors import DataError


def decode_image_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Decode an encoded image (any format PIL reads) into a (3, H, W) uint8 tensor; raises on broken data and
    on images above ``max_pixels`` (checked from the header, before decoding)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > max_pixels:
            raise DataError(f"{img.width}x{img.height} is above data.max_pixels={max_pixels}")
        img.load()
        if img.width < 1 or img.height < 1:
            raise ValueError(f"empty image size {img.size}")
        return pil_to_rgb_uint8(img)


class EncodedImages(Dataset):
    """Base class: ``__getitem__`` returns ``(image, label)`` of the first readable ``j >= index`` (mod N).

    Subclasses call ``_init_skipping(n, where)`` and define ``read(index)`` (the encoded bytes),
    ``sample_name(index)`` and ``labels`` (int64 tensor or None).
    """

    labels: Tensor | None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def _init_skipping(self, n: int, where: str, skipped: dict[str, str] | None = None) -> None:
        self.n_samples = int(n)
        self.where = where  # names the dataset in errors
        self.skipped: dict[str, str] = dict(skipped or {})  # name -> reason, found in this process
        self._failed = torch.zeros(self.n_samples, dtype=torch.bool).share_memory_()

    def read(self, index: int) -> bytes:
        """The encoded image of sample ``index``."""
        raise NotImplementedError

    def sample_name(self, index: int) -> str:
        """A name that lets a user find sample ``index`` (shard member, table row)."""
        raise NotImplementedError

    def load(self, index: int) -> Tensor:
        """Fully decode sample ``index`` as (3, H, W) uint8; raises on a broken sample."""
        return decode_image_bytes(self.read(index), max_pixels=self.max_pixels)

    def _skip(self, name: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.skipped[name] = reason
        warnings.warn(f"skipping unreadable sample {name}: {reason}", stacklevel=3)

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = self.n_samples
        for k in range(n):
            j = (int(index) + k) % n
            if bool(self._failed[j]):
                continue
            try:
                image = self.load(j)
            except Exception as exc:  # decoders raise many types (OSError, SyntaxError, ValueError, ...)
                self._failed[j] = True
                self._skip(self.sample_name(j), exc)
                continue
            return image, int(self.labels[j]) if self.labels is not None else -1
        raise DataError(f"no readable image left in {self.where}: {self.summary()}")

    def summary(self) -> str:
        """One line: how many samples were skipped so far (in any process, workers included) and why."""
        reasons = dict(self.skipped)
        for j in self._failed.nonzero().flatten().tolist():
            reasons.setdefault(self.sample_name(j), "failed to decode (in a data-loader worker; see its warning)")
        n = len(reasons)
        if n == 0:
            return "0 corrupt or unreadable samples skipped"
        shown = "; ".join(f"{name} ({reason})" for name, reason in list(reasons.items())[:10])
        more = f"; ... and {n - 10} more" if n > 10 else ""
        return f"{n} corrupt or unreadable samples skipped: {shown}{more}"
