"""Foreground ratio per image and GenView's adaptive noise level (Li et al., ECCV 2024; code xiaojieli0903/genview).

GenView picks the unCLIP ``noise_level`` of each source image from the fraction of its patch tokens that are
foreground: bins (0, .2], (.2, .4], ..., (.8, 1] map to 0, 100, 200, 300, 400 (``np.digitize(right=True)`` in
``generate_ada_noise_level.py``), so images with a large object get more noise. The foreground test
projects each CLIP ViT patch token on the first principal vector of patch tokens sampled from the training
set, and calls it foreground when the projection is above a threshold alpha.

Everything here is hand-written: GenView's scripts are tied to open_clip, downloaded weights and a fixed file
layout, and no library offers the fit as a reusable function. Choices, stated where they differ from or pin
down the reference:

- PCA (in ``foreground_pca``): the covariance is centred, as in GenView's ``extract_features_pca.py``, but
  projections are taken on the raw tokens (``tokens @ v``), as GenView does when thresholding and in its
  quality masks. The token mean is stored too.
- Sign: an eigenvector's sign is arbitrary, so it is fixed with the rule ``SIGN_RULE``: tokens in the
  central part of the patch grid project higher on average than tokens on its outer ring (objects tend to be
  central), so that "projection > alpha" means foreground. GenView instead chose "<" or ">" by hand per run.
- alpha: the (1 - fg_fraction) quantile of the fitting projections, so that about ``fg_fraction`` of tokens are
  foreground (README: about 40 %; the code's fallback 0.65 quantile gives 35 %).
- Bin edges are compared in the precision of the ratio's dtype (the edges are rounded to it first), so that
  a float32 ratio equal to float32(0.2) lands in the same bin as the float64 0.2.

``SaliencyScorer`` is a weight-free fallback, not GenView's method: spectral-residual saliency
(Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007) with their object-map rule
(saliency above 3 x its mean). It is a heuristic for small to medium textured "proto-objects": the 3 x mean
rule bounds the ratio by 1/3 (Markov's inequality), so with the default bins it gives noise levels 0 or 100
only, and it sees a flat-coloured object mostly by its corners.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.foreground_pca import (  # noqa: F401  (re-exported: the PCA is part of the scorer's API)
    PCA_FORMAT,
    SIGN_RULE,
    ForegroundPCA,
    fit_foreground_pca,
    fit_foreground_pca_from_images,
    load_foreground_pca,
    save_foreground_pca,
)
from ssl_toolkit.generation.timm_local import TokenEncoder, check_images_uint8

DEFAULT_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_LEVELS = (0, 100, 200, 300, 400)


def noise_level_from_fg_ratio(
    ratio: Tensor | float | Sequence[float],
    bins: Sequence[float] = DEFAULT_BINS,
    levels: Sequence[int] = DEFAULT_LEVELS,
) -> Tensor:
    """Map foreground ratios in [0, 1] to noise levels (int64, same shape) with right-closed bins.

    A ratio r in (bins[i], bins[i+1]] gets levels[i]; exactly bins[0] gets levels[0] (GenView's
    ``np.digitize(right=True)`` with index 0 folded into the first level). 500 is never produced by default.
    """
    edges = [float(b) for b in bins]
    if len(levels) != len(edges) - 1 or len(levels) < 1:
        raise ConfigError(
            f"noise-level bins need one more edge than levels, got {len(edges)} edges, {len(levels)} levels"
        )
    if any(b >= a for a, b in zip(edges[1:], edges[:-1])):
        raise ConfigError(f"noise-level bin edges must increase strictly, got {edges}")
    if edges[0] > 0.0 or edges[-1] < 1.0:
        raise ConfigError(f"noise-level bin edges must cover [0, 1] (first <= 0, last >= 1), got {edges}")
    r = torch.as_tensor(ratio)
    if not r.is_floating_point():
        r = r.to(torch.float64)
    r64 = r.to(torch.float64)
    bad = ~torch.isfinite(r64) | (r64 < 0) | (r64 > 1)
    if bad.any():
        raise ConfigError(
            f"foreground ratios must be finite and in [0, 1], got {r64[bad].flatten()[:5].tolist()}; "
            "check the scorer output"
        )
    # Round the edges to the ratio's own precision, then compare exactly in float64.
    edge_t = torch.tensor(edges, dtype=r.dtype, device=r.device).to(torch.float64)
    index = torch.searchsorted(edge_t, r64.contiguous().reshape(-1), right=False)  # edges[i-1] < r <= edges[i]
    level_t = torch.tensor([int(v) for v in levels], dtype=torch.int64, device=r.device)
    return level_t[(index - 1).clamp(0, len(levels) - 1)].reshape(r.shape)


@runtime_checkable
class ForegroundScorer(Protocol):
    """Anything that maps uint8 RGB images (B, 3, H, W) to float32 foreground ratios (B,) in [0, 1]."""

    def __call__(self, images: Tensor) -> Tensor: ...


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


class SaliencyScorer:
    """Weight-free foreground ratio from spectral-residual saliency (Hou & Zhang, CVPR 2007); a heuristic.

    Per image: grey level, resized to ``size`` x ``size``; log-amplitude spectrum minus its 3x3 mean (the
    spectral residual); back to the image plane with the original phase; squared magnitude; Gaussian
    smoothing (``sigma`` pixels at the working size). Object pixels are those with saliency above
    ``threshold_factor`` times the mean saliency (Hou & Zhang's rule); the ratio is their fraction. The
    square resize (Hou & Zhang keep the aspect ratio at width 64) keeps batches simple and area fractions
    unchanged. Not GenView's CLIP+PCA test: see the module docstring for its range and limits.
    """

    def __init__(self, threshold_factor: float = 3.0, size: int = 64, sigma: float = 2.5) -> None:
        if not (math.isfinite(threshold_factor) and threshold_factor > 0):
            raise ConfigError(f"threshold_factor must be a positive number, got {threshold_factor}")
        if int(size) < 8:
            raise ConfigError(f"saliency size must be at least 8 pixels, got {size}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"saliency sigma must be a positive number of pixels, got {sigma}")
        self.threshold_factor = float(threshold_factor)
        self.size = int(size)
        self.sigma = float(sigma)

    def saliency(self, images: Tensor) -> Tensor:
        """Smoothed spectral-residual saliency maps (B, size, size), float64."""
        check_images_uint8(images)
        x = images.to(torch.float64) / 255.0
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        grey = F.interpolate(grey, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        spectrum = torch.fft.fft2(grey[:, 0])
        amplitude = spectrum.abs()
        # log(0) guard scaled to the image: synthetic images have exact spectral zeros, real ones hardly.
        log_amp = torch.log(amplitude + 1e-6 * amplitude.mean(dim=(-2, -1), keepdim=True) + 1e-30)
        local = F.avg_pool2d(F.pad(log_amp.unsqueeze(1), (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
        residual = log_amp - local
        sal = torch.fft.ifft2(torch.exp(torch.complex(residual, torch.angle(spectrum)))).abs() ** 2
        k = _gaussian_kernel(self.sigma, sal.dtype, sal.device)
        r = k.numel() // 2
        sal = F.pad(sal.unsqueeze(1), (r, r, r, r), mode="replicate")
        sal = F.conv2d(F.conv2d(sal, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[:, 0]
        flat = (grey.amax(dim=(1, 2, 3)) - grey.amin(dim=(1, 2, 3))) < 1.0 / 255.0
        return torch.where(flat.view(-1, 1, 1), torch.zeros_like(sal), sal)

    def __call__(self, images: Tensor) -> Tensor:
        """Foreground ratios (B,) float32: fraction of pixels above ``threshold_factor`` x mean saliency."""
        sal = self.saliency(images)
        mean = sal.mean(dim=(1, 2), keepdim=True)
        obj = (sal > self.threshold_factor * mean) & (mean > 0)
        return obj.to(torch.float64).mean(dim=(1, 2)).to(torch.float32)


class ClipPcaScorer:
    """GenView's foreground ratio: fraction of patch tokens of a frozen local timm model above the PCA threshold.

    Args:
        model_path: timm export folder, or weights file with ``arch`` (see ``timm_local``); GenView uses CLIP
            ViT-H/14 (laion2b_s32b_b79k) at 224 px.
        arch: timm model name with pretrained tag, for a weights file.
        pca_path: file from ``save_foreground_pca``, fitted on this model's tokens.
        image_size: input size; default the model's own (224 for the GenView CLIP models).
        model_kwargs, device, autocast: passed to ``TokenEncoder``.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        arch: str | None = None,
        pca_path: str | Path,
        image_size: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        autocast: bool = True,
    ) -> None:
        self.pca = load_foreground_pca(pca_path)
        self.encoder = TokenEncoder(
            model_path, arch=arch, model_kwargs=model_kwargs, image_size=image_size, autocast=autocast, device=device
        )

    def __call__(self, images: Tensor) -> Tensor:
        """Foreground ratios (B,) float32 on the images' device."""
        tokens, _ = self.encoder.encode_uint8(images)
        if tokens.shape[-1] != self.pca.vector.shape[0]:
            raise ConfigError(
                f"the PCA vector has {self.pca.vector.shape[0]} channels but the model's tokens have "
                f"{tokens.shape[-1]}; fit the PCA on this model ({self.encoder.name}, PCA from "
                f"{self.pca.model_name or 'unknown model'})"
            )
        fg = self.pca.foreground(tokens.to(torch.float64))
        return fg.to(torch.float32).mean(dim=1).to(images.device)


SCORERS: dict[str, type] = {"saliency": SaliencyScorer, "clip_pca": ClipPcaScorer}


def build_scorer(name: str, **kwargs: Any) -> ForegroundScorer:
    """Build a registered foreground scorer by name with its keyword arguments."""
    if name not in SCORERS:
        raise ConfigError(f"unknown foreground scorer {name!r}; choose one of {sorted(SCORERS)}")
    cls = SCORERS[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters]
        raise ConfigError(f"foreground scorer {name!r}: {err}; it accepts {accepted}") from err
    return cls(**kwargs)
