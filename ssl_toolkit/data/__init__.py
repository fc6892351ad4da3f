"""Data: datasets yielding uint8 (3, H, W) images, view transforms, and reproducible multi-view datasets.

A leaf package: imports only torch, torchvision, kornia (batched views), numpy, PIL and ``ssl_toolkit.errors``.
"""

from __future__ import annotations

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
from ssl_toolkit.data.views import (
    AUGMENT_PRESETS,
    VIEW_PRESETS,
    build_eval_transform,
    build_view_transform,
    build_view_transforms,
    collate_views,
    view_preset,
)

__all__ = [
    "AUGMENT_PRESETS",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "ArrayDataset",
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
    "read_idx",
    "view_preset",
]
