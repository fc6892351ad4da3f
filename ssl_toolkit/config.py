"""Recipe schema (OmegaConf structured dataclasses), loading with overrides, and saving.

Order of precedence: dataclass defaults < YAML recipe < ``key=value`` overrides. Every problem a user can
make in a recipe (YAML syntax, unknown key, wrong type, bad value, unknown name, missing path) is raised as one
`ConfigError` line before any model or data is built: the schema catches keys and types, `parse_view_groups`
the views, ``validation.py`` the values. This module imports no torch: loading a recipe is instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_toolkit.data.view_specs import parse_view_groups, view_preset
from ssl_toolkit.errors import ConfigError, did_you_mean
from ssl_toolkit.eval import defaults as eval_defaults

REPLACED_WHOLE = ("objective", "model.backbone_kwargs")  # free-form dicts: an override replaces them
WARMUP_KEYS = ("train.warmup_steps", "train.warmup_fraction")


@dataclass
class GeneratedConfig:
    """A bank of generated images (``ssl-toolkit generate-views``) mixed into training (data/generated.py)."""

    bank: str | None = None  # the bank folder; None = no generated images
    # genview: views of the `source: generated` view group are cut from a bank variant of the same image;
    # adainf: sample-level inflation, real images replicated `dup` times plus every bank image
    mode: str = "genview"
    p_generated: float = 1.0  # genview: probability that a sample's generated view comes from the bank
    dup: int = 10  # adainf: real replication factor (AdaInf: 10)


@dataclass
class DataConfig:
    """Where the training images come from."""

    name: str = "fashion_mnist"  # fashion_mnist | image_folder | webdataset (tar shards) | hf_dataset
    # image_folder: a folder; webdataset: a folder of .tar shards or a pattern (`shards/{split}-{000000..000099}.tar`);
    # hf_dataset: a save_to_disk or parquet folder; Fashion-MNIST: a folder holding its IDX files (optional)
    root: str | None = None
    download: bool = False  # Fashion-MNIST only, and only when asked
    labelled: bool | None = None  # image_folder, webdataset, hf_dataset: None = infer (sub-folders, cls/label)
    subset: int | None = None  # train on a seeded random subset of this many images
    num_workers: int = 1  # DataLoader workers (views are made there, or in the collate for batched views)
    # per_image: torchvision, one image at a time in the loader workers; batched: a whole batch per call with
    # per-image randomness, images of any sizes (data/batched_views.py; much faster)
    view_backend: str = "per_image"
    # batched views: cpu = made in the loader workers; cuda = made in the main process on the training device
    # after a pinned, non-blocking copy (on a CPU-only run: in the main process, on the CPU)
    view_device: str = "cpu"
    # cuda: JPEGs decoded in batches on the training device (nvJPEG), not in the workers; needs view_device=cuda
    decode_device: str = "cpu"
    max_pixels: int = 64_000_000  # larger images are skipped from their header (never decoded), and counted
    generated: GeneratedConfig = field(default_factory=GeneratedConfig)


@dataclass
class ModelConfig:
    """timm encoder + lightly projection head."""

    backbone: str = "resnet18"
    small_input: bool = False  # ResNets: 3x3 stride-1 stem, no max-pool (32 px images)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    projector_hidden: int = 2048
    projector_out: int = 128
    projector_layers: int = 2
    # after the last Linear: bn (BatchNorm with scale/shift, lightly's SimCLR head) | bn_noaffine (GroCo's head)
    # | none (Linear with bias, SimCLR v1); see model.build_projector
    projector_last_norm: str = "bn"
    # EMA (momentum) branch of encoder + projector, for objectives that take momentum keys (ctx.z_ema)
    ema: bool = False
    ema_momentum: list[float] = field(default_factory=lambda: [0.99, 1.0])  # cosine from start to end


@dataclass
class TrainConfig:
    """Optimisation, precision, logging and checkpoint settings."""

    epochs: int = 100
    max_steps: int | None = None  # stop early after this many optimizer steps (schedule follows it)
    batch_size: int = 256  # per process
    optimizer: str = "sgd"  # sgd | lars | adamw (timm create_optimizer_v2)
    lr: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 100
    # warm-up as a fraction of the run's steps (e.g. 0.05) instead of warmup_steps (then 0; give one of them)
    warmup_fraction: float | None = None
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    mixed_precision: str = "no"  # no | fp16 | bf16
    channels_last: bool = False  # weights in NHWC layout (oneDNN and tensor cores prefer it; ssl_toolkit/speed.py)
    compile: bool = False  # torch.compile the encoder (needs a C++ compiler on CPU; first steps are slow)
    grad_accum: int = 1
    seed: int = 0
    save_every: int = 500  # optimizer steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept (only finite ones are written)
    log_every: int = 10
    output_dir: str = "runs"
    run_name: str | None = None  # default: recipe name
    resume: bool = True  # continue from checkpoints/last when it exists
    cpu: bool = False  # force CPU even when a GPU is visible
    progress_bar: bool = True
    # experiment trackers, through accelerate: tensorboard, mlflow, wandb, ... (docs/cli.md); metrics.csv always
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class EvalConfig:
    """Frozen-encoder evaluation run after training; defaults from ``ssl_toolkit/eval/defaults.py``."""

    after_train: bool = True
    dataset: str | None = None  # default: data.name
    root: str | None = None  # default: data.root
    size: int | None = None  # eval resolution; default: size of the first view group
    batch_size: int = eval_defaults.EVAL_BATCH_SIZE
    max_train: int | None = None  # evaluate on seeded subsets (quick checks)
    max_test: int | None = None
    linear_epochs: int = eval_defaults.LINEAR_EPOCHS
    linear_lrs: list[float] = field(default_factory=lambda: list(eval_defaults.LINEAR_LRS))
    floors: bool = eval_defaults.FLOORS  # also score raw pixels and the randomly initialised encoder
    rankme_samples: int = eval_defaults.RANKME_SAMPLES  # also used by alpha-ReQ and the embedding statistics
    lidar_samples: int = eval_defaults.LIDAR_SAMPLES  # LiDAR: train images ...
    lidar_views: int = eval_defaults.LIDAR_VIEWS  # ... times simclr views of each


@dataclass
class MonitorConfig:
    """Label-free monitoring during pretraining (``ssl_toolkit.monitor``)."""

    every: int = 0  # optimizer steps between checks; 0 = off
    samples: int = 2048  # fixed seeded subset of clean training images
    knn_bank: int = 1536  # of which the k-NN bank (the rest are queries; only when labels exist)
    collapse_fraction: float = 0.05  # warn when RankMe < this fraction of the embedding width
    lidar_samples: int = 256  # LiDAR: the first of the subset, each seen as lidar_views simclr views; 0 = off
    lidar_views: int = 4
    export_best: bool = False  # export the encoder with the best RankMe to run_dir/encoder_best


@dataclass
class QualityWeightsConfig:
    """GenView's quality-driven per-sample loss weights (ssl_toolkit/generation/quality.py); off without a model.

    A frozen timm model scores the foreground/background agreement of the first two global views; the weights
    ``B·softmax(γ(s_fg − s_bg))`` (mean 1, no gradient) scale each sample's loss terms in objectives that
    accept them (simclr, dcl, dclw).
    """

    model_path: str | None = None  # timm export folder, or a weights file with `arch`
    arch: str | None = None
    pca_path: str | None = None  # foreground PCA of that model's tokens (generation.foreground.save_foreground_pca)
    gamma: float = 1.0  # GenView: 1
    image_size: int | None = None  # default: the model's own input size


@dataclass
class Recipe:
    """A whole run: data, views, model, objective, training and evaluation."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    # view groups (data/view_specs.py: keys, presets, defaults); loading fills in every key, so the saved
    # recipe states each group's augmentation and whether it is global
    views: list[Any] = field(default_factory=lambda: [{"name": "global", "n": 2, "size": 224}])
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "simclr"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    quality_weights: QualityWeightsConfig = field(default_factory=QualityWeightsConfig)


def _describe(err: OmegaConfBaseException, cfg: DictConfig) -> str:
    """One line for an OmegaConf error: the key, the problem and, for unknown keys, the accepted ones."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    key = getattr(err, "full_key", None)
    if "not in" in text and key:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            keys = [str(k) for k in node.keys()]
            return (
                f"unknown key {key!r}{did_you_mean(leaf, keys)}; accepted under {parent or 'the top level'}: "
                f"{', '.join(keys)}"
            )
    return f"{key}: {text}" if key and key not in text else text


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with numbers in scientific notation without a dot (``1e-3``) read as floats, as OmegaConf does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)
_YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _parse_value(item: str, value: str) -> Any:
    """An override's value as YAML, except that yes/no/on/off stay strings (bool fields still accept them)."""
    if not value:
        return None
    if value.lower() in _YAML11_WORDS:
        return value
    try:
        return yaml.load(value, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); if the shell split it, quote the whole "
            "override, e.g. 'views=[{name: global, n: 2, size: 32}]'"
        ) from None


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(raw, DictConfig) or len(raw) == 0:
        raise ConfigError(
            f"recipe file {path} is empty or not a mapping; start from a shipped recipe "
            "(recipes/pretrain/simclr_fashion_mnist.yaml)"
        )
    if isinstance(raw.get("views"), str):
        raw.views = view_preset(raw.views)
    return raw


def _unknown_key(cfg: DictConfig, key: str) -> None:
    """Raise for the first part of ``key`` that does not exist, with the keys accepted there."""
    parts = key.split(".")
    node, parent = cfg, ""
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
            where = parent or "the top level"
            raise ConfigError(
                f"unknown key {'.'.join(parts[: i + 1])!r}{did_you_mean(part, keys)}; accepted under {where}: "
                f"{', '.join(keys) or 'none'}"
            )
        node, parent = node[part], ".".join(parts[: i + 1])


def _apply_override(cfg: DictConfig, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key or key.startswith((".", "-")):
        hint = " (the shell split a value with spaces: quote the whole override)" if not sep else ""
        raise ConfigError(f"override {item!r} is not of the form key=value, e.g. train.epochs=10{hint}")
    free_form = key.startswith(("objective.", "views."))  # checked by their own parsers
    if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" and not free_form:
        _unknown_key(cfg, key)
    parsed = _parse_value(item, value)
    if key == "views" and isinstance(parsed, str):
        parsed = view_preset(parsed)
    OmegaConf.update(cfg, key, parsed, merge=key not in REPLACED_WHOLE, force_add=False)


def load(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *, allow_import: bool = True
) -> DictConfig:
    """Load a recipe: defaults, then the YAML file, then ``key=value`` overrides; check it; return it read-only.

    Args:
        path: the YAML recipe (None: defaults only).
        overrides: ``key=value`` strings, values in YAML (``train.lr=1e-3``, ``views=[{...}]``).
        allow_import: whether ``objective.name`` may be a ``module:Class`` to import. True for a recipe the user
            passes to ``train``; False for a recipe read from a run folder, which must never run code.

    Raises:
        ConfigError: one line naming the problem and the fix.
    """
    from ssl_toolkit.validation import validate

    base = OmegaConf.structured(Recipe)
    cfg = base
    warmup_layers: list[set[str]] = []  # the train.warmup_* keys the recipe file, then the overrides, give
    try:
        if path is not None:
            raw = _read_yaml(Path(path))
            cfg = OmegaConf.merge(cfg, raw)
            warmup_layers.append({k for k in WARMUP_KEYS if OmegaConf.select(raw, k, default=None) is not None})
        for item in overrides:
            _apply_override(cfg, item)
        given = [item.partition("=") for item in overrides]
        warmup_layers.append({k for k, _, v in given if k in WARMUP_KEYS and v not in ("", "null", "None")})
    except OmegaConfBaseException as err:
        raise ConfigError(f"recipe error: {_describe(err, base)}") from None
    if cfg.train.mixed_precision == "False":  # YAML 1.1 reads a bare `no` as false
        cfg.train.mixed_precision = "no"
    cfg.views = parse_view_groups(OmegaConf.to_container(cfg.views, resolve=True))
    _settle_warmup(cfg.train, warmup_layers)
    validate(cfg, allow_import=allow_import)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _settle_warmup(train: DictConfig, layers: list[set[str]]) -> None:
    """The last layer (recipe file, then overrides) that sets one warm-up key decides: the other one is reset."""
    last = next((keys for keys in reversed(layers) if keys), set())
    if last == {"train.warmup_fraction"}:
        train.warmup_steps = 0
    elif last == {"train.warmup_steps"}:
        train.warmup_fraction = None


def save_resolved(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved recipe (defaults included) so a run can be reproduced from its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
