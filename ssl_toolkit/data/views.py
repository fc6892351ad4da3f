"""Per-image view backend: augmentation presets as torchvision transforms, the eval transform, the collate.

Everything is torchvision ``transforms.v2`` on uint8 (3, H, W) tensors, ending in float32 normalised
images. Each view gets its own transform, drawn per sample inside ``ViewDataset`` (which seeds the torch
RNG per sample; see ``view_dataset.py``). ``collate_views`` keeps one tensor per view so the model can run
one forward per resolution group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data.batch import Batch
from ssl_toolkit.data.blur import gaussian_blur
from ssl_toolkit.data.view_specs import blur_kernel_size, validated_view_args


class ResizeIfNeeded:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop, unless already ``size`` square."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[-2:] == (self.size, self.size):
            return image
        image = TF.resize(image, [self.size], antialias=True)
        return TF.center_crop(image, [self.size, self.size])

    def __repr__(self) -> str:
        return f"ResizeIfNeeded(size={self.size})"


class SeparableGaussianBlur(v2.GaussianBlur):
    """torchvision's GaussianBlur (same parameters, same random draw), convolved as two 1-D passes.

    torchvision convolves image tensors with the full 2-D kernel: 23x23 multiply-adds per pixel at 224 px, about
    20 ms a view on one core. A Gaussian is separable, so ``blur.gaussian_blur`` gives the same result (up to
    float rounding; uint8 rounded as torchvision does) with 2x23.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        sigma_x, sigma_y = params["sigma"]
        if not isinstance(inpt, Tensor) or inpt.dim() != 3 or sigma_x != sigma_y or len(set(self.kernel_size)) > 1:
            return super().transform(inpt, params)
        out = gaussian_blur(inpt[None].float(), torch.tensor([sigma_x]), self.kernel_size[0])[0]
        if inpt.dtype == torch.uint8:
            out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def _simclr(
    *,
    size: int,
    scale: tuple[float, float],
    strength: float,
    jitter_p: float,
    gray_p: float,
    blur_p: float,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
) -> Callable:
    s = strength
    # On greyscale images saturation and hue jitter and RandomGrayscale are identities (up to rounding),
    # and hue is most of the jitter's cost, so they are left out there.
    jitter = v2.ColorJitter(0.8 * s, 0.8 * s) if greyscale else v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    steps: list[Callable] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=jitter_p),
    ]
    if not greyscale:
        steps.append(v2.RandomGrayscale(p=gray_p))
    if blur_p > 0:
        steps.append(v2.RandomApply([SeparableGaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_p))
    return v2.Compose(steps + _finish(mean, std))


def _none(*, size: int, mean: Sequence[float], std: Sequence[float], **_unused: object) -> Callable:
    return v2.Compose([ResizeIfNeeded(size), *_finish(mean, std)])


AUGMENT_PRESETS: dict[str, Callable[..., Callable]] = {
    "simclr": _simclr,
    # AdaInf's weaker SimCLR augmentation for training on inflated (real + generated) data (Wang, Zhang & Wang,
    # ICLR 2024, symmetric_adainf.yaml; views_eval_spec.md §3.3): the same steps with other defaults
    "simclr_weak": _simclr,
    "none": _none,
}


def build_view_transform(**kwargs: object) -> Callable[[Tensor], Tensor]:
    """Build one view's transform: uint8 (3, H, W) -> float32 (3, size, size), normalised.

    Args:
        augment: a key of ``AUGMENT_PRESETS``: "simclr", "simclr_weak" (AdaInf's weaker defaults, for
            inflated data) or "none" (resize + normalise).
        size: output side in pixels.
        scale: RandomResizedCrop area range, ``0 < a <= b <= 1`` (default (0.08, 1); simclr_weak (0.2, 1)).
        strength: colour-jitter strength s, jitter (0.8s, 0.8s, 0.8s, 0.2s); in [0, 2.5] (default 1;
            simclr_weak 0.5, i.e. (0.4, 0.4, 0.4, 0.1)).
        jitter_p: probability of applying colour jitter (default 0.8; simclr_weak 0.4).
        gray_p: probability of converting to greyscale (default 0.2).
        blur_p: probability of Gaussian blur (sigma in [0.1, 2], kernel about 10 % of ``size``);
            None means 0.5 when ``size > 32`` else 0 (no blur on 28-32 px inputs, SimCLR CIFAR practice).
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        greyscale: the images are grey (3 equal channels): skip the saturation/hue jitter and
            RandomGrayscale, which cannot change them.

    Raises:
        ConfigError: see `validated_view_args`.
    """
    args = validated_view_args(**kwargs)  # type: ignore[arg-type]
    return AUGMENT_PRESETS[args.pop("augment")](**args)


def build_eval_transform(*, size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Clean eval transform: resize (antialiased) only when not already ``size`` square, then normalise."""
    return build_view_transform(augment="none", size=size, mean=mean, std=std)


def collate_views(batch: Sequence[tuple]) -> Batch:
    """Turn ``ViewDataset`` items ``[(views, id, extras), ...]`` into one `Batch`.

    ``extras`` of each item is a dict of per-sample scalars (empty for plain datasets); each key becomes a
    (B,) tensor of ``Batch.extras``.

    Shape:
        each ``views`` holds V tensors (C, H_v, W_v); the output holds V tensors (B, C, H_v, W_v).
    """
    n_views = len(batch[0][0])
    if any(len(item[0]) != n_views for item in batch):
        raise ValueError("every sample of a batch must have the same number of views")
    stacked = [torch.stack([item[0][v] for item in batch]) for v in range(n_views)]
    ids = torch.tensor([int(item[1]) for item in batch], dtype=torch.int64)
    extras = batch[0][2] if len(batch[0]) > 2 else {}
    return Batch(stacked, ids, {k: torch.tensor([item[2][k] for item in batch]) for k in extras})
