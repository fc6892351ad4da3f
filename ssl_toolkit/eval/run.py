"""`evaluate`: label-based and label-free scores of a frozen encoder, next to two floors, and their table.

Label-based (when train and test labels exist): k-NN for both protocols from one search, the linear probe.
Label-free (always): RankMe, alpha-ReQ and embedding statistics on up to 25,600 train features, and LiDAR on
augmented views of a seeded subset of train images. The definitions, written into every ``metrics.json``,
are in `definitions` and ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.alpha_req import alpha_req
from ssl_toolkit.eval.arrays import as_tensor
from ssl_toolkit.eval.features import extract_features, extract_view_features, recalibrate_batchnorm, reset_norm_affine
from ssl_toolkit.eval.knn import knn_protocols
from ssl_toolkit.eval.lidar import lidar
from ssl_toolkit.eval.linear import linear_probe
from ssl_toolkit.eval.rankme import rankme
from ssl_toolkit.eval.stats import embedding_stats

KNN_PROTOCOLS = defaults.KNN_PROTOCOLS  # re-exported: the monitor imports it from here


def definitions(*, raw_pixels_size: int | None = None, lidar_samples: int = defaults.LIDAR_SAMPLES,
                lidar_views: int = defaults.LIDAR_VIEWS) -> dict[str, str]:  # fmt: skip
    """One line per reported quantity, as written into ``metrics.json`` (``docs/evaluation.md`` in full)."""
    k_i, t_i = defaults.KNN_PROTOCOLS["instdisc"]
    k_d, t_d = defaults.KNN_PROTOCOLS["dino"]
    first, last = defaults.ALPHA_REQ_FIT_RANGE
    size = f"; here {raw_pixels_size} px" if raw_pixels_size else ""
    return {
        "knn": f"cosine k-NN on L2-normalised backbone features, votes exp(sim/T); instdisc k={k_i} T={t_i}, "
        f"dino k={k_d} T={t_d}; one search serves both; top-1 %",
        "linear": "linear probe on cached clean features, lr x BatchNorm grid, chosen on a 10% val split of train; "
        "test top-1 %",
        "rankme": f"exp(entropy) of normalised singular values of up to {defaults.RANKME_SAMPLES:,} train features, "
        "no centring (backbone features)",
        "alpha_req": f"power-law decay of the train features' covariance eigenvalues, least squares in log-log over "
        f"ranks {first}-{last} weighted 1/i (Agrawal et al. 2022); null when undefined",
        "lidar": f"effective rank of the LDA matrix S_w^-1/2 S_b S_w^-1/2 of {lidar_views} simclr views of each of "
        f"{lidar_samples} seeded train images (delta {defaults.LIDAR_DELTA}, Thilak et al. 2023)",
        "embedding_stats": "norm_mean: mean L2 norm of the features; dim_std_*: per-dimension std over samples; "
        f"dead_fraction: share of dimensions with std < {defaults.DEAD_DIM_RELATIVE_STD:g} x the largest",
        "raw_pixels": f"floor: pixel values in [0, 1] (no normalisation), images larger than "
        f"{defaults.RAW_PIXELS_MAX_SIZE} px resized to {defaults.RAW_PIXELS_MAX_SIZE} px, flattened "
        f"(greyscale datasets: one channel){size}",
        "random_init": "floor: same architecture, random weights (timm init with every norm layer's affine reset to "
        f"identity), BatchNorm statistics re-estimated on {defaults.RECALIBRATE_BATCHES} clean training batches",
    }


DEFINITIONS = definitions()


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def label_free_metrics(
    features: Any, *, rankme_samples: int = defaults.RANKME_SAMPLES, seed: int = defaults.SEED
) -> dict[str, Any]:
    """RankMe, alpha-ReQ (None when undefined) and `embedding_stats` of a seeded subset of rows.

    Shape:
        features: (N, D); the subset has ``min(N, rankme_samples)`` rows.
    """
    features = as_tensor(features, "features", ndim=2)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(features), generator=g)[:rankme_samples]
    subset = features[rows.to(features.device)]
    metrics: dict[str, Any] = {"rankme": rankme(subset), "alpha_req": _finite_or_none(alpha_req(subset))}
    metrics.update(embedding_stats(subset))
    return metrics


def _has_labels(y: Any) -> bool:
    return y is not None and bool((as_tensor(y, "labels") >= 0).any())


def score_features(
    train_f: Any,
    train_y: Any = None,
    test_f: Any = None,
    test_y: Any = None,
    *,
    linear_epochs: int = defaults.LINEAR_EPOCHS,
    linear_lrs: Sequence[float] = defaults.LINEAR_LRS,
    rankme_samples: int = defaults.RANKME_SAMPLES,
    seed: int = defaults.SEED,
    progress: bool = False,
) -> dict[str, Any]:
    """k-NN (both protocols) and the linear probe when labels exist, plus `label_free_metrics`, on features.

    Shape:
        train_f: (N_train, D); train_y: (N_train,) or None; test_f: (N_test, D) or None; test_y: (N_test,).
    """
    metrics: dict[str, Any] = {}
    if test_f is not None and _has_labels(train_y) and _has_labels(test_y):
        for name, acc in knn_protocols(train_f, train_y, test_f, test_y).items():
            metrics[f"knn_{name}"] = acc
        probe = linear_probe(
            train_f, train_y, test_f, test_y, lrs=linear_lrs, epochs=linear_epochs, seed=seed, progress=progress
        )
        metrics.update(linear=probe["top1"], linear_lr=probe["lr"], linear_bn=float(probe["batch_norm"]))
    metrics.update(label_free_metrics(train_f, rankme_samples=rankme_samples, seed=seed))
    return metrics


def _seeded_subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, order.tolist())


def evaluate(
    encoder: nn.Module,
    *,
    train_set: Dataset,
    test_set: Dataset | None = None,
    transform: Callable[[Tensor], Tensor],
    pixel_transform: Callable[[Tensor], Tensor] | None = None,
    view_transform: Callable[[Tensor], Tensor] | None = None,
    random_encoder: nn.Module | None = None,
    floors: bool = defaults.FLOORS,
    batch_size: int = defaults.EVAL_BATCH_SIZE,
    lidar_samples: int = defaults.LIDAR_SAMPLES,
    lidar_views: int = defaults.LIDAR_VIEWS,
    raw_pixels_size: int | None = None,
    seed: int = defaults.SEED,
    device: str | torch.device = "cpu",
    out_path: str | Path | None = None,
    progress: bool = True,
    **score_kwargs: Any,
) -> dict[str, Any]:
    """Score ``encoder`` (and the floors) on ``train_set``/``test_set``; optionally write ``metrics.json``.

    Without ``test_set`` (or without labels) only the label-free metrics are computed. LiDAR needs
    ``view_transform`` (a random view transform) and is computed for the encoder and the random-init floor
    (not for raw pixels, which have no encoder to make invariant); ``lidar_samples=0`` turns it off.
    ``raw_pixels_size`` is only reported (the side ``pixel_transform`` produces).

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
    splits = {"train": train_set, **({"test": test_set} if test_set is not None else {})}
    if lidar_samples < 0 or lidar_views < 2:
        raise ConfigError(f"LiDAR needs lidar_samples >= 0 (0 = off) and lidar_views >= 2, got {lidar_samples}, "
                          f"{lidar_views}")  # fmt: skip
    use_lidar = view_transform is not None and min(lidar_samples, len(train_set)) >= 2
    lidar_set = _seeded_subset(train_set, lidar_samples, seed) if use_lidar else None
    results: dict[str, Any] = {}
    for name, model in candidates.items():
        use = pixel_transform if model is None and pixel_transform is not None else transform
        feats = {
            split: extract_features(model, ds, transform=use, batch_size=batch_size, device=device,
                                    desc=f"{name} {split}", progress=progress)
            for split, ds in splits.items()
        }  # fmt: skip
        test_f, test_y = feats.get("test", (None, None))
        results[name] = score_features(*feats["train"], test_f, test_y, seed=seed, progress=progress, **score_kwargs)
    if lidar_set is not None:  # one pass of views through every encoder (raw pixels have none)
        encoders = {name: model for name, model in candidates.items() if model is not None}
        views = extract_view_features(encoders, lidar_set, transform=view_transform, n_views=lidar_views, seed=seed,
                                      batch_size=batch_size, device=device, progress=progress)  # fmt: skip
        for name, z in views.items():
            results[name]["lidar"] = lidar(z)
    results["definitions"] = definitions(
        raw_pixels_size=raw_pixels_size, lidar_samples=lidar_samples, lidar_views=lidar_views
    )
    if out_path is not None:
        Path(out_path).write_text(json.dumps(results, indent=2) + "\n")
    return results


_COLUMNS = (  # key, title, width, format
    ("knn_instdisc", "kNN instdisc", 14, "{:.2f}%"),
    ("knn_dino", "kNN dino", 10, "{:.2f}%"),
    ("linear", "linear", 9, "{:.2f}%"),
    ("rankme", "RankMe", 9, "{:.1f}"),
    ("alpha_req", "alpha-ReQ", 11, "{:.3f}"),
    ("lidar", "LiDAR", 9, "{:.1f}"),
    ("norm_mean", "norm", 9, "{:.3g}"),
    ("dead_fraction", "dead dims", 11, "{:.1%}"),
)


def _setup_line(setup: dict[str, Any]) -> str:
    root = f" at {setup['root']}" if setup.get("root") else ""
    sizes = f"train {setup.get('train_size', '?')}"
    sizes += f" / test {setup['test_size']}" if setup.get("test_size") else " (no labelled test split: label-free)"
    return f"dataset {setup.get('dataset', '?')}{root}; {sizes}; image size {setup.get('eval_size', '?')} px"


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width table: a line naming dataset, split sizes and image size, then one row per model.

    Columns appear when at least one model has the metric (k-NN and linear only with labels); ``-`` marks
    a metric a model does not have (LiDAR of raw pixels, alpha-ReQ when undefined).
    """
    rows = {name: m for name, m in results.items() if isinstance(m, dict) and isinstance(m.get("rankme"), float)}
    columns = [c for c in _COLUMNS if any(c[0] in m for m in rows.values())]
    header = f"{'model':<14}" + "".join(f"{title:>{width}}" for _, title, width, _ in columns)
    lines = [_setup_line(results["setup"])] if isinstance(results.get("setup"), dict) else []
    lines += [header, "-" * len(header)]
    for name, m in rows.items():
        cells = [fmt.format(m[key]) if m.get(key) is not None else "-" for key, _, _, fmt in columns]
        lines.append(f"{name:<14}" + "".join(f"{cell:>{width}}" for cell, (_, _, width, _) in zip(cells, columns)))
    return "\n".join(lines)
