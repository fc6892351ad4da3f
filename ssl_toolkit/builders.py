"""Recipe sections → objects. Each builder takes one config section and passes explicit keyword arguments
on, so the library below never sees a recipe."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from ssl_toolkit.data import EpochSampler, ViewDataset, build_dataset, build_view_transforms, collate_views
from ssl_toolkit.data.batched_views import BatchViewCollate, PositionedImages
from ssl_toolkit.data.generated import GenViewImages, InflatedImages, ViewBank
from ssl_toolkit.data.views import view_sources
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
    return build_dataset(name=data.name, split=split, root=data.root, download=data.download, labelled=data.labelled)


def _view_groups(cfg: DictConfig) -> list[dict]:
    """The recipe's view groups; AdaInf with ``weak_augment`` turns ``augment: simclr`` into ``simclr_weak``."""
    groups = _plain(cfg.views)
    gen = cfg.data.generated
    if gen.bank is not None and gen.mode == "adainf" and gen.weak_augment:
        groups = [{**g, "augment": "simclr_weak"} if g.get("augment", "simclr") == "simclr" else g for g in groups]
    return groups


def _with_bank(base: Dataset, cfg: DictConfig) -> Dataset:
    """The training images: the (subset of the) real images, mixed with the bank of ``data.generated``."""
    gen, seed = cfg.data.generated, cfg.train.seed
    if gen.bank is None:
        return seeded_subset(base, cfg.data.subset, seed)
    bank = ViewBank(gen.bank)
    if gen.mode == "genview":  # the bank is indexed like the full dataset: wrap first, then take the subset
        return seeded_subset(GenViewImages(base, bank, p_generated=gen.p_generated), cfg.data.subset, seed)
    return InflatedImages(seeded_subset(base, cfg.data.subset, seed), bank, dup=gen.dup)


def build_train_data(cfg: DictConfig) -> dict[str, Any]:
    """Training views: dataset, its epoch sampler, the collate function that yields ``(views, ids)`` (plus
    ``is_generated`` with a bank), and view metadata. ``data.view_backend`` picks per-image views in the
    dataset or batched views in the collate.
    """
    base = build_base_dataset(cfg.data)
    batched = cfg.data.view_backend == "batched"
    groups = _view_groups(cfg)
    transforms, view_kinds, n_global = build_view_transforms(
        groups,
        mean=base.mean,
        std=base.std,
        greyscale=getattr(base, "greyscale", False),
        batched=batched,
    )
    images = _with_bank(base, cfg)
    sources = view_sources(groups) if cfg.data.generated.bank is not None else None
    sampler = EpochSampler(len(images), seed=cfg.train.seed, shuffle=True)
    if batched:
        dataset: Dataset = PositionedImages(images, seed=None if sources is None else cfg.train.seed)
        collate = BatchViewCollate(transforms, n=len(images), seed=cfg.train.seed, sources=sources)
    else:
        dataset, collate = ViewDataset(images, transforms, seed=cfg.train.seed, sources=sources), collate_views
    return {
        "base": base,
        "dataset": dataset,
        "sampler": sampler,
        "collate_fn": collate,
        "view_kinds": tuple(view_kinds),
        "n_global": n_global,
    }


def build_model(cfg: DictConfig, *, dataset_size: int | None = None, allow_import: bool = False) -> SSLModel:
    """Encoder + projector + objective as one module (randomly initialised from ``train.seed``).

    ``dataset_size`` (the number of training images) is filled into objectives that declare it;
    ``allow_import`` lets a ``module:Class`` objective be imported (recipes given to ``train`` only)."""
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
        objective=build_objective(
            _plain(cfg.objective),
            known=builder_facts(
                projector_out=cfg.model.projector_out, view_groups=_plain(cfg.views), dataset_size=dataset_size
            ),
            allow_import=allow_import,
        ),
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


def build_quality_weighter(cfg: DictConfig) -> torch.nn.Module | None:
    """GenView's quality weighter from ``quality_weights`` (None when no model is given)."""
    qw = cfg.quality_weights
    if qw.model_path is None:
        return None
    from ssl_toolkit.generation.quality import QualityWeighter

    return QualityWeighter(qw.model_path, qw.pca_path, arch=qw.arch, gamma=qw.gamma, image_size=qw.image_size)
