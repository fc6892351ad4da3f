"""Recipe sections → objects. Each builder takes one config section and passes explicit keyword arguments
on, so the library below never sees a recipe."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from ssl_toolkit.data import EpochSampler, ViewDataset, build_dataset, build_view_transforms, collate_views
from ssl_toolkit.data.batched_views import BatchViewCollate, PositionedImages
from ssl_toolkit.model import SSLModel, build_encoder, build_projector
from ssl_toolkit.objectives import build_objective


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
    return build_dataset(name=data.name, split=split, root=data.root, download=data.download, labelled=data.labelled)


def build_train_data(cfg: DictConfig) -> dict[str, Any]:
    """Training views: dataset, its epoch sampler, the collate function that yields ``(views, ids)``, and
    view metadata. ``data.view_backend`` picks per-image views in the dataset or batched views in the collate.
    """
    base = build_base_dataset(cfg.data)
    batched = cfg.data.view_backend == "batched"
    transforms, view_kinds, n_global = build_view_transforms(
        _plain(cfg.views),
        mean=base.mean,
        std=base.std,
        greyscale=getattr(base, "greyscale", False),
        batched=batched,
    )
    images = seeded_subset(base, cfg.data.subset, cfg.train.seed)
    sampler = EpochSampler(len(images), seed=cfg.train.seed, shuffle=True)
    if batched:
        dataset: Dataset = PositionedImages(images)
        collate = BatchViewCollate(transforms, n=len(images), seed=cfg.train.seed)
    else:
        dataset, collate = ViewDataset(images, transforms, seed=cfg.train.seed), collate_views
    return {
        "base": base,
        "dataset": dataset,
        "sampler": sampler,
        "collate_fn": collate,
        "view_kinds": tuple(view_kinds),
        "n_global": n_global,
    }


def build_model(cfg: DictConfig) -> SSLModel:
    """Encoder + projector + objective as one module (randomly initialised from ``train.seed``)."""
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
    )
    return SSLModel(
        encoder=encoder,
        projector=projector,
        objective=build_objective(_plain(cfg.objective)),
        ema_momentum=_plain(cfg.model.ema_momentum) if cfg.model.ema else None,
    )


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
