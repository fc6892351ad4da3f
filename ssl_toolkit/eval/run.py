"""`evaluate`: k-NN (two protocols), linear probe and RankMe of a frozen encoder, next to two floors.

Definitions (also written into ``metrics.json``):
- k-NN: L2-normalised backbone features of clean images, cosine top-k over the train bank, votes weighted
  ``exp(sim / T)``; protocols ``instdisc`` (k=200, T=0.1) and ``dino`` (k=20, T=0.07).
- Linear probe: cached features, a grid of learning rates with/without BatchNorm trained in one run,
  chosen on a 10 % validation split of train, test top-1 reported once (see `linear_probe`).
- RankMe: exp(entropy) of the normalised singular values of up to 25,600 train features (backbone output
  for exported encoders: the projector is not exported), no centring.
- Floors: ``raw_pixels`` (pixel values in [0, 1] at native size, flattened; ``pixel_transform``) and
  ``random_init`` (the same architecture, random
  weights with the norm layers' affine reset to identity (`reset_norm_affine`), BatchNorm statistics
  re-estimated on 20 clean training batches).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_toolkit.eval.features import extract_features, recalibrate_batchnorm, reset_norm_affine
from ssl_toolkit.eval.knn import knn_accuracy
from ssl_toolkit.eval.linear import linear_probe
from ssl_toolkit.eval.rankme import rankme

KNN_PROTOCOLS: dict[str, tuple[int, float]] = {"instdisc": (200, 0.1), "dino": (20, 0.07)}
DEFINITIONS = {
    "knn": "cosine k-NN on L2-normalised backbone features, votes exp(sim/T); instdisc k=200 T=0.1, dino k=20 "
    "T=0.07; top-1 %",
    "linear": "linear probe on cached clean features, lr x BatchNorm grid, chosen on a 10% val split of train; "
    "test top-1 %",
    "rankme": "exp(entropy) of normalised singular values of up to 25,600 train features, no centring "
    "(backbone features)",
    "raw_pixels": "floor: pixel values in [0, 1] at the images' native size (no normalisation), flattened",
    "random_init": "floor: same architecture, random weights (timm init with every norm layer's affine reset to "
    "identity), BatchNorm statistics re-estimated on 20 clean training batches",
}


def score_features(
    train_f: Tensor,
    train_y: Tensor,
    test_f: Tensor,
    test_y: Tensor,
    *,
    linear_epochs: int = 30,
    linear_lrs: Sequence[float] = (1.0, 0.3, 0.1, 0.03),
    rankme_samples: int = 25600,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """k-NN for both protocols, the linear probe and RankMe on precomputed features."""
    metrics: dict[str, float] = {}
    for name, (k, temperature) in KNN_PROTOCOLS.items():
        k = min(k, int((train_y >= 0).sum()))
        metrics[f"knn_{name}"] = knn_accuracy(train_f, train_y, test_f, test_y, k=k, temperature=temperature)[k]
    probe = linear_probe(
        train_f, train_y, test_f, test_y, lrs=linear_lrs, epochs=linear_epochs, seed=seed, progress=progress
    )
    metrics["linear"] = probe["top1"]
    metrics["linear_lr"] = probe["lr"]
    metrics["linear_bn"] = float(probe["batch_norm"])
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(train_f), generator=g)[:rankme_samples]
    metrics["rankme"] = rankme(train_f[rows])
    return metrics


def evaluate(
    encoder: nn.Module,
    *,
    train_set: Dataset,
    test_set: Dataset,
    transform: Callable[[Tensor], Tensor],
    pixel_transform: Callable[[Tensor], Tensor] | None = None,
    random_encoder: nn.Module | None = None,
    floors: bool = True,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    out_path: str | Path | None = None,
    progress: bool = True,
    **score_kwargs: Any,
) -> dict[str, Any]:
    """Score ``encoder`` (and the floors) on ``train_set``/``test_set``; optionally write ``metrics.json``.

    Returns:
        ``{"encoder": metrics, "raw_pixels": metrics, "random_init": metrics, "definitions": {...}}``
        (floors only when ``floors`` is true; ``random_init`` only when ``random_encoder`` is given).
    """
    candidates: dict[str, nn.Module | None] = {"encoder": encoder}
    if floors:
        candidates["raw_pixels"] = None
        if random_encoder is not None:
            random_encoder = reset_norm_affine(random_encoder)
            candidates["random_init"] = recalibrate_batchnorm(
                random_encoder, train_set, transform=transform, device=device
            )
    results: dict[str, Any] = {}
    for name, model in candidates.items():
        feats = [
            extract_features(
                model,
                ds,
                transform=pixel_transform if model is None and pixel_transform is not None else transform,
                batch_size=batch_size,
                device=device,
                desc=f"{name} {split}",
                progress=progress,
            )
            for split, ds in (("train", train_set), ("test", test_set))
        ]
        results[name] = score_features(*feats[0], *feats[1], progress=progress, **score_kwargs)
    results["definitions"] = DEFINITIONS
    if out_path is not None:
        Path(out_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width table: one row per model, k-NN (both protocols), linear probe and RankMe."""
    header = f"{'model':<14}{'kNN instdisc':>14}{'kNN dino':>10}{'linear':>9}{'RankMe':>9}"
    lines = [header, "-" * len(header)]
    for name, m in results.items():
        if not (isinstance(m, dict) and "knn_instdisc" in m):
            continue
        lines.append(
            f"{name:<14}{m['knn_instdisc']:>13.2f}%{m['knn_dino']:>9.2f}%{m['linear']:>8.2f}%{m['rankme']:>9.1f}"
        )
    return "\n".join(lines)
