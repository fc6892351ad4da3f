"""Foreground ratio per image and GenView's adaptive noise level (Li et al., ECCV 2024; code xiaojieli0903/genview).

GenView picks the unCLIP ``noise_level`` of each source image from the fraction of its patch tokens that are
foreground: bins (0, .2], (.2, .4], ..., (.8, 1] map to 0, 100, 200, 300, 400 (``np.digitize(right=True)`` in
``generate_ada_noise_level.py``), so images with a large object get more noise. The foreground test
projects each CLIP ViT patch token on the first principal vector of patch tokens sampled from the training
set, and calls it foreground when the projection is above a threshold alpha.

Everything here is hand-written: GenView's scripts are tied to open_clip, downloaded weights and a fixed file
layout, and no library offers the fit as a reusable function. Choices, stated where they differ from or pin
down the reference:

- PCA: the covariance is centred, as in GenView's ``extract_features_pca.py``, but projections are taken on
  the raw tokens (``tokens @ v``), as GenView does when thresholding and in its quality masks. The token mean
  is stored too.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.timm_local import TokenEncoder, check_images_uint8

DEFAULT_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_LEVELS = (0, 100, 200, 300, 400)
SIGN_RULE = "centre_above_border"
PCA_FORMAT = "ssl_toolkit.foreground_pca.v1"


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


@dataclass
class ForegroundPCA:
    """First principal vector of patch tokens, oriented and thresholded so that ``tokens @ vector > alpha``
    marks foreground. ``mean`` is the token mean the covariance was centred with (projections do not use it)."""

    vector: Tensor
    mean: Tensor
    alpha: float
    fg_fraction: float
    model_name: str = ""
    sign_rule: str = SIGN_RULE

    def project(self, tokens: Tensor) -> Tensor:
        """Projections (..., N) of raw tokens (..., N, C) on the vector, as GenView computes them."""
        return tokens.to(self.vector.dtype) @ self.vector.to(tokens.device)

    def foreground(self, tokens: Tensor) -> Tensor:
        """Boolean foreground mask (..., N): projection above alpha."""
        return self.project(tokens) > self.alpha


def _grid_regions(grid: tuple[int, int] | None, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Boolean (N,) masks of the central tokens (within a quarter of the grid size of its centre on both axes)
    and of the outer-ring tokens, for the sign rule."""
    if grid is None or grid[0] * grid[1] != n:
        raise ConfigError(
            f"the PCA sign rule needs the patch grid of the {n} tokens per image; pass grid=(h, w) with h*w == {n}"
        )
    h, w = grid
    if h < 3 or w < 3:
        raise ConfigError(f"the PCA sign rule needs a patch grid of at least 3x3, got {h}x{w}; use larger inputs")
    rows = torch.arange(h, device=device, dtype=torch.float64).view(-1, 1).expand(h, w)
    cols = torch.arange(w, device=device, dtype=torch.float64).view(1, -1).expand(h, w)
    centre = ((rows - (h - 1) / 2).abs() < h / 4) & ((cols - (w - 1) / 2).abs() < w / 4)
    border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    return centre.reshape(-1), border.reshape(-1)


class _PCAAccumulator:
    """Streaming token statistics for the 1-component PCA and the sign rule (float64, shifted sums)."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: Tensor | None = None
        self.sum: Tensor | None = None
        self.outer: Tensor | None = None
        self.centre_sum: Tensor | None = None
        self.border_sum: Tensor | None = None
        self.centre_count = 0
        self.border_count = 0

    def update(self, tokens: Tensor, grid: tuple[int, int] | None) -> None:
        if tokens.ndim != 3:
            raise ConfigError(f"PCA tokens must be shaped (images, tokens, channels), got {tuple(tokens.shape)}")
        t = tokens.detach().to(torch.float64)
        centre, border = _grid_regions(grid, t.shape[1], t.device)
        flat = t.reshape(-1, t.shape[-1])
        if self.shift is None:
            self.shift = flat.mean(dim=0)
            zeros = torch.zeros_like(self.shift)
            self.sum, self.centre_sum, self.border_sum = zeros.clone(), zeros.clone(), zeros.clone()
            self.outer = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=flat.device)
        if flat.shape[1] != self.shift.shape[0]:
            raise ConfigError(f"token width changed from {self.shift.shape[0]} to {flat.shape[1]} between batches")
        d = flat - self.shift
        self.count += d.shape[0]
        self.sum += d.sum(dim=0)
        self.outer += d.T @ d
        self.centre_sum += t[:, centre].sum(dim=(0, 1))
        self.border_sum += t[:, border].sum(dim=(0, 1))
        self.centre_count += int(centre.sum()) * t.shape[0]
        self.border_count += int(border.sum()) * t.shape[0]

    def vector(self) -> tuple[Tensor, Tensor]:
        """(oriented first eigenvector, token mean) of the centred covariance."""
        if self.count < 2 or self.shift is None:
            raise ConfigError("fitting the foreground PCA needs at least 2 tokens; give more images")
        mean_d = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean_d, mean_d)) / (self.count - 1)
        _, vecs = torch.linalg.eigh(cov)
        v = vecs[:, -1]
        diff = self.centre_sum / self.centre_count - self.border_sum / self.border_count
        if float(diff @ v) < 0:
            v = -v
        return v, self.shift + mean_d


def _quantile(values: Tensor, q: float) -> float:
    """Linear-interpolation quantile (numpy's default) without torch.quantile's input-size limit."""
    s = torch.sort(values.reshape(-1)).values
    pos = q * (s.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, s.numel() - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def _check_fraction(fg_fraction: float) -> float:
    if not (0.0 < float(fg_fraction) < 1.0):
        raise ConfigError(f"fg_fraction must lie strictly between 0 and 1 (GenView: about 0.4), got {fg_fraction}")
    return float(fg_fraction)


def fit_foreground_pca(
    tokens: Tensor,
    fg_fraction: float = 0.4,
    *,
    grid: tuple[int, int] | None = None,
    model_name: str = "",
) -> ForegroundPCA:
    """Fit the oriented first principal vector and alpha on patch tokens (images, N, C).

    Args:
        tokens: patch tokens of the fitting images, N = h*w per image in row-major grid order.
        fg_fraction: share of the fitting tokens that end up above alpha.
        grid: the (h, w) patch grid; default: square N. Needed for the sign rule.
        model_name: the feature model the tokens come from, stored with the result.
    """
    fraction = _check_fraction(fg_fraction)
    if tokens.ndim != 3:
        raise ConfigError(f"PCA tokens must be shaped (images, tokens, channels), got {tuple(tokens.shape)}")
    if grid is None:
        side = math.isqrt(tokens.shape[1])
        grid = (side, side) if side * side == tokens.shape[1] else None
    acc = _PCAAccumulator()
    acc.update(tokens, grid)
    v, mean = acc.vector()
    alpha = _quantile(tokens.detach().to(torch.float64) @ v, 1.0 - fraction)
    return ForegroundPCA(vector=v, mean=mean, alpha=alpha, fg_fraction=fraction, model_name=model_name)


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        return [images[i : i + batch_size] for i in range(0, images.shape[0], batch_size)]
    return images


def fit_foreground_pca_from_images(
    model_path: str | Path,
    images: Tensor | Iterable[Tensor],
    *,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    image_size: int | None = None,
    fg_fraction: float = 0.4,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    autocast: bool = True,
) -> ForegroundPCA:
    """Run a local timm model on uint8 images and fit the foreground PCA on their patch tokens.

    ``images`` is one uint8 tensor (B, 3, H, W), or a re-iterable collection of such batches (a list, a
    DataLoader): it is read twice, once for the covariance and once for alpha, so that token memory stays
    bounded (GenView fits on 10,000 ImageNet images, 10 per class).
    """
    fraction = _check_fraction(fg_fraction)
    if not isinstance(images, Tensor) and iter(images) is images:
        raise ConfigError("fit_foreground_pca_from_images reads the images twice; give a tensor, list or DataLoader")
    encoder = TokenEncoder(
        model_path, arch=arch, model_kwargs=model_kwargs, image_size=image_size, autocast=autocast, device=device
    )
    acc = _PCAAccumulator()
    for batch in _batches(images, batch_size):
        acc.update(*encoder.encode_uint8(batch))
    v, mean = acc.vector()
    projections = [encoder.encode_uint8(batch)[0].to(torch.float64) @ v for batch in _batches(images, batch_size)]
    alpha = _quantile(torch.cat([p.reshape(-1) for p in projections]), 1.0 - fraction)
    return ForegroundPCA(vector=v.cpu(), mean=mean.cpu(), alpha=alpha, fg_fraction=fraction, model_name=encoder.name)


def save_foreground_pca(path: str | Path, pca: ForegroundPCA) -> Path:
    """Write the PCA as safetensors (vector, mean, alpha) with fg_fraction, sign rule and model name as metadata."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "vector": pca.vector.detach().to("cpu", torch.float64).contiguous(),
        "mean": pca.mean.detach().to("cpu", torch.float64).contiguous(),
        "alpha": torch.tensor([pca.alpha], dtype=torch.float64),
    }
    metadata = {
        "format": PCA_FORMAT,
        "fg_fraction": repr(float(pca.fg_fraction)),
        "sign_rule": pca.sign_rule,
        "model_name": pca.model_name,
        "projection": "raw tokens @ vector > alpha is foreground",
    }
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def load_foreground_pca(path: str | Path) -> ForegroundPCA:
    """Read a PCA written by ``save_foreground_pca``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"foreground PCA file {path} does not exist; fit one with fit_foreground_pca_from_images")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for non-safetensors files
        raise ConfigError(f"{path} is not a safetensors foreground PCA file: {err}") from err
    if metadata.get("format") != PCA_FORMAT or not {"vector", "mean", "alpha"} <= tensors.keys():
        raise ConfigError(f"{path} is not a foreground PCA file written by save_foreground_pca")
    vector, mean = tensors["vector"], tensors["mean"]
    if vector.ndim != 1 or mean.shape != vector.shape:
        raise ConfigError(f"{path}: vector and mean must be 1-d of equal length, got {vector.shape}, {mean.shape}")
    return ForegroundPCA(
        vector=vector,
        mean=mean,
        alpha=float(tensors["alpha"].reshape(-1)[0]),
        fg_fraction=float(metadata.get("fg_fraction", "nan")),
        model_name=metadata.get("model_name", ""),
        sign_rule=metadata.get("sign_rule", SIGN_RULE),
    )


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
