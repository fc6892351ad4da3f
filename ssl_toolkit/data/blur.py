"""Gaussian blur with one sigma per image, as two 1-D depthwise convolutions on channels-last memory.

Why not kornia's ``gaussian_blur2d`` directly: it convolves in NCHW memory, where PyTorch's CPU depthwise
convolution is about twice as slow as in channels-last (measured on one core: 1.2 against 0.54 ms for four
224 px images and a 13-tap kernel); the kernel weights are kornia's (``get_gaussian_kernel1d``), the padding is
reflection as in torchvision's GaussianBlur, so the result equals torchvision's up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int, *, truncate: float | None = None) -> Tensor:
    """Blur each image with its own sigma (the same along both axes), reflection padding.

    Args:
        x: float images.
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel width, at most the image side + 1 (reflection padding).
        truncate: cut each image's kernel at this many of its own sigmas (weights beyond are 0, the rest
            renormalised), so its result does not depend on the kernel width; None keeps the whole width.

    Returns:
        The blurred images, a new (B, C, H, W) tensor.

    Shape:
        x (B, C, H, W), sigma (B,).
    """
    from kornia.filters import get_gaussian_kernel1d

    n, channels, height, width = x.shape
    sigma = sigma.to(x.device, x.dtype)[:, None]  # (B, 1)
    weights = get_gaussian_kernel1d(kernel_size, sigma)  # (B, k)
    if truncate is not None:
        offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - kernel_size // 2
        weights = weights * (offsets.abs()[None] <= torch.ceil(truncate * sigma))
        weights = weights / weights.sum(dim=1, keepdim=True)
    weights = weights.repeat_interleave(channels, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect").reshape(1, n * channels, height + 2 * pad, width + 2 * pad)
    padded = padded.contiguous(memory_format=torch.channels_last)
    rows = F.conv2d(padded, weights[:, None, None, :], groups=n * channels)  # (1, B*C, H + 2p, W)
    out = F.conv2d(rows, weights[:, None, :, None], groups=n * channels)  # (1, B*C, H, W)
    return out.reshape(n, channels, height, width)
