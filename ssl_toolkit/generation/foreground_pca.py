"""GenView's foreground PCA: the oriented first principal vector of a feature model's patch tokens and its
threshold alpha, fitted, saved (safetensors) and loaded. The choices it makes (centred covariance, raw-token
projections, the sign rule, alpha as a quantile) are listed in ``foreground``'s docstring; hand-written for
the reasons given there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.timm_local import TokenEncoder

SIGN_RULE = "centre_above_border"
PCA_FORMAT = "ssl_toolkit.foreground_pca.v1"


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
