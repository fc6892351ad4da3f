"""Recipe schema (OmegaConf structured dataclasses), loading with overrides, validation and saving.

Order of precedence: dataclass defaults < YAML recipe < ``key=value`` overrides. Every problem a user can
make in a recipe (unknown key, wrong type, unknown objective/backbone/dataset name, missing data path) is
raised here as one `ConfigError` line, before any model or data is built.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_toolkit.data.view_specs import count_global_views, parse_view_groups, view_preset
from ssl_toolkit.errors import ConfigError

OPTIMIZERS = ("sgd", "lars", "adamw")
MIXED_PRECISION = ("no", "fp16", "bf16")
DATASET_NAMES = ("fashion_mnist", "image_folder")
VIEW_BACKENDS = ("per_image", "batched")
DEVICES = ("cpu", "cuda")
GENERATED_MODES = ("genview", "adainf")
REPLACED_WHOLE = ("objective", "model.backbone_kwargs")
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

    name: str = "fashion_mnist"  # fashion_mnist | image_folder
    root: str | None = None  # Fashion-MNIST: optional root; image_folder: required
    download: bool = False  # Fashion-MNIST only, and only when asked
    labelled: bool | None = None  # image_folder: None = infer from sub-folders
    subset: int | None = None  # train on a seeded random subset of this many images
    num_workers: int = 1
    # per_image: torchvision, one image at a time in the loader workers; batched: a whole batch per call with
    # per-image randomness, images of any sizes (data/batched_views.py; much faster)
    view_backend: str = "per_image"
    # batched views: cpu = made in the loader workers; cuda = made in the main process on the training device
    # after a pinned, non-blocking copy (on a CPU-only run: in the main process, on the CPU)
    view_device: str = "cpu"
    # cuda: JPEGs decoded in batches on the training device (nvJPEG), not in the workers; needs view_device=cuda
    decode_device: str = "cpu"
    max_pixels: int = 64_000_000  # image folders: larger images are skipped from their header, and counted
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
    grad_accum: int = 1
    seed: int = 0
    save_every: int = 500  # optimizer steps between checkpoints (and one at the end)
    log_every: int = 10
    output_dir: str = "runs"
    run_name: str | None = None  # default: recipe name
    resume: bool = True  # continue from checkpoints/last when it exists
    cpu: bool = False  # force CPU even when a GPU is visible
    progress_bar: bool = True


@dataclass
class EvalConfig:
    """Frozen-encoder evaluation run after training (and by ``ssl-toolkit eval``)."""

    after_train: bool = True
    dataset: str | None = None  # default: data.name
    root: str | None = None  # default: data.root
    size: int | None = None  # eval resolution; default: size of the first view group
    batch_size: int = 512
    max_train: int | None = None  # evaluate on seeded subsets (quick checks)
    max_test: int | None = None
    linear_epochs: int = 30
    linear_lrs: list[float] = field(default_factory=lambda: [1.0, 0.3, 0.1, 0.03])
    floors: bool = True  # also score raw pixels and the randomly initialised encoder
    rankme_samples: int = 25600


@dataclass
class MonitorConfig:
    """Label-free monitoring during pretraining (``ssl_toolkit.monitor``)."""

    every: int = 0  # optimizer steps between checks; 0 = off
    samples: int = 2048  # fixed seeded subset of clean training images
    knn_bank: int = 1536  # of which the k-NN bank (the rest are queries; only when labels exist)
    collapse_fraction: float = 0.05  # warn when RankMe < this fraction of the embedding width
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
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            return f"unknown key {key!r}; accepted under {parent or 'the top level'}: {', '.join(node.keys())}"
    return f"{key}: {text}" if key and key not in text else text


_YAML11_WORDS = {"yes", "no", "on", "off", "y", "n"}


def _parse_value(value: str) -> Any:
    """An override's value as YAML, except that yes/no/on/off stay strings (bool fields still accept them)."""
    import yaml

    if not value:
        return None
    if value.lower() in _YAML11_WORDS:
        return value
    return yaml.safe_load(value)


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load a recipe: defaults, then the YAML file, then ``key=value`` overrides; validate it.

    Raises:
        ConfigError: one line naming the problem and the accepted values.
    """
    base = OmegaConf.structured(Recipe)
    cfg = base
    warmup_layers: list[set[str]] = []  # train.warmup_* keys the recipe file, then the overrides, give
    try:
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"recipe file not found: {path}")
            raw = OmegaConf.load(path)
            if isinstance(raw, DictConfig) and isinstance(raw.get("views"), str):
                raw.views = view_preset(raw.views)
            cfg = OmegaConf.merge(cfg, raw)
            warmup_layers.append({k for k in WARMUP_KEYS if OmegaConf.select(raw, k, default=None) is not None})
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=10)")
            free_form = key.startswith(("objective.", "views."))  # checked by their own parsers below
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" and "." in key and not free_form:
                parent = key.rsplit(".", 1)[0]
                node = OmegaConf.select(cfg, parent)
                accepted = ", ".join(map(str, node.keys())) if isinstance(node, DictConfig) else "none"
                raise ConfigError(f"unknown key {key!r}; accepted under {parent}: {accepted}")
            # free-form dicts are replaced, not merged: kwargs of another objective or backbone would not apply
            merge = key not in REPLACED_WHOLE
            parsed = _parse_value(value)
            if key == "views" and isinstance(parsed, str):
                parsed = view_preset(parsed)
            OmegaConf.update(cfg, key, parsed, merge=merge, force_add=False)
        given = [item.partition("=") for item in overrides]
        warmup_layers.append({k for k, _, v in given if k in WARMUP_KEYS and _parse_value(v) is not None})
    except OmegaConfBaseException as err:
        raise ConfigError(f"recipe error: {_describe(err, base)}") from err
    if cfg.train.mixed_precision == "False":  # YAML 1.1 reads a bare `no` as false
        cfg.train.mixed_precision = "no"
    cfg.views = parse_view_groups(OmegaConf.to_container(cfg.views, resolve=True))
    _settle_warmup(cfg.train, warmup_layers)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _settle_warmup(train: DictConfig, layers: list[set[str]]) -> None:
    """The last layer (recipe file, then overrides) that sets one warm-up key decides: the other one is reset."""
    last = next((keys for keys in reversed(layers) if keys), set())
    if last == {"train.warmup_fraction"}:
        train.warmup_steps = 0
    elif last == {"train.warmup_steps"}:
        train.warmup_fraction = None


def _choice(value: str, accepted: tuple[str, ...], what: str) -> None:
    if value not in accepted:
        raise ConfigError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")


def validate(cfg: DictConfig) -> None:
    """Check names, kwargs and paths that the schema alone cannot; raise `ConfigError` on the first problem."""
    import timm

    from ssl_toolkit.objectives import build_objective

    _choice(cfg.data.name, DATASET_NAMES, "data.name")
    _choice(cfg.data.view_backend, VIEW_BACKENDS, "data.view_backend")
    if cfg.data.name == "image_folder" and not cfg.data.root:
        raise ConfigError("data.name=image_folder needs data.root=/path/to/images")
    for key, root in (("data.root", cfg.data.root), ("eval.root", cfg.eval.root)):
        if root and not Path(root).exists():
            raise ConfigError(f"{key} does not exist: {root}")
    if cfg.eval.dataset is not None:
        _choice(cfg.eval.dataset, DATASET_NAMES, "eval.dataset")
    if not timm.is_model(cfg.model.backbone):
        close = timm.list_models(f"*{cfg.model.backbone.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown backbone {cfg.model.backbone!r} (not a timm model name){hint}")
    _choice(cfg.train.optimizer, OPTIMIZERS, "train.optimizer")
    _choice(cfg.train.mixed_precision, MIXED_PRECISION, "train.mixed_precision")
    _validate_generated(cfg)
    _validate_view_devices(cfg.data)
    _validate_warmup(cfg.train)
    for key in ("epochs", "batch_size", "grad_accum", "save_every", "log_every"):
        if cfg.train[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {cfg.train[key]}")
    mc = cfg.monitor
    if mc.every < 0 or (mc.every and not 1 <= mc.knn_bank < mc.samples):
        raise ConfigError(
            f"monitor: needs every >= 0 (0 = off) and 1 <= knn_bank < samples, got every={mc.every}, "
            f"samples={mc.samples}, knn_bank={mc.knn_bank}"
        )
    objective = build_objective(OmegaConf.to_container(cfg.objective, resolve=True))  # checks name and kwargs
    _validate_quality_weights(cfg, objective)


def _validate_quality_weights(cfg: DictConfig, objective: Any) -> None:
    qw = cfg.quality_weights
    if qw.model_path is None:
        return
    if not objective.accepts_sample_weights:
        raise ConfigError(
            f"quality_weights: objective {cfg.objective.name!r} does not take per-sample weights; use simclr, dcl "
            "or dclw, or unset quality_weights.model_path"
        )
    for key in ("model_path", "pca_path"):
        if qw[key] is None or not Path(qw[key]).exists():
            raise ConfigError(f"quality_weights.{key} does not exist: {qw[key]} (local paths only, nothing downloads)")
    if count_global_views(OmegaConf.to_container(cfg.views, resolve=True)) < 2:
        raise ConfigError("quality_weights compare the first two global views; the views give fewer than 2")


def _validate_view_devices(data: DictConfig) -> None:
    _choice(data.view_device, DEVICES, "data.view_device")
    _choice(data.decode_device, DEVICES, "data.decode_device")
    if data.view_device == "cuda" and data.view_backend != "batched":
        raise ConfigError("data.view_device=cuda needs data.view_backend=batched (per_image views are made in workers)")
    if data.decode_device == "cuda" and (data.view_device != "cuda" or data.name != "image_folder"):
        raise ConfigError("data.decode_device=cuda needs data.view_device=cuda and data.name=image_folder")
    if data.decode_device == "cuda" and data.generated.bank is not None:
        raise ConfigError("data.decode_device=cuda cannot be combined with data.generated.bank; use decode_device=cpu")
    if data.max_pixels < 1:
        raise ConfigError(f"data.max_pixels must be >= 1 (pixels per image, e.g. 64000000), got {data.max_pixels}")


def _validate_warmup(train: DictConfig) -> None:
    fraction = train.warmup_fraction
    if train.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {train.warmup_steps}")
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise ConfigError(f"train.warmup_fraction must be in [0, 1), got {fraction}")
    if fraction is not None and train.warmup_steps:
        raise ConfigError(
            f"train.warmup_steps={train.warmup_steps} and train.warmup_fraction={fraction} both set the warm-up; "
            "give one of them (or train.warmup_steps=0)"
        )


def warmup_steps_for(train: DictConfig, total_steps: int) -> int:
    """Warm-up steps of a run of ``total_steps``: ``train.warmup_steps`` or ``train.warmup_fraction`` of the run.

    Warns when the warm-up is not shorter than the run (the learning rate would not reach ``train.lr`` in time).
    """
    steps = train.warmup_steps if train.warmup_fraction is None else round(train.warmup_fraction * total_steps)
    if steps >= total_steps > 0:
        warnings.warn(
            f"the warm-up ({steps} steps) is not shorter than the run ({total_steps} steps): the learning rate "
            "reaches train.lr only at the end, if at all; lower train.warmup_steps or use train.warmup_fraction",
            stacklevel=2,
        )
    return int(steps)


def _validate_generated(cfg: DictConfig) -> None:
    gen = cfg.data.generated
    _choice(gen.mode, GENERATED_MODES, "data.generated.mode")
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
            "view: {name: generated, n: 1, size: <global size>, source: generated})"
        )
    if gen.mode == "adainf" and generated_groups:
        raise ConfigError(
            f"data.generated.mode=adainf mixes whole samples; view group(s) {generated_groups} must use source: real"
        )
    if not 0.0 <= gen.p_generated <= 1.0 or gen.dup < 1:
        raise ConfigError(f"data.generated needs p_generated in [0, 1] and dup >= 1, got {gen.p_generated}, {gen.dup}")


def save_resolved(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved recipe (defaults included) so a run can be reproduced from its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)
