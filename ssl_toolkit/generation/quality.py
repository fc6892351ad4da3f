"""GenView's quality-driven contrastive weights (Li et al., ECCV 2024; code xiaojieli0903/genview, mocov3.py).

A frozen CLIP encoder (GenView: ConvNeXt-Base-W, 7x7 tokens at 224 px) runs on both augmented views. Each
view's tokens are projected on a fixed PCA vector v; the projections, min-max normalised per image, give a
soft foreground mask and its complement. Tokens pooled under the two masks give foreground and background
features; with s_fg and s_bg the cosine similarities of those features between the views, the per-sample
weight is ``B * softmax(gamma * (s_fg - s_bg))`` over the local batch: mean 1, no gradient. Pairs that agree
on the object and differ in background weigh more.

Hand-written because GenView's version lives inside its mmpretrain MoCo v3 / SimSiam models with open_clip
and a fixed 224 px CLIP-normalised input. Here the functional core takes any tokens, and ``QualityWeighter``
wraps a local timm model: it undoes the dataset normalisation of the views and applies the model's own
(CLIP models: CLIP statistics), so the SSL pipeline can keep its ImageNet statistics. v is the vector of
``foreground.fit_foreground_pca`` on the same model's tokens. Its orientation matters here, since a
flipped v swaps foreground and background. The sign rule of ``foreground.SIGN_RULE`` fixes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.foreground import load_foreground_pca
from ssl_toolkit.generation.timm_local import TokenEncoder

EPS = 1e-7  # GenView's constant in the min-max and the mask sums


def _check_tokens(tokens: Tensor, v: Tensor) -> None:
    if tokens.ndim != 3 or v.ndim != 1 or tokens.shape[-1] != v.shape[0]:
        raise ConfigError(
            f"quality weights need tokens (B, N, C) and a vector (C,), got {tuple(tokens.shape)} and "
            f"{tuple(v.shape)}; the PCA vector must come from the same feature model as the tokens"
        )


def foreground_softmask(tokens: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Soft foreground and background masks (B, N), each summing to about 1 per image.

    m = tokens @ v, min-max normalised per image (denominator + 1e-7); M_fg = m / (sum m + 1e-7) and
    M_bg = (1 - m) / (sum(1 - m) + 1e-7), as GenView's ``make_foreground_softmask``.
    """
    _check_tokens(tokens, v)
    m = tokens @ v.to(tokens)
    lo = m.amin(dim=1, keepdim=True)
    hi = m.amax(dim=1, keepdim=True)
    m = (m - lo) / (hi - lo + EPS)
    fg = m / (m.sum(dim=1, keepdim=True) + EPS)
    bg = (1.0 - m) / ((1.0 - m).sum(dim=1, keepdim=True) + EPS)
    return fg, bg


def pool_tokens(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mask-weighted sum of tokens: (B, N, C) and (B, N) to (B, C)."""
    if mask.shape != tokens.shape[:2]:
        raise ConfigError(f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}")
    return torch.einsum("bn,bnc->bc", mask.to(tokens), tokens)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(dim=-1)


def quality_scores(tok1: Tensor, tok2: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine similarities (B,) between the views' foreground-pooled and background-pooled features."""
    if tok1.shape != tok2.shape:
        raise ConfigError(f"the two views' tokens differ in shape: {tuple(tok1.shape)} vs {tuple(tok2.shape)}")
    fg1, bg1 = foreground_softmask(tok1, v)
    fg2, bg2 = foreground_softmask(tok2, v)
    s_fg = _cosine(pool_tokens(tok1, fg1), pool_tokens(tok2, fg2))
    s_bg = _cosine(pool_tokens(tok1, bg1), pool_tokens(tok2, bg2))
    return s_fg, s_bg


def quality_weights(tok1: Tensor, tok2: Tensor, v: Tensor, gamma: float = 1.0) -> Tensor:
    """Per-sample loss weights B * softmax(gamma * (s_fg - s_bg)) over this (local) batch: mean 1, detached."""
    s_fg, s_bg = quality_scores(tok1.detach(), tok2.detach(), v.detach())
    return (s_fg.shape[0] * torch.softmax(gamma * (s_fg - s_bg), dim=0)).detach()


def _stats(values: Sequence[float] | Tensor, name: str, like: Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=like.device).reshape(-1)
    if t.numel() != 3:
        raise ConfigError(f"dataset {name} must have 3 values (RGB), got {t.tolist()}")
    if name == "std" and bool((t <= 0).any()):
        raise ConfigError(f"dataset std must be positive, got {t.tolist()}")
    return t.view(1, 3, 1, 1)


class QualityWeighter(nn.Module):
    """GenView's per-sample quality weights from a frozen local timm model and a fitted PCA vector.

    Build it once and keep it beside the SSL model, not inside it. It holds no parameters or persistent
    buffers of its own: the feature model sits in a plain attribute (``encoder``, a ``TokenEncoder``), not in
    ``_modules``, so it never reaches ``state_dict()``, ``parameters()`` or an optimizer, even if the
    weighter is attached to a training model. ``.to(device)`` still moves it (``_apply`` is forwarded).
    ``train()`` leaves it in eval mode.

    Args:
        model_path: timm export folder, or weights file with ``arch`` (GenView: CLIP ConvNeXt-Base-W,
            timm ``convnext_base.clip_laion2b_augreg``).
        pca_path: ``save_foreground_pca`` file fitted on this model's tokens.
        gamma: softmax temperature of the score difference (GenView: 1.0).
        image_size: model input size; default the model's own.
        arch, model_kwargs, autocast: passed to ``TokenEncoder``.
    """

    def __init__(
        self,
        model_path: str | Path,
        pca_path: str | Path,
        *,
        arch: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        gamma: float = 1.0,
        image_size: int | None = None,
        autocast: bool = True,
    ) -> None:
        super().__init__()
        gamma = float(gamma)
        if not math.isfinite(gamma):
            raise ConfigError(f"quality-weight gamma must be a finite number (GenView: 1.0), got {gamma}")
        self.gamma = gamma
        pca = load_foreground_pca(pca_path)
        self.encoder = TokenEncoder(
            model_path, arch=arch, model_kwargs=model_kwargs, image_size=image_size, autocast=autocast
        )
        self.register_buffer("vector", pca.vector.to(torch.float32), persistent=False)
        super().train(False)

    @property
    def feature_model(self) -> nn.Module:
        """The frozen timm model (outside ``_modules``)."""
        return self.encoder.model

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> QualityWeighter:
        super()._apply(fn, recurse)
        self.encoder.model._apply(fn)
        return self

    def train(self, mode: bool = True) -> QualityWeighter:
        """Stay in eval mode whatever ``mode`` says: the feature model is frozen (BN, dropout off)."""
        super().train(False)
        self.encoder.model.eval()
        return self

    def forward(
        self,
        view_a: Tensor,
        view_b: Tensor,
        *,
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
    ) -> Tensor:
        """Weights (B,) with mean 1 and no gradient for two batches of views normalised with (mean, std)."""
        if view_a.shape != view_b.shape or view_a.ndim != 4 or view_a.shape[1] != 3:
            raise ConfigError(
                f"quality weights need two view batches of equal shape (B, 3, H, W), got "
                f"{tuple(view_a.shape)} and {tuple(view_b.shape)}"
            )
        m, s = _stats(mean, "mean", view_a), _stats(std, "std", view_a)
        pixels = torch.cat([view_a.detach(), view_b.detach()]).float() * s + m
        tokens, _ = self.encoder.encode(pixels)
        tok_a, tok_b = tokens.chunk(2)
        _check_tokens(tok_a, self.vector)
        return quality_weights(tok_a, tok_b, self.vector.to(tokens.device), gamma=self.gamma)


class QualityWeightSignal(nn.Module):
    """`QualityWeighter` as a per-sample signal of a batch: views -> (B,) weights of its first two views.

    `SSLModel` runs its ``signals`` on every batch and hands the results to the objective under
    ``ctx.extras[name]``; this one answers ``sample_weights``. The weighter keeps its feature model out of
    ``state_dict`` (see `QualityWeighter`), so checkpoints do not grow.

    Args:
        weighter: the GenView quality weighter.
        mean, std: the normalisation of the views (to recover pixels).
    """

    def __init__(self, weighter: QualityWeighter, *, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.weighter = weighter
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    @torch.no_grad()
    def forward(self, views: list[Tensor]) -> Tensor:
        return self.weighter(views[0], views[1], mean=self.mean, std=self.std)
