"""Recipe sections → objects. Each builder takes one config section and passes explicit keyword arguments
on, so the library below never sees a recipe."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from ssl_toolkit.data import EpochSampler, ViewDataset, build_dataset, build_view_transforms, collate_views
from ssl_toolkit.data.batched_collate import BatchViewCollate, PositionedImages
from ssl_toolkit.data.generated import GenViewImages, InflatedImages, ViewBank
from ssl_toolkit.data.image_folder import JpegBytes
from ssl_toolkit.data.view_specs import view_sources
from ssl_toolkit.model import SSLModel, build_encoder, build_projector
from ssl_toolkit.objectives import build_objective, builder_facts


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def seeded_subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``size`` items (the whole dataset when ``size`` is None or too large)."""
    if size is None or size >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(seed)
    return Subset(dataset, torch.randperm(len(dataset), generator=g)[:size].tolist())


def build_base_dataset(data: DictConfig, *, split: str = "train") -> Dataset:
    """The un-augmented dataset of ``data`` (images as uint8 (3, H, W), labels or -1)."""
    return build_dataset(
        name=data.name,
        split=split,
        root=data.root,
        download=data.download,
        labelled=data.labelled,
        max_pixels=data.max_pixels,
    )


def _with_bank(base: Dataset, cfg: DictConfig) -> Dataset:
    """The training images: the (subset of the) real images, mixed with the bank of ``data.generated``."""
    gen, seed = cfg.data.generated, cfg.train.seed
    if gen.bank is None:
        return seeded_subset(base, cfg.data.subset, seed)
    bank = ViewBank(gen.bank)
    if gen.mode == "genview":  # the bank is indexed like the full dataset: wrap first, then take the subset
        return seeded_subset(GenViewImages(base, bank, p_generated=gen.p_generated), cfg.data.subset, seed)
    return InflatedImages(seeded_subset(base, cfg.data.subset, seed), bank, dup=gen.dup)


def _as_is(batch: Any) -> Any:
    return batch


@dataclass
class TrainData:
    """What the engine needs of the training data: a dataset, its sampler and collate, and view metadata."""

    base: Dataset  # the un-augmented images (mean, std, labels)
    dataset: Dataset  # what the loader reads
    sampler: EpochSampler
    collate_fn: Callable
    view_kinds: tuple[str, ...]
    n_global: int
    # a loader batch, once on the training device -> the `Batch` the model takes (views made there when
    # data.view_device=cuda; the identity otherwise)
    finish_batch: Callable[[Any], Any] = _as_is

    @property
    def size(self) -> int:
        """Training samples per epoch (after subset and bank mixing)."""
        return len(self.sampler)


def build_train_data(cfg: DictConfig) -> TrainData:
    """Training views: dataset, epoch sampler, and the collate function that yields a `Batch`.

    ``data.view_backend`` picks per-image views in the dataset or batched views in the collate;
    ``data.view_device=cuda`` leaves the batched views to ``finish_batch`` on the training device, and
    ``data.decode_device=cuda`` the decoding of JPEGs too.
    """
    base = build_base_dataset(cfg.data)
    batched = cfg.data.view_backend == "batched"
    groups = _plain(cfg.views)
    transforms, view_kinds, n_global = build_view_transforms(
        groups, mean=base.mean, std=base.std, greyscale=getattr(base, "greyscale", False), batched=batched
    )
    images = _with_bank(JpegBytes(base) if cfg.data.decode_device == "cuda" else base, cfg)
    sources = view_sources(groups) if cfg.data.generated.bank is not None else None
    sampler = EpochSampler(len(images), seed=cfg.train.seed, shuffle=True)
    if not batched:
        dataset = ViewDataset(images, transforms, seed=cfg.train.seed, sources=sources)
        return TrainData(base, dataset, sampler, collate_views, tuple(view_kinds), n_global)
    defer = cfg.data.view_device == "cuda"
    if defer and (cfg.train.cpu or not torch.cuda.is_available()):
        warnings.warn(
            "data.view_device=cuda without a GPU: views are made in the main process, on the CPU", stacklevel=2
        )
    positioned = PositionedImages(images, seed=None if sources is None else cfg.train.seed)
    collate = BatchViewCollate(transforms, n=len(images), seed=cfg.train.seed, sources=sources, defer=defer)
    finish = collate.finish if defer else _as_is
    return TrainData(base, positioned, sampler, collate, tuple(view_kinds), n_global, finish)


def build_loader(data: TrainData, cfg: DictConfig) -> DataLoader:
    """The training DataLoader: the epoch sampler, full batches only, the data's collate, persistent workers."""
    from ssl_toolkit.interrupts import ignore_in_worker

    workers = cfg.data.num_workers
    _check_workers(workers)
    return DataLoader(
        data.dataset,
        batch_size=cfg.train.batch_size,
        sampler=data.sampler,
        drop_last=True,  # equal batches on every process (gathered losses, Sinkhorn, queues)
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=data.collate_fn,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=ignore_in_worker,  # signals are the main process's (interrupts.py)
    )


def _check_workers(workers: int) -> None:
    """One line when the loader workers of this machine's processes outnumber its cores (they then slow each
    other and training down), naming the value that fits; PyTorch's own longer warning is silenced for it."""
    from ssl_toolkit.run_summary import usable_cores

    processes, cores = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), usable_cores()
    if workers * processes <= cores:
        return
    fits = max(cores // processes - 1, 1)
    per = f" x {processes} processes" if processes > 1 else ""
    warnings.warn(
        f"data.num_workers={workers}{per} starts more loader workers than this machine's {cores} CPU cores; "
        f"they will compete with training (data.num_workers={fits} fits here)",
        stacklevel=2,
    )
    warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes", category=UserWarning)


def build_model(cfg: DictConfig, data: TrainData | None = None) -> SSLModel:
    """Encoder + projector + objective as one module (randomly initialised from ``train.seed``), with the
    EMA branch and per-sample signals the recipe asks for (those need ``data``: its normalisation)."""
    encoder = build_encoder(
        cfg.model.backbone,
        small_input=cfg.model.small_input,
        backbone_kwargs=_plain(cfg.model.backbone_kwargs),
    )
    projector = build_projector(
        encoder.num_features,
        hidden_dim=cfg.model.projector_hidden,
        out_dim=cfg.model.projector_out,
        num_layers=cfg.model.projector_layers,
        last_norm=cfg.model.projector_last_norm,
    )
    return SSLModel(
        encoder=encoder,
        projector=projector,
        objective=build_objective(
            _plain(cfg.objective),
            known=builder_facts(
                projector_out=cfg.model.projector_out,
                view_groups=_plain(cfg.views),
                dataset_size=None if data is None else data.size,
            ),
            allow_import=True,  # config.load already refused a module:Class it was not allowed to import
        ),
        ema_momentum=_plain(cfg.model.ema_momentum) if cfg.model.ema else None,
        signals=_build_signals(cfg, data),
    )


def _build_signals(cfg: DictConfig, data: TrainData | None) -> dict[str, torch.nn.Module]:
    """Frozen per-sample signals computed from each batch: GenView's quality weights when a model is given."""
    qw = cfg.quality_weights
    if qw.model_path is None:
        return {}
    if data is None:
        raise ValueError("quality weights need the training data's normalisation: build_model(cfg, data)")
    from ssl_toolkit.generation.quality import QualityWeighter, QualityWeightSignal

    weighter = QualityWeighter(qw.model_path, qw.pca_path, arch=qw.arch, gamma=qw.gamma, image_size=qw.image_size)
    return {"sample_weights": QualityWeightSignal(weighter, mean=data.base.mean, std=data.base.std)}


def build_optimizer(model: torch.nn.Module, train: DictConfig) -> torch.optim.Optimizer:
    """timm optimizer; biases and norm weights get no weight decay (and no LARS adaptation)."""
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {"momentum": train.momentum} if train.optimizer in ("sgd", "lars") else {}
    optimizer = create_optimizer_v2(
        model,
        opt=train.optimizer,
        lr=train.lr,
        weight_decay=train.weight_decay,
        filter_bias_and_bn=True,
        **kwargs,
    )
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, train: DictConfig) -> None:
    """Set the recipe's lr, weight decay and momentum on an optimizer whose state came from a checkpoint.

    ``load_state`` restores the param groups as saved; a resume that changes these (allowed, see
    ``run_folder.TRAJECTORY_ON_RESUME``) must win over them. Groups without weight decay keep none.
    """
    for group in optimizer.param_groups:
        group["base_lr"] = train.lr
        if group.get("weight_decay"):
            group["weight_decay"] = train.weight_decay
        if "momentum" in group:
            group["momentum"] = train.momentum
