"""Data: datasets yielding uint8 (3, H, W) images, view groups and their two backends, reproducible loaders.

A leaf package: imports only torch, torchvision, kornia, numpy, PIL and ``ssl_toolkit.errors``.
Modules: ``datasets``/``image_folder``/``decode`` (images, the corrupt-file policy, the pixel limit),
``view_specs`` (view groups as checked data), ``views`` (per-image torchvision backend), ``batched_views`` (one
call per view for a whole batch of images of any sizes) with ``crops``, ``colour`` and ``blur`` (its per-image
operations) and ``batched_collate`` (its loader side: in the workers, or deferred to the training device),
``view_groups`` (groups -> transforms), ``view_dataset`` (seeding per sample), ``batch`` (what a loader yields),
``generated`` and ``manifest`` (banks of generated images).
"""

from __future__ import annotations

from ssl_toolkit.data.batch import Batch
from ssl_toolkit.data.datasets import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    ArrayDataset,
    FashionMNIST,
    build_dataset,
    read_idx,
)
from ssl_toolkit.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, ImageFolder
from ssl_toolkit.data.view_dataset import EpochSampler, ViewDataset, mix_seeds
from ssl_toolkit.data.view_groups import build_view_transforms
from ssl_toolkit.data.view_specs import VIEW_PRESETS, parse_view_groups, view_preset
from ssl_toolkit.data.views import AUGMENT_PRESETS, build_eval_transform, build_view_transform, collate_views

__all__ = [
    "AUGMENT_PRESETS",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "ArrayDataset",
    "Batch",
    "EpochSampler",
    "FashionMNIST",
    "ImageFolder",
    "VIEW_PRESETS",
    "ViewDataset",
    "build_dataset",
    "build_eval_transform",
    "build_view_transform",
    "build_view_transforms",
    "collate_views",
    "mix_seeds",
    "parse_view_groups",
    "read_idx",
    "view_preset",
]
