"""Generated images in training: a bank of variants read through its manifest, and the two ways to mix it in.

- **GenView** (Li et al., ECCV 2024; views_eval_spec.md §3.1): view-level. Each sample carries its real image
  and, with probability ``p_generated``, one variant of it drawn uniformly from the bank; the views of the
  recipe's ``source: generated`` group are cut from that variant, every other view from the real image.
  GenView picks one of its two global views at random to be the generated one; since the two global views
  are drawn from the same distribution and every objective here treats them symmetrically, giving the
  generated image to a fixed view (the ``source: generated`` group) is the same in distribution, and it lets
  ``view_kinds`` say which view it is.
- **AdaInf** (Wang, Zhang & Wang, ICLR 2024; §3.3): sample-level. The training set is the real images
  replicated ``dup`` times followed by every generated image, shuffled uniformly, so a draw is real with
  probability ``dup·N_r / (dup·N_r + N_g)``. The sampler is the ordinary `EpochSampler`, so accelerate shards
  it across processes like any dataset.

Randomness: the draw of a variant uses the global torch generator, which `ViewDataset` and
`PositionedImages` seed per (seed, epoch, sample), so it is exact on resume and independent of workers.
Bank images are resized (antialiased, shorter side, centre crop) to the size of their source image when
loaded, so both images of a sample share one size (batched views need it). A source with no variant in the
bank uses its real image; such samples are counted when the bank is opened and reported once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssl_toolkit.errors import ConfigError, DataError

SOURCES = ("real", "generated")


class Sample(NamedTuple):
    """One training sample when a bank is in use.

    Attributes:
        real: uint8 (3, H, W); the image the ``source: real`` views are cut from (AdaInf: the sample itself).
        generated: uint8 (3, H, W); the image the ``source: generated`` views are cut from (the real image
            when no variant was drawn).
        is_generated: a bank image is in this sample (GenView: its generated view; AdaInf: the sample).
    """

    real: Tensor
    generated: Tensor
    is_generated: bool


def _read_rows(root: Path) -> list[dict]:
    from ssl_toolkit.data.manifest import read_manifest

    return read_manifest(root)


class ViewBank:
    """The variants of a bank folder written by ``ssl-toolkit generate-views``, grouped by source index.

    Args:
        root: the bank folder (holds ``manifest.jsonl`` or its per-process shards, and ``images/``).

    Raises:
        DataError: missing folder or manifest, or a manifest with no rows.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"generated-view bank not found: {self.root}; build one with `ssl-toolkit generate-views "
                f"--out {self.root} ...` or fix data.generated.bank"
            )
        rows = _read_rows(self.root)
        if not rows:
            raise DataError(f"the bank {self.root} has no manifest rows; run `ssl-toolkit generate-views` first")
        self.variants: dict[int, list[str]] = {}
        self.samples: list[tuple[str, int]] = []  # every generated image: (file, label), manifest order
        for row in sorted(rows, key=lambda r: (int(r["src_id"]), int(r["variant_id"]))):
            src, file = int(row["src_id"]), str(row["file"])
            if src >= 0:
                self.variants.setdefault(src, []).append(file)
            self.samples.append((file, int(row.get("label", -1))))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, file: str, size: Sequence[int] | None = None) -> Tensor:
        """Decode ``file`` (relative to the bank) as uint8 (3, H, W) RGB, resized to ``size`` = (H, W) if given.

        Raises:
            DataError: the file is missing or cannot be decoded.
        """
        import numpy as np

        path = self.root / file
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
                if size is not None and image.size != (int(size[1]), int(size[0])):
                    image = _resize_center_crop(image, int(size[0]), int(size[1]))
                array = np.asarray(image, dtype=np.uint8).copy()
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read generated image {path}: {err}") from err
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _resize_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    scale = max(height / image.height, width / image.width)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


class GenViewImages(Dataset):
    """``(Sample, label)`` per source image: the real image and, with probability ``p_generated``, a variant.

    Args:
        base: the real dataset, indexed like the bank's ``src_id`` (apply any subset *after* this wrapper).
        bank: the variants.
        p_generated: probability that a sample's generated view is cut from a variant (GenView: 1.0).
    """

    def __init__(self, base: Dataset, bank: ViewBank, *, p_generated: float = 1.0) -> None:
        if not 0.0 <= float(p_generated) <= 1.0:
            raise ConfigError(f"data.generated.p_generated must be in [0, 1], got {p_generated}")
        self.base = base
        self.bank = bank
        self.p_generated = float(p_generated)
        n = len(base)  # type: ignore[arg-type]
        self.missing = sum(1 for i in range(n) if i not in bank.variants)
        outside = [i for i in bank.variants if not 0 <= i < n]
        if outside:
            raise DataError(
                f"the bank {bank.root} has variants of source ids up to {max(outside)} but the dataset has {n} "
                "images; was it generated from another dataset or split?"
            )
        if self.missing == n:
            raise DataError(f"the bank {bank.root} has no variant of any image of this dataset")
        if self.missing:
            warnings.warn(
                f"{self.missing} of {n} images have no variant in {bank.root}; their generated views use the "
                "real image",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Sample, int]:
        real, label = self.base[i]
        files = self.bank.variants.get(int(i))
        draw = torch.rand(()).item()  # always drawn, so a sample's later draws do not depend on the bank
        if not files or draw >= self.p_generated:
            return Sample(real, real, False), label
        k = int(torch.randint(len(files), ()).item())
        try:
            generated = self.bank.load(files[k], size=real.shape[-2:])
        except DataError as err:
            warnings.warn(f"{err}; using the real image", stacklevel=2)
            return Sample(real, real, False), label
        return Sample(real, generated, True), label


class InflatedImages(Dataset):
    """AdaInf's training set: ``dup`` copies of the real images, then every bank image, as one dataset.

    Index ``j < dup·N_r`` is real image ``j % N_r``; the rest are bank images in manifest order. `sample_id`
    gives each real image one id whatever the copy (``0 .. N_r-1``) and each bank image its own
    (``N_r + k``), so per-sample state (iSogCLR's τ, MoCHi's own-sample exclusion) follows the image.
    Labels: real labels, and for bank images the manifest's (inherited from the source, -1 when unconditional).

    Args:
        real: the real dataset (after any subset).
        bank: the generated images.
        dup: real replication factor (AdaInf: 10; 1 is plain inflation).
    """

    def __init__(self, real: Dataset, bank: ViewBank, *, dup: int = 10) -> None:
        if isinstance(dup, bool) or not isinstance(dup, int) or dup < 1:
            raise ConfigError(f"data.generated.dup must be an integer >= 1, got {dup!r}")
        self.real = real
        self.bank = bank
        self.dup = dup
        self.n_real = len(real)  # type: ignore[arg-type]
        self.n_generated = len(bank)
        self._size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.dup * self.n_real + self.n_generated

    @property
    def p_real(self) -> float:
        """Probability that a uniform draw from this dataset is a real image."""
        return self.dup * self.n_real / len(self)

    def sample_id(self, j: int) -> int:
        """The id of index ``j``: its real image's index, or ``N_r +`` its bank position."""
        j = int(j)
        return j % self.n_real if j < self.dup * self.n_real else self.n_real + j - self.dup * self.n_real

    def __getitem__(self, j: int) -> tuple[Sample, int]:
        j = int(j)
        if not 0 <= j < len(self):
            raise IndexError(f"index {j} out of range for {len(self)} samples")
        if j < self.dup * self.n_real:
            image, label = self.real[j % self.n_real]
            if self._size is None:
                self._size = tuple(image.shape[-2:])
            return Sample(image, image, False), label
        if self._size is None:
            self._size = tuple(self.real[0][0].shape[-2:])
        file, label = self.bank.samples[j - self.dup * self.n_real]
        try:
            image = self.bank.load(file, size=self._size)
        except DataError as err:  # a damaged bank file costs one sample, never the run
            warnings.warn(f"{err}; using real image {j % self.n_real} instead", stacklevel=2)
            image, label = self.real[j % self.n_real]
            return Sample(image, image, False), label
        return Sample(image, image, True), label


def source_of(sample: Tensor | Sample, source: str) -> Tensor:
    """The image a view of ``source`` ("real" or "generated") is cut from; plain tensors serve both."""
    if isinstance(sample, Sample):
        return sample.real if source == "real" else sample.generated
    return sample


def sample_extras(sample: Tensor | Sample) -> dict[str, bool]:
    """Per-sample signals of a sample for ``Batch.extras``: ``is_generated`` for a `Sample`, none for an image."""
    return {"is_generated": bool(sample.is_generated)} if isinstance(sample, Sample) else {}
