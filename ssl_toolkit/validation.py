"""Recipe values the schema cannot check: ranges, names, paths and combinations; one `ConfigError` line each.

Cheap checks come first and need nothing heavy; only the backbone name (timm) and the objective (its class)
import libraries, so most mistakes are reported in well under a second. Nothing here builds a model, reads a
dataset or constructs an objective.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_toolkit.data.view_specs import count_global_views
from ssl_toolkit.errors import ConfigError, did_you_mean
from ssl_toolkit.trackers import check_log_with

OPTIMIZERS = ("sgd", "lars", "adamw")
MIXED_PRECISION = ("no", "fp16", "bf16")
DATASET_NAMES = ("fashion_mnist", "image_folder", "webdataset", "hf_dataset")
ROOT_REQUIRED = ("image_folder", "webdataset", "hf_dataset")  # data sources with no default location
DATASET_SIZES = {"fashion_mnist": 60_000}  # training images known without reading the data
VIEW_BACKENDS = ("per_image", "batched")
DEVICES = ("cpu", "cuda")
GENERATED_MODES = ("genview", "adainf")


def choice(value: Any, accepted: tuple[str, ...], what: str) -> None:
    """Raise unless ``value`` is one of ``accepted`` (with a did-you-mean suggestion)."""
    if value not in accepted:
        raise ConfigError(f"unknown {what} {value!r}{did_you_mean(value, accepted)}; accepted: {', '.join(accepted)}")


def _number(section: DictConfig, prefix: str, key: str, *, low: float, high: float = math.inf, low_open: bool = False,
            optional: bool = False) -> None:  # fmt: skip
    value = section[key]
    if value is None and optional:
        return
    ok = value is not None and math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if high == math.inf else f" and <= {high:g}")
        none = " (or null)" if optional else ""
        raise ConfigError(f"{prefix}.{key} must be a finite number {bound}{none}, got {value}")


def _check_train(tc: DictConfig) -> None:
    for key in ("epochs", "batch_size", "grad_accum", "save_every", "log_every", "keep_checkpoints"):
        _number(tc, "train", key, low=1)
    _number(tc, "train", "max_steps", low=1, optional=True)
    _number(tc, "train", "lr", low=0, low_open=True)
    _number(tc, "train", "weight_decay", low=0)
    _number(tc, "train", "momentum", low=0, high=1)
    _number(tc, "train", "warmup_steps", low=0)
    fraction = tc.warmup_fraction
    if fraction is not None and not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ConfigError(f"train.warmup_fraction must be in [0, 1) (a share of the run's steps), got {fraction}")
    if tc.warmup_fraction is not None and tc.warmup_steps:
        raise ConfigError(
            f"train.warmup_steps={tc.warmup_steps} and train.warmup_fraction={tc.warmup_fraction} both set the "
            "warm-up; give one of them (or train.warmup_steps=0)"
        )
    _number(tc, "train", "min_lr_ratio", low=0, high=1)
    _number(tc, "train", "grad_clip", low=0, low_open=True, optional=True)
    choice(tc.optimizer, OPTIMIZERS, "train.optimizer")
    choice(tc.mixed_precision, MIXED_PRECISION, "train.mixed_precision")
    check_log_with(list(tc.log_with))


def _check_model(mc: DictConfig) -> None:
    for key in ("projector_hidden", "projector_out"):
        _number(mc, "model", key, low=1)
    _number(mc, "model", "projector_layers", low=2)
    momentum = list(mc.ema_momentum)
    if len(momentum) != 2 or not all(isinstance(m, (int, float)) and 0.0 <= m <= 1.0 for m in momentum):
        raise ConfigError(f"model.ema_momentum must be two numbers in [0, 1] (start, end), got {momentum}")


def _check_eval_and_monitor(cfg: DictConfig) -> None:
    ec, mc = cfg.eval, cfg.monitor
    for key in ("batch_size", "linear_epochs", "rankme_samples"):
        _number(ec, "eval", key, low=1)
    for key in ("size", "max_train", "max_test"):
        _number(ec, "eval", key, low=1, optional=True)
    if not ec.linear_lrs or not all(isinstance(x, (int, float)) and x > 0 and math.isfinite(x) for x in ec.linear_lrs):
        raise ConfigError(f"eval.linear_lrs must be a non-empty list of positive numbers, got {list(ec.linear_lrs)}")
    if ec.dataset is not None:
        choice(ec.dataset, DATASET_NAMES, "eval.dataset")
    if not (ec.lidar_samples == 0 or ec.lidar_samples >= 2) or ec.lidar_views < 2:
        raise ConfigError(
            f"eval: LiDAR needs lidar_samples 0 (off) or >= 2 and lidar_views >= 2, got {ec.lidar_samples}, "
            f"{ec.lidar_views}"
        )
    if mc.every < 0 or (mc.every and not 1 <= mc.knn_bank < mc.samples):
        raise ConfigError(
            f"monitor: needs every >= 0 (0 = off) and 1 <= knn_bank < samples, got every={mc.every}, "
            f"samples={mc.samples}, knn_bank={mc.knn_bank}"
        )
    _number(mc, "monitor", "collapse_fraction", low=0, high=1)
    if not (mc.lidar_samples == 0 or mc.lidar_samples >= 2) or mc.lidar_views < 2:
        raise ConfigError(f"monitor: LiDAR needs lidar_samples 0 (off) or >= 2 and lidar_views >= 2, got "
                          f"{mc.lidar_samples}, {mc.lidar_views}")  # fmt: skip


def _check_data(cfg: DictConfig) -> None:
    dc = cfg.data
    choice(dc.name, DATASET_NAMES, "data.name")
    choice(dc.view_backend, VIEW_BACKENDS, "data.view_backend")
    _number(dc, "data", "num_workers", low=0)
    _number(dc, "data", "subset", low=1, optional=True)
    _number(dc, "data", "max_pixels", low=1)
    choice(dc.view_device, DEVICES, "data.view_device")
    choice(dc.decode_device, DEVICES, "data.decode_device")
    if dc.view_device == "cuda" and dc.view_backend != "batched":
        raise ConfigError("data.view_device=cuda needs data.view_backend=batched (per_image views are made in workers)")
    if dc.decode_device == "cuda" and (dc.view_device != "cuda" or dc.name != "image_folder" or dc.generated.bank):
        raise ConfigError(
            "data.decode_device=cuda needs data.view_device=cuda, data.name=image_folder and no data.generated.bank"
        )
    if dc.name in ROOT_REQUIRED and not dc.root:
        raise ConfigError(f"data.name={dc.name} needs data.root=/path/to/the/data")
    for key, root in (("data.root", dc.root), ("eval.root", cfg.eval.root)):
        pattern = any(c in root for c in "{*?[") if root else False  # shard patterns: checked by the dataset
        if root and not pattern and not Path(root).expanduser().exists():
            raise ConfigError(f"{key} does not exist: {root}")
    known = DATASET_SIZES.get(dc.name)
    if known is not None and dc.generated.bank is None:
        images = min(known, dc.subset or known)
        if cfg.train.batch_size * cfg.train.grad_accum > images:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} x grad_accum={cfg.train.grad_accum} is more than the "
                f"{images} training images; lower train.batch_size"
            )


def _check_output_dir(cfg: DictConfig) -> None:
    """The run folder (or the nearest existing folder above it) must be a writable directory."""
    target = Path(cfg.train.output_dir).expanduser() / (cfg.train.run_name or cfg.name)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the run folder {target}: {existing} is not a writable directory; set train.output_dir "
            "to a folder you can write"
        )


def _check_backbone(name: str, *, small_input: bool = False) -> None:
    import timm

    from ssl_toolkit.small_input import SUFFIX  # registers the small-input variants with timm

    if not name.endswith(SUFFIX) and not timm.is_model(name) and timm.is_model(f"{name}{SUFFIX}"):
        if small_input:
            return  # e.g. resnet10: timm has no plain resnet10, but ssl_toolkit registers resnet10_small_input
        raise ConfigError(f"backbone {name!r} exists only with model.small_input=true (3x3 stem, for images up to "
                          "about 64 px); for larger images choose a timm model such as resnet18")  # fmt: skip
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; similar: {', '.join(close)}" if close else "; see `timm.list_models()`"
        raise ConfigError(f"unknown backbone {name!r} (not a timm model name){hint}")


def _check_projector_norm(mc: DictConfig) -> None:
    from ssl_toolkit.model import PROJECTOR_LAST_NORMS  # after the backbone check, which has loaded torch

    choice(mc.projector_last_norm, PROJECTOR_LAST_NORMS, "model.projector_last_norm")


def validate(cfg: DictConfig, *, allow_import: bool = True) -> None:
    """Check values, names, paths and combinations; raise `ConfigError` on the first problem.

    Args:
        cfg: a merged recipe (views already parsed).
        allow_import: whether the objective may be imported from a ``module:Class`` name (see `config.load`).
    """
    if not str(cfg.name).strip() or "/" in str(cfg.name):
        raise ConfigError(f"name must be a non-empty folder name without '/', got {cfg.name!r}")
    _check_train(cfg.train)
    _check_model(cfg.model)
    _check_data(cfg)
    _check_eval_and_monitor(cfg)
    _check_generated(cfg)
    _check_output_dir(cfg)
    _check_backbone(cfg.model.backbone, small_input=bool(cfg.model.small_input))
    _check_projector_norm(cfg.model)
    _check_quality_weights(cfg)
    _check_objective(cfg, allow_import=allow_import)


def _check_objective(cfg: DictConfig, *, allow_import: bool) -> None:
    """Name, arguments, facts, views, EMA and sample weights (no construction), then the argument values by
    building it on the meta device (no memory, no data: a fact known only from the data is given as 2)."""
    import torch

    from ssl_toolkit.objectives import build_objective, builder_facts, check_objective

    spec = OmegaConf.to_container(cfg.objective, resolve=True)
    known = builder_facts(projector_out=cfg.model.projector_out, view_groups=cfg.views)
    check_objective(
        spec,
        known=known,
        ema=bool(cfg.model.ema),
        sample_weights=cfg.quality_weights.model_path is not None,
        allow_import=allow_import,
    )
    placeholder = {} if "dataset_size" in spec else {"dataset_size": 2}
    with torch.device("meta"):
        build_objective(spec, known={**placeholder, **known}, allow_import=allow_import)


def _check_quality_weights(cfg: DictConfig) -> None:
    qw = cfg.quality_weights
    if qw.model_path is None:
        return
    for key in ("model_path", "pca_path"):
        if qw[key] is None or not Path(qw[key]).exists():
            raise ConfigError(f"quality_weights.{key} does not exist: {qw[key]} (local paths only, nothing downloads)")
    if count_global_views(cfg.views) < 2:
        raise ConfigError("quality_weights compare the first two global views; the views give fewer than 2")


def _check_generated(cfg: DictConfig) -> None:
    gen = cfg.data.generated
    choice(gen.mode, GENERATED_MODES, "data.generated.mode")
    generated_groups = [g.name for g in cfg.views if g.source == "generated"]
    if gen.bank is None:
        if generated_groups:
            raise ConfigError(
                f"view group(s) {generated_groups} have source: generated but data.generated.bank is not set; "
                "point it at a folder built by `ssl-toolkit generate-views`"
            )
        return
    if not Path(gen.bank).is_dir():
        raise ConfigError(f"data.generated.bank does not exist: {gen.bank}; build it with `ssl-toolkit generate-views`")
    if gen.mode == "genview" and not generated_groups:
        raise ConfigError(
            "data.generated.mode=genview needs a view group with source: generated (e.g. the second global "
            "view: {name: generated, n: 1, size: <global size>, source: generated, global: true})"
        )
    if gen.mode == "adainf" and generated_groups:
        raise ConfigError(
            f"data.generated.mode=adainf mixes whole samples; view group(s) {generated_groups} must use source: real"
        )
    if not 0.0 <= gen.p_generated <= 1.0 or gen.dup < 1:
        raise ConfigError(f"data.generated needs p_generated in [0, 1] and dup >= 1, got {gen.p_generated}, {gen.dup}")
