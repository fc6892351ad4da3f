"""Batched views: each view made for a whole batch in one call, with per-image randomness (kornia).

Why: on small images the per-image torchvision pipeline costs more than the model. On 2 CPU cores,
28 px Fashion-MNIST with 2 global + 4 local crops, one image's six torchvision views take about 1.4 ms
while kornia makes a 256-image batch of all six in about 50 ms (0.2 ms an image) — the difference is a
third of the training step. torchvision v2 applied to a batch draws *one* set of parameters for all its
images, so it cannot do this; kornia's augmentations draw per image (``same_on_batch=False``).

What differs from the per-image pipeline (``views.py``), on purpose or by kornia's choice:
- crops are resized bilinearly without antialiasing (kornia); torchvision antialiases down-scaling;
- the images of a batch must share one size (no per-image resize before cropping);
- the randomness of a batch depends on ``(seed, global position of its first sample)`` rather than on each
  sample alone, so it is still exact on resume and distinct on every process (each batch starts at its
  own position), but a sample's views change when the batch composition does.

The recipe keys, presets, defaults and validation are those of ``view_specs.py`` (`validated_view_args`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from ssl_toolkit.data.batch import Batch
from ssl_toolkit.data.generated import sample_extras, source_of
from ssl_toolkit.data.view_dataset import mix_seeds
from ssl_toolkit.data.view_specs import blur_kernel_size, validated_view_args
from ssl_toolkit.data.views import ResizeIfNeeded
from ssl_toolkit.errors import ConfigError, DataError


def _kornia():
    try:
        import kornia.augmentation as K
    except ImportError as err:  # pragma: no cover - kornia is a runtime dependency
        raise ConfigError(
            "data.view_backend=batched needs kornia: pip install kornia (or use data.view_backend=per_image)"
        ) from err
    return K


class BatchView(nn.Module):
    """uint8 (B, 3, H, W) -> float32 (B, 3, size, size), normalised; random per image."""

    def __init__(self, steps: Sequence[nn.Module], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.steps = nn.Sequential(*steps)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        x = self.steps(x)
        return (x - self.mean) / self.std


def build_batch_view_transform(**kwargs: object) -> Callable[[Tensor], Tensor]:
    """The batched twin of `views.build_view_transform` (same keyword arguments, same checks).

    Shape:
        input (B, 3, H, W) uint8, output (B, 3, size, size) float32.
    """
    args = validated_view_args(**kwargs)  # type: ignore[arg-type]
    size, mean, std = args["size"], args["mean"], args["std"]
    if args["augment"] == "none":  # no randomness: torchvision's resize/crop act on a batch as on one image
        return v2.Compose([ResizeIfNeeded(size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    K = _kornia()
    s = args["strength"]
    jitter = (0.8 * s, 0.8 * s) if args["greyscale"] else (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    steps: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=args["scale"], align_corners=False),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*jitter, p=args["jitter_p"]),
    ]
    if not args["greyscale"]:
        steps.append(K.RandomGrayscale(p=args["gray_p"]))
    if args["blur_p"] > 0:
        k = blur_kernel_size(size)
        steps.append(K.RandomGaussianBlur((k, k), sigma=(0.1, 2.0), p=args["blur_p"]))
    return BatchView(steps, mean, std)


class BatchViewCollate:
    """DataLoader ``collate_fn``: ``[(image, position, id), ...]`` -> a `Batch` of V view batches.

    ``position`` is the sampler's ``epoch * n + i`` (see `EpochSampler`); without ``id`` in the items, ids
    are ``position % n``. With a bank (items hold a `Sample`), ``sources`` names each view's image and the
    samples' extras (``is_generated``) become ``Batch.extras``.
    Randomness is seeded from ``(seed, first position)`` inside ``fork_rng``, so the caller's RNG is untouched.

    Args:
        transforms: one batched transform per view.
        n: dataset length (to decode positions into ids).
        seed: base seed.
        sources: per view, "real" or "generated" (the `Sample` image it is cut from); None without a bank.
    """

    def __init__(
        self,
        transforms: Sequence[Callable[[Tensor], Tensor]],
        *,
        n: int,
        seed: int = 0,
        sources: Sequence[str] | None = None,
    ) -> None:
        if sources is not None and len(sources) != len(transforms):
            raise ConfigError(f"{len(sources)} view sources for {len(transforms)} view transforms")
        self.transforms = list(transforms)
        self.n = int(n)
        self.seed = int(seed)
        self.sources = None if sources is None else tuple(sources)

    def __call__(self, batch: Sequence[tuple]) -> Batch:
        samples = [item[0] for item in batch]
        real = [source_of(s, "real") for s in samples]
        shapes = {tuple(image.shape) for image in real}
        if len(shapes) > 1:
            raise DataError(
                f"data.view_backend=batched needs images of one size, got {sorted(shapes)[:3]}; "
                "resize the images to one size or use data.view_backend=per_image"
            )
        images = {"real": torch.stack(real)}  # (B, 3, H, W)
        if self.sources is not None and "generated" in self.sources:
            images["generated"] = torch.stack([source_of(s, "generated") for s in samples])
        positions = [int(item[1]) for item in batch]
        sources = self.sources or ("real",) * len(self.transforms)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seeds(self.seed, positions[0]))
            views = [t(images[src]) for t, src in zip(self.transforms, sources)]
        ids = torch.tensor([int(item[2]) if len(item) > 2 else p % self.n for item, p in zip(batch, positions)])
        extras = [sample_extras(s) for s in samples]
        return Batch(views, ids, {k: torch.tensor([e[k] for e in extras]) for k in extras[0]})


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
