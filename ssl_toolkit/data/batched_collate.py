"""The batched views' loader side: positioned samples, the collate that makes the views, and `ImageBatch` for
making them later on the training device.

Two places to make the views, the same function and seeds in both:
- in the loader workers (default): `BatchViewCollate` returns a `Batch` of views;
- on the training device (``data.view_device=cuda``): the collate returns an `ImageBatch` (uint8 images, or
  JPEG bytes with ``data.decode_device=cuda``); accelerate moves it to the device (``ImageBatch.to``, pinned
  memory and non-blocking copies when there is a GPU) and the engine calls `BatchViewCollate.finish` on it in
  the main process, which decodes what is still encoded (nvJPEG on a GPU) and makes the views there.

Randomness: `finish` seeds the global CPU generator from ``(seed, position of the batch's first sample)``
inside ``fork_rng`` (the caller's generator is untouched) and each `BatchView` draws its parameters from it, so
the views are exact on resume, the same with any number of workers, distinct on every process, and the same
wherever they are made (on the CPU of the main process: bit-identical to the workers' views). A sample's views
change when the composition of its batch does.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ssl_toolkit.data.batch import Batch
from ssl_toolkit.data.crops import MATMUL_MAX_PIXELS
from ssl_toolkit.data.decode import decode_batch, decode_pil, is_encoded
from ssl_toolkit.data.generated import sample_extras, source_of
from ssl_toolkit.data.view_dataset import mix_seeds
from ssl_toolkit.errors import ConfigError


def _move(image: Tensor, device: torch.device | str, non_blocking: bool) -> Tensor:
    if is_encoded(image):  # JPEG bytes stay on the CPU: nvJPEG reads them from there
        return image
    return image.to(device, non_blocking=non_blocking or image.is_pinned())


@dataclass
class ImageBatch:
    """A loader batch whose views are still to be made: per view source, B uint8 images (3, H_i, W_i) or JPEG
    bytes (1-D uint8), and what the `Batch` needs.

    Attributes:
        images: per source ("real", and "generated" with a bank), the batch's images in batch order.
        first_position: sampler position of the first sample (seeds the views).
        ids: (B,) int64 sample ids.
        extras: named (B,) per-sample tensors.
    """

    images: dict[str, list[Tensor]]
    first_position: int
    ids: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        """The batch on ``device``; copies from pinned memory never block (accelerate's device placement)."""
        images = {k: [_move(x, device, non_blocking) for x in v] for k, v in self.images.items()}
        extras = {k: v.to(device, non_blocking=non_blocking) for k, v in self.extras.items()}
        return ImageBatch(images, self.first_position, self.ids.to(device, non_blocking=non_blocking), extras)

    def pin_memory(self) -> ImageBatch:
        """Page-locked copies of the decoded images, for the DataLoader's ``pin_memory=True``."""
        images = {k: [x if is_encoded(x) else x.pin_memory() for x in v] for k, v in self.images.items()}
        return ImageBatch(images, self.first_position, self.ids.pin_memory(), self.extras)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _decode(images: list[Tensor], device: torch.device, ids: Tensor) -> list[Tensor]:
    """Decode the JPEG bytes among ``images`` on ``device`` in one call; a file that fails is replaced by another
    image of the batch, with one warning naming its sample id."""
    where = [k for k, x in enumerate(images) if is_encoded(x)]
    if not where:
        return images
    out = list(images)
    for k, image in zip(where, decode_batch([images[k] for k in where], device)):
        if image is None:
            try:  # PIL reads some JPEGs libjpeg-turbo refuses; its error names the problem otherwise
                image = decode_pil(io.BytesIO(images[k].numpy().tobytes())).to(device)
            except Exception as exc:  # noqa: BLE001 - any decoder error costs one sample, never the run
                sample = int(ids[k])
                warnings.warn(
                    f"skipping undecodable JPEG of sample {sample} (replaced in this batch): {exc}", stacklevel=2
                )
        out[k] = image
    good = [x for x in out if x is not None]
    if not good:
        raise RuntimeError("no image of the batch could be decoded")
    return [x if x is not None else good[0] for x in out]


class BatchViewCollate:
    """DataLoader ``collate_fn``: ``[(image, position, id), ...]`` -> a `Batch` of V views, or an `ImageBatch`.

    ``position`` is the sampler's ``epoch * n + i`` (see `EpochSampler`); without ``id`` in the items, ids
    are ``position % n``. With a bank (items hold a `Sample`), ``sources`` names each view's image and the
    samples' extras (``is_generated``) become ``Batch.extras``.

    Args:
        transforms: one batched view transform per view (`batched_views.build_batch_view_transform`).
        n: dataset length (to decode positions into ids).
        seed: base seed.
        sources: per view, "real" or "generated" (the `Sample` image it is cut from); None without a bank.
        defer: return an `ImageBatch` and leave the views to `finish` (on the training device).
    """

    def __init__(
        self,
        transforms: Sequence[Callable],
        *,
        n: int,
        seed: int = 0,
        sources: Sequence[str] | None = None,
        defer: bool = False,
    ) -> None:
        if sources is not None and len(sources) != len(transforms):
            raise ConfigError(f"{len(sources)} view sources for {len(transforms)} view transforms")
        self.transforms = list(transforms)
        self.n = int(n)
        self.seed = int(seed)
        self.sources = tuple(sources) if sources is not None else ("real",) * len(self.transforms)
        self.defer = defer

    def __call__(self, batch: Sequence[tuple]) -> Batch | ImageBatch:
        samples = [item[0] for item in batch]
        used = ("real", "generated") if "generated" in self.sources else ("real",)
        images = {src: [source_of(s, src) for s in samples] for src in used}
        positions = [int(item[1]) for item in batch]
        ids = torch.tensor([int(item[2]) if len(item) > 2 else p % self.n for item, p in zip(batch, positions)])
        extras = [sample_extras(s) for s in samples]
        flags = {k: torch.tensor([e[k] for e in extras]) for k in extras[0]}
        images_batch = ImageBatch(images, positions[0], ids, flags)
        return images_batch if self.defer else self.finish(images_batch)

    def finish(self, batch: Batch | ImageBatch) -> Batch:
        """The `Batch` of views of an `ImageBatch`, made on the device its ids are on; a `Batch` passes through."""
        if isinstance(batch, Batch):
            return batch
        device = batch.ids.device
        images = {src: _decode(v, device, batch.ids) for src, v in batch.images.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seeds(self.seed, batch.first_position))
            views = [t(_stacked(images[src])) for t, src in zip(self.transforms, self.sources)]
        return Batch(views, batch.ids, batch.extras)


def _stacked(images: list[Tensor]) -> Tensor | list[Tensor]:
    """One (B, 3, H, W) tensor when the images share a small size (batched crops, ``crops.py``), else the list
    (the transforms take either; large images are cropped one by one, straight from their decoded memory)."""
    first = images[0].shape
    small = first[-2] * first[-1] <= MATMUL_MAX_PIXELS
    return torch.stack(images) if small and all(x.shape == first for x in images) else images


class PositionedImages(torch.utils.data.Dataset):
    """Yields ``(image, position, id)`` for sampler positions ``epoch * n + i``; the views come in the collate.

    ``id`` is ``base.sample_id(i)`` when the base defines it, else ``i``. With ``seed`` given, the base is
    read inside a region seeded by ``(seed, epoch, i)``, so a random draw it makes (a bank variant, see
    ``generated.py``) is exact on resume and the same with any number of workers.
    """

    def __init__(self, base: torch.utils.data.Dataset, *, seed: int | None = None) -> None:
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, position: int) -> tuple[Tensor, int, int]:
        epoch, i = divmod(int(position), len(self))
        if self.seed is None:
            image, _ = self.base[i]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix_seeds(self.seed, epoch, i, 1))
                image, _ = self.base[i]
        sample_id = self.base.sample_id(i) if hasattr(self.base, "sample_id") else i
        return image, int(position), sample_id
