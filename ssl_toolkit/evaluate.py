"""Evaluate an exported encoder folder on a dataset: choose the data, build splits and floors, score, write metrics.

This is the glue between `ssl_toolkit.export` (which encoder), `ssl_toolkit.data` (which images) and
`ssl_toolkit.eval` (how to score); `ssl-toolkit eval` and the end of `ssl-toolkit train` both call it.

It refuses to return wrong numbers silently:
- the dataset, root and image size default to those the run recorded (`recorded_target`: the export's
  ``config.json``, then the ``recipe.yaml`` saved beside it, read as plain YAML data), and the choice is
  reported (``setup`` in the results, the ``log`` line);
- train and test class names must match (a class missing from ``test/`` would shift every label);
- scores on any data other than the run's own go to ``metrics-<dataset>.json``, never over the run's
  ``metrics.json``;
- data without labels, or without a test split, gets the label-free evaluation instead of an error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ssl_toolkit.builders import seeded_subset
from ssl_toolkit.data import build_dataset, build_eval_transform, build_view_transform
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.run import evaluate, format_table
from ssl_toolkit.export import load_encoder, read_export_config
from ssl_toolkit.model import build_encoder


@dataclass(frozen=True)
class EvalTarget:
    """The data an evaluation runs on, and what the run itself recorded (None where it recorded nothing)."""

    dataset: str
    root: str | None
    size: int
    recorded_dataset: str | None
    recorded_root: str | None
    recorded_size: int

    @property
    def is_runs_own(self) -> bool:
        """The dataset, root and size the run was evaluated on after training (its ``metrics.json``)."""
        return (
            self.dataset == self.recorded_dataset
            and _same_path(self.root, self.recorded_root)
            and self.size == self.recorded_size
        )

    def tag(self) -> str:
        """File-name tag of this data: the dataset name, the image folder's name, the size if not the run's."""
        parts = [self.dataset]
        if self.dataset == "image_folder" and self.root:
            parts.append(Path(self.root).expanduser().resolve().name)
        if self.size != self.recorded_size:
            parts.append(f"{self.size}px")
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))

    def describe(self, overridden: Sequence[str]) -> str:
        where = f" at {self.root}" if self.root else ""
        what = f"{self.dataset}{where}, {self.size} px"
        if not overridden:
            return f"evaluating on {what}: the data recorded with the export (--dataset/--root/--size override)"
        run = f"{self.recorded_dataset or 'unrecorded'}" + (f" at {self.recorded_root}" if self.recorded_root else "")
        return f"evaluating on {what} ({', '.join(overridden)} given; the run's own: {run}, {self.recorded_size} px)"


def _same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _recipe_data(encoder_dir: Path) -> dict[str, Any]:
    """``data`` and ``eval`` of the ``recipe.yaml`` saved with the export, read as YAML data (never executed)."""
    path = encoder_dir / "recipe.yaml"
    if not path.is_file():
        return {}
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    data, ev = recipe.get("data") or {}, recipe.get("eval") or {}
    return {"dataset": ev.get("dataset") or data.get("name"), "root": ev.get("root") or data.get("root")}


def recorded_target(encoder_dir: str | Path) -> dict[str, Any]:
    """What an export says it was evaluated on: ``{"dataset", "root", "size"}`` (None where unrecorded).

    Read, in order: ``config.json`` → ``ssl_toolkit.eval_dataset`` / ``eval_root`` (what the exporter should
    write), the ``recipe.yaml`` saved in the export (``eval.dataset or data.name``, ``eval.root or
    data.root``), then ``ssl_toolkit.dataset`` / ``root``; the size is ``pretrained_cfg.input_size[-1]``.
    """
    encoder_dir = Path(encoder_dir)
    config = read_export_config(encoder_dir)
    section = config.get("ssl_toolkit") or {}
    recipe = _recipe_data(encoder_dir)
    dataset = section.get("eval_dataset") or recipe.get("dataset") or section.get("dataset")
    if section.get("eval_root") or section.get("eval_dataset"):
        root = section.get("eval_root")
    else:
        root = recipe.get("root") if recipe.get("dataset") else section.get("root")
    return {"dataset": dataset, "root": root, "size": int(config["pretrained_cfg"]["input_size"][-1])}


def resolve_target(
    encoder_dir: str | Path, *, dataset: str | None = None, root: str | None = None, size: int | None = None
) -> tuple[EvalTarget, list[str]]:
    """The data to evaluate on: the arguments given, the rest from `recorded_target`; and which were given."""
    rec = recorded_target(encoder_dir)
    if dataset is None and root is not None and rec["dataset"] not in (None, "image_folder"):
        raise ConfigError(
            f"--root given without --dataset, but the export's dataset is {rec['dataset']!r}; pass --dataset "
            "image_folder for a folder of images (or --dataset fashion_mnist for IDX files in that folder)"
        )
    chosen = dataset or rec["dataset"]
    if chosen is None:
        raise ConfigError(f"{encoder_dir} records no dataset; pass --dataset (fashion_mnist | image_folder) and --root")
    if root is None and chosen == rec["dataset"]:
        root = rec["root"]
    overridden = [
        flag
        for flag, given, same in (
            ("--dataset", dataset, dataset == rec["dataset"]),
            ("--root", root, _same_path(root, rec["root"])),
            ("--size", size, size == rec["size"]),
        )
        if given is not None and not same
    ]
    target = EvalTarget(chosen, root, int(size or rec["size"]), rec["dataset"], rec["root"], rec["size"])
    return target, overridden


def check_same_classes(train_classes: Sequence[str], test_classes: Sequence[str]) -> None:
    """Raise `ConfigError` naming the classes that only one split has (their label indices would not match)."""
    if list(train_classes) == list(test_classes):
        return
    missing = [c for c in train_classes if c not in set(test_classes)]
    extra = [c for c in test_classes if c not in set(train_classes)]
    detail = "; ".join(
        part for part in (f"missing from test: {missing}" if missing else "",
                          f"only in test: {extra}" if extra else "") if part
    ) or f"same names in another order: {list(train_classes)} vs {list(test_classes)}"  # fmt: skip
    raise ConfigError(
        f"train and test class names differ ({detail}), so their labels would not line up; give test/ exactly "
        "the class sub-folders of train/"
    )


def _splits(dataset: str, root: str | None, download: bool) -> tuple[Any, Any | None, str]:
    """Train split, labelled test split or None, and why the evaluation is label-free (empty when it is not)."""
    train = build_dataset(name=dataset, split="train", root=root, download=download)
    if train.labels is None or not bool((train.labels >= 0).any()):
        return train, None, "the training images have no labels"
    try:
        test = build_dataset(name=dataset, split="test", root=root, download=download)
    except ConfigError as err:  # DataError included: no test/ (or val/) folder
        return train, None, f"no labelled test split ({err})"
    if test.labels is None or not bool((test.labels >= 0).any()):
        return train, None, "the test images have no labels"
    if getattr(train, "classes", None) or getattr(test, "classes", None):
        check_same_classes(getattr(train, "classes", []), getattr(test, "classes", []))
    return train, test, ""


def default_metrics_path(encoder_dir: str | Path, target: EvalTarget) -> Path:
    """``metrics.json`` beside the export for the run's own data, ``metrics-<tag>.json`` for any other."""
    run_dir = Path(encoder_dir).parent
    return run_dir / ("metrics.json" if target.is_runs_own else f"metrics-{target.tag()}.json")


class _FirstChannel:
    """Channel 0 of a transform's output: a greyscale dataset's pixels once, not as three equal RGB copies.

    Three copies cost the raw-pixel floor's linear probe and k-NN three times the work for the same information.
    """

    def __init__(self, transform: Callable[[Tensor], Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Tensor) -> Tensor:
        return self.transform(image)[..., :1, :, :]  # (1, H, W), or (B, 1, H, W) for a batch


def _pixel_transform(size: int, *, greyscale: bool) -> Callable[[Tensor], Tensor]:
    """The raw-pixel floor's input: [0, 1] values at ``size`` px, one channel for greyscale datasets."""
    transform = build_eval_transform(size=size, mean=(0.0,) * 3, std=(1.0,) * 3)
    return _FirstChannel(transform) if greyscale else transform


def evaluate_encoder_dir(
    encoder_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    download: bool = False,
    size: int | None = None,
    floors: bool = defaults.FLOORS,
    max_train: int | None = None,
    max_test: int | None = None,
    batch_size: int = defaults.EVAL_BATCH_SIZE,
    linear_epochs: int = defaults.LINEAR_EPOCHS,
    linear_lrs: Sequence[float] = defaults.LINEAR_LRS,
    rankme_samples: int = defaults.RANKME_SAMPLES,
    lidar_samples: int = defaults.LIDAR_SAMPLES,
    lidar_views: int = defaults.LIDAR_VIEWS,
    seed: int = defaults.SEED,
    out_path: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score the encoder exported in ``encoder_dir`` and write the metrics file (see the module doc).

    Args:
        dataset, root, size: the data; each defaults to what the export recorded (`recorded_target`).
        out_path: where to write; default `default_metrics_path` (never the run's ``metrics.json`` for
            other data).
        log: called with one line saying which data is evaluated and why (e.g. ``print``).
        The other arguments: see `ssl_toolkit.eval.evaluate` and ``ssl_toolkit/eval/defaults.py``.

    Returns:
        The results of `ssl_toolkit.eval.evaluate` plus ``setup`` (data, split and image sizes, paths).
    """
    t0 = time.perf_counter()
    encoder_dir = Path(encoder_dir)
    target, overridden = resolve_target(encoder_dir, dataset=dataset, root=root, size=size)
    if log is not None:
        log(target.describe(overridden))
    config = read_export_config(encoder_dir)
    encoder = load_encoder(encoder_dir)
    mean, std = tuple(encoder.pretrained_cfg["mean"]), tuple(encoder.pretrained_cfg["std"])
    train, test, label_free_reason = _splits(target.dataset, target.root, download)
    if log is not None and label_free_reason:
        log(f"label-free evaluation (RankMe, alpha-ReQ, LiDAR, embedding statistics): {label_free_reason}")
    # the raw-pixel floor: [0, 1] values at the images' own size, bounded to RAW_PIXELS_MAX_SIZE
    pixel_size = min(train.native_size or target.size, defaults.RAW_PIXELS_MAX_SIZE)
    views = build_view_transform(augment=defaults.LIDAR_AUGMENT, size=target.size, mean=mean, std=std,
                                 greyscale=bool(getattr(train, "greyscale", False)))  # fmt: skip
    torch.manual_seed(seed)
    random_encoder = build_encoder(config["architecture"], backbone_kwargs=config.get("model_args", {}))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_set = seeded_subset(train, max_train, seed)
    test_set = seeded_subset(test, max_test, seed + 1) if test is not None else None
    results = evaluate(
        encoder, train_set=train_set, test_set=test_set,
        transform=build_eval_transform(size=target.size, mean=mean, std=std),
        pixel_transform=_pixel_transform(pixel_size, greyscale=bool(getattr(train, "greyscale", False))),
        view_transform=views, random_encoder=random_encoder, floors=floors, batch_size=batch_size,
        lidar_samples=lidar_samples, lidar_views=lidar_views, raw_pixels_size=pixel_size, seed=seed,
        device=device, progress=progress, linear_epochs=linear_epochs, linear_lrs=tuple(linear_lrs),
        rankme_samples=rankme_samples,
    )  # fmt: skip
    out = Path(out_path) if out_path is not None else default_metrics_path(encoder_dir, target)
    results["setup"] = {
        "encoder": str(encoder_dir),
        "dataset": target.dataset,
        "root": target.root,
        "data_from": "export" if not overridden else f"given ({', '.join(overridden)})",
        "runs_own_data": target.is_runs_own,
        "labelled": test_set is not None,
        "label_free_reason": label_free_reason or None,
        "classes": list(getattr(train, "classes", []) or []),
        "eval_size": target.size,
        "raw_pixels_size": pixel_size,
        "train_size": len(train_set),
        "test_size": len(test_set) if test_set is not None else None,
        "lidar_samples": min(lidar_samples, len(train_set)),
        "lidar_views": lidar_views,
        "device": device,
        "seconds": round(time.perf_counter() - t0, 1),
        "metrics_path": str(out),
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


__all__ = [
    "EvalTarget",
    "check_same_classes",
    "default_metrics_path",
    "evaluate_encoder_dir",
    "format_table",
    "recorded_target",
    "resolve_target",
]
