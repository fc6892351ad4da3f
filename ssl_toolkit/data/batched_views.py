"""Batched views: one view made for a whole batch of images of any sizes in one call, random per image.

Why: a per-image pipeline pays Python and dispatch costs per image and per operation, and torchvision v2
applied to a batch draws *one* set of parameters for all its images. Here one call makes view ``v`` of every
image of the batch: per image, a random-resized-crop box drawn from the image's own size as torchvision draws it
(``crops.py``), the crops resized with torchvision's antialiased filter, then flip, colour jitter, greyscale,
Gaussian blur and normalisation on the (B, 3, size, size) batch, with per-image parameters (``colour.py``,
``blur.py``).

Randomness: `BatchView.draw` takes every random number from the global torch CPU generator, in a fixed
amount per call whatever the outcome, and `BatchView.apply` uses none; the collate seeds the generator per
batch (``batched_collate.py``). So the views are the same whichever device `apply` runs on (loader workers on
the CPU, or the training GPU with ``data.view_device=cuda``) up to that device's floating point.

Against the per-image pipeline (``views.py``), the distributions are the same except that colour jitter
applies its four adjustments in one random order per batch (torchvision: per image); each image's order is
still uniformly random. The recipe keys, presets, defaults and validation are ``view_specs.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_toolkit.data.batched_collate import BatchViewCollate, ImageBatch, PositionedImages
from ssl_toolkit.data.blur import gaussian_blur
from ssl_toolkit.data.colour import JITTER_OPS, colour_jitter_, to_grey_
from ssl_toolkit.data.crops import image_sizes, resized_crops, sample_crop_boxes
from ssl_toolkit.data.view_specs import blur_kernel_size, validated_view_args
from ssl_toolkit.data.views import ResizeIfNeeded

__all__ = [  # the collate side lives in batched_collate.py; its classes are importable from here too
    "BatchResize",
    "BatchView",
    "BatchViewCollate",
    "ImageBatch",
    "PositionedImages",
    "ViewParams",
    "build_batch_view_transform",
]
Images = Tensor | Sequence[Tensor]  # a uint8 batch (B, 3, H, W) or B uint8 images (3, H_i, W_i)
SIGMA = (0.1, 2.0)  # SimCLR's Gaussian blur sigma range
TRUNCATE = 4.0  # blur kernels end at 4 sigma
CHUNK_BYTES = 2_500_000  # float pixels processed at a time on the CPU: about 4 views of 224 px, fits in cache


@dataclass
class ViewParams:
    """The random parameters of one view for a batch of B images (CPU tensors).

    Attributes:
        boxes: (B, 4) crop boxes ``(top, left, height, width)``.
        flip: (B,) horizontal flips.
        jitter: (B,) which images get colour jitter; ``factors`` holds (B,) factors per adjustment and
            ``order`` the order of the adjustments (indices into ``colour.JITTER_OPS``).
        grey: (B,) which images become greyscale.
        blur: (B,) which images are blurred, with standard deviations ``sigma`` (B,).
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: dict[str, Tensor]
    order: list[int]
    grey: Tensor
    blur: Tensor
    sigma: Tensor


def _subset(mask: Tensor, x: Tensor) -> Tensor | None:
    """Indices (on x's device) of the true entries of ``mask``, or None when there is none."""
    index = mask.nonzero().flatten()
    return index.to(x.device) if len(index) else None


def _output(shape: torch.Size, device: torch.device) -> Tensor:
    """An empty float32 tensor; in a loader worker, in shared memory, so that handing the views to the main
    process copies nothing (what torch's default collate does for its stacked tensors)."""
    if device.type != "cpu" or torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    template = torch.empty(0, dtype=torch.float32)
    storage = template._typed_storage()._new_shared(shape.numel(), device=device)
    return template.new(storage).resize_(shape)


def _put(dst: Tensor, index: Tensor, src: Tensor) -> None:
    """``dst[index] = src`` along the first dimension, one image at a time.

    Why not ``index_put_``/``index_copy_``: on the CPU both index every element (they took a fifth of a 224 px
    view's time in the profile of `BatchView.apply`), where a copy per image is a plain block copy. On a GPU
    one ``index_copy_`` kernel is the cheap way (a loop would read the indices back and launch B copies).
    """
    if dst.device.type != "cpu":
        dst.index_copy_(0, index, src)
        return
    for k, i in enumerate(index.tolist()):
        dst[i].copy_(src[k])


def _select(factors: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    return {k: v[mask] for k, v in factors.items()}


def _where(mask: Tensor, x: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> None:
    """``x[mask] = op(x[mask], mask)``, in place on ``x`` itself when the mask selects every image."""
    if bool(mask.all()):
        result = op(x, mask)
        if result is not x:
            x.copy_(result)
        return
    index = _subset(mask, x)
    if index is not None:
        _put(x, index, op(x.index_select(0, index), mask))


def chunk_order(params: ViewParams) -> Tensor:
    """The images of a batch in the order the CPU processes them a chunk at a time: unblurred first, then
    blurred by their kernel's reach; within those, by jitter and greyscale.

    A chunk then mostly holds images that all take, or all skip, each step (applied in place on the whole
    chunk, no gather and scatter), and its blur is as wide as its own sigmas need, not as the widest of a
    random few (3-17 taps instead of 15-17 for most chunks of a 224 px view). Each image's result is the same
    in any order, up to float rounding.
    """
    reach = torch.ceil(TRUNCATE * params.sigma).to(torch.int64) * params.blur
    key = params.blur.to(torch.int64) * 10_000 + reach * 100 + params.jitter.to(torch.int64) * 10 + params.grey
    return torch.argsort(key, stable=True)


class BatchView:
    """uint8 images (a batch, or a list of any sizes) -> float32 (B, 3, size, size), normalised; random per image.

    Args:
        size: output side.
        scale: random-resized-crop area range.
        strength: colour-jitter strength s: brightness, contrast, saturation 0.8s, hue 0.2s.
        jitter_p: probability of colour jitter, per image.
        gray_p: probability of greyscale, per image.
        blur_p: probability of Gaussian blur (sigma in [0.1, 2], kernel about 10 % of ``size``), per image.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        greyscale: the images are grey: jitter brightness and contrast only, never convert to greyscale.
    """

    def __init__(
        self,
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
    ) -> None:
        self.size, self.scale, self.strength = int(size), tuple(scale), float(strength)
        self.jitter_p, self.gray_p, self.blur_p = float(jitter_p), float(gray_p), float(blur_p)
        self.kernel = blur_kernel_size(self.size)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.greyscale = bool(greyscale)

    def draw(self, sizes: Tensor) -> ViewParams:
        """Draw the parameters for images of ``sizes`` (B, 2) from the global torch generator (CPU)."""
        n = sizes.shape[0]
        boxes = sample_crop_boxes(sizes, scale=self.scale)  # type: ignore[arg-type]
        flip = torch.rand(n) < 0.5
        jitter = torch.rand(n) < self.jitter_p
        s = self.strength
        spans = {"brightness": 0.8 * s, "contrast": 0.8 * s, "saturation": 0.8 * s}
        factors = {k: torch.empty(n).uniform_(max(0.0, 1.0 - a), 1.0 + a) for k, a in spans.items()}
        factors["hue"] = torch.empty(n).uniform_(-0.2 * s, 0.2 * s)
        order = torch.randperm(len(JITTER_OPS)).tolist()
        if self.greyscale:  # saturation and hue cannot change grey images (torchvision: identities)
            factors = {k: factors[k] for k in ("brightness", "contrast")}
        grey = (torch.rand(n) < self.gray_p) & (not self.greyscale)
        blur = torch.rand(n) < self.blur_p
        sigma = torch.empty(n).uniform_(*SIGMA)
        return ViewParams(boxes, flip, jitter, factors, order, grey, blur, sigma)

    def apply(self, images: Images, params: ViewParams) -> Tensor:
        """Make the views of ``images`` with ``params``, on the images' device (no randomness used).

        On the CPU the pixel work runs a few images at a time (`CHUNK_BYTES` of float pixels), so that its ~30
        passes over the pixels hit the cache: a 224 px view's hue shift takes half the time it takes on a
        batch of 32 (measured on one core). The result does not depend on the chunking (up to float rounding).

        Shape:
            images (B, 3, H, W) or B x (3, H_i, W_i) uint8; returns (B, 3, size, size) float32.
        """
        crops = resized_crops(images, params.boxes, self.size)  # (B, 3, S, S) uint8
        flips = _subset(params.flip, crops)
        if flips is not None:
            _put(crops, flips, crops.index_select(0, flips).flip(-1))
        out = _output(crops.shape, crops.device)
        if crops.device.type != "cpu":
            self._finish_(out.copy_(crops).div_(255.0), params, slice(None))
            return out
        step = max(1, CHUNK_BYTES // (crops[0].numel() * out.element_size()))
        order = chunk_order(params)
        for start in range(0, len(crops), step):
            part = order[start : start + step]
            x = crops.index_select(0, part).to(torch.float32).div_(255.0)
            _put(out, part, self._finish_(x, params, part))
        return out

    def _finish_(self, x: Tensor, params: ViewParams, part: slice | Tensor) -> Tensor:
        """Jitter, greyscale, blur and normalise the images ``part`` of the batch, in place; returns ``x``."""
        factors = {k: v[part] for k, v in params.factors.items()}
        _where(params.jitter[part], x, lambda y, sel: colour_jitter_(y, _select(factors, sel), params.order))
        _where(params.grey[part], x, lambda y, sel: to_grey_(y))
        _where(params.blur[part], x, lambda y, sel: self._blur(y, params.sigma[part][sel]))
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    def _blur(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Separable Gaussian blur (``blur.py``), one sigma per image, each kernel cut at 4 of its sigmas.

        The weights beyond 4 sigma are below 3.4e-4 of the centre one (6e-5 of the mass in all), far below
        what 8-bit images resolve; torchvision's kernel (10 % of the view side) is never exceeded. The
        convolution is as wide as the largest cut kernel of the chunk: small sigmas cost 3-9 taps instead of 23.
        """
        reach = 2 * math.ceil(TRUNCATE * float(sigma.max())) + 1
        return gaussian_blur(x, sigma, max(3, min(self.kernel, reach)), truncate=TRUNCATE)

    def __call__(self, images: Images) -> Tensor:
        return self.apply(images, self.draw(image_sizes(images)))


class BatchResize:
    """The "none" preset for a batch: resize (antialiased) and centre-crop to ``size`` when needed, normalise."""

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.resize = ResizeIfNeeded(size)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: Images) -> Tensor:
        if isinstance(images, Tensor):
            resized = self.resize(images)
        else:
            resized = torch.stack([self.resize(image) for image in images])
        x = resized.to(torch.float32).div_(255.0)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))


def build_batch_view_transform(**kwargs: object) -> BatchView | BatchResize:
    """The batched twin of `views.build_view_transform` (same keyword arguments, same checks).

    Shape:
        input (B, 3, H, W) uint8 or B x (3, H_i, W_i) uint8; output (B, 3, size, size) float32.
    """
    args = validated_view_args(**kwargs)  # type: ignore[arg-type]
    if args.pop("augment") == "none":
        return BatchResize(size=args["size"], mean=args["mean"], std=args["std"])
    return BatchView(**args)
