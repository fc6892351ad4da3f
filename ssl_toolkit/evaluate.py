"""Evaluate an exported encoder folder on a dataset: load, build splits and floors, score, write metrics.

This is the glue between `ssl_toolkit.export` (which encoder), `ssl_toolkit.data` (which images) and
`ssl_toolkit.eval` (how to score); `ssl-toolkit eval` and the end of `ssl-toolkit train` both call it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssl_toolkit.builders import seeded_subset
from ssl_toolkit.data import build_dataset, build_eval_transform
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval.run import evaluate, format_table
from ssl_toolkit.export import load_encoder, read_export_config
from ssl_toolkit.model import build_encoder


def _splits(dataset: str, root: str | None, download: bool) -> tuple[Any, Any]:
    train = build_dataset(name=dataset, split="train", root=root, download=download)
    try:
        test = build_dataset(name=dataset, split="test", root=root, download=download)
    except ConfigError as err:
        raise ConfigError(f"evaluation needs a labelled test split of {dataset!r}: {err}") from err
    if train.labels is None or bool((train.labels < 0).all()):
        raise ConfigError(f"evaluation needs labels; {dataset!r} at {root} has none (use labelled sub-folders)")
    return train, test


def evaluate_encoder_dir(
    encoder_dir: str | Path,
    *,
    dataset: str,
    root: str | None = None,
    download: bool = False,
    size: int | None = None,
    floors: bool = True,
    max_train: int | None = None,
    max_test: int | None = None,
    batch_size: int = 512,
    linear_epochs: int = 30,
    linear_lrs: Sequence[float] = (1.0, 0.3, 0.1, 0.03),
    rankme_samples: int = 25600,
    seed: int = 0,
    out_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the encoder exported in ``encoder_dir``; write ``metrics.json`` beside it unless told otherwise."""
    t0 = time.perf_counter()
    encoder_dir = Path(encoder_dir)
    config = read_export_config(encoder_dir)
    encoder = load_encoder(encoder_dir)
    cfg = encoder.pretrained_cfg
    size = size or int(cfg["input_size"][-1])
    train, test = _splits(dataset, root, download)
    transform = build_eval_transform(size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    # the raw-pixel floor: [0, 1] values at the images' own size (no normalisation, no upsampling)
    pixel_transform = build_eval_transform(size=train.native_size or size, mean=(0.0,) * 3, std=(1.0,) * 3)
    torch.manual_seed(seed)
    random_encoder = build_encoder(config["architecture"], backbone_kwargs=config.get("model_args", {}))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = evaluate(
        encoder,
        train_set=seeded_subset(train, max_train, seed),
        test_set=seeded_subset(test, max_test, seed + 1),
        transform=transform,
        pixel_transform=pixel_transform,
        random_encoder=random_encoder,
        floors=floors,
        batch_size=batch_size,
        device=device,
        progress=progress,
        linear_epochs=linear_epochs,
        linear_lrs=tuple(linear_lrs),
        rankme_samples=rankme_samples,
        seed=seed,
    )
    results["setup"] = {
        "encoder": str(encoder_dir),
        "dataset": dataset,
        "eval_size": size,
        "device": device,
        "train_size": min(len(train), max_train or len(train)),
        "test_size": min(len(test), max_test or len(test)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(out_path) if out_path is not None else encoder_dir.parent / "metrics.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


__all__ = ["evaluate_encoder_dir", "format_table"]
