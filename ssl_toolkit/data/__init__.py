"""Data: datasets yielding uint8 (3, H, W) images, view groups and their two backends, reproducible loaders.

A leaf package: imports only torch, torchvision, timm (constants), kornia, numpy, PIL and ``ssl_toolkit.errors``.
Modules: ``datasets``/``image_folder``/``decode`` (images, the corrupt-file policy, the pixel limit),
``view_specs`` (view groups as checked data), ``views`` (per-image torchvision backend), ``batched_views`` (one
call per view for a whole batch of images of any sizes) with ``crops``, ``colour`` and ``blur`` (its per-image
operations) and ``batched_collate`` (its loader side: in the workers, or deferred to the training device),
``view_groups`` (groups -> transforms), ``view_dataset`` (seeding per sample), ``batch`` (what a loader yields),
``generated`` and ``manifest`` (banks of generated images), ``shards``/``hf``/``encoded``/``pack`` (sharded
sources). Names are imported on first use (``ssl_toolkit.lazy``).
"""

from __future__ import annotations

from ssl_toolkit.lazy import lazy_exports

_EXPORTS = {
    "Batch": "batch",
    "DATASETS": "datasets",
    "FASHION_MNIST_CLASSES": "datasets",
    "ArrayDataset": "datasets",
    "FashionMNIST": "datasets",
    "build_dataset": "datasets",
    "read_idx": "datasets",
    "IMAGENET_MEAN": "image_folder",
    "IMAGENET_STD": "image_folder",
    "IMG_EXTENSIONS": "image_folder",
    "ImageFolder": "image_folder",
    "EpochSampler": "view_dataset",
    "ViewDataset": "view_dataset",
    "mix_seeds": "view_dataset",
    "build_view_transforms": "view_groups",
    "VIEW_PRESETS": "view_specs",
    "parse_view_groups": "view_specs",
    "view_preset": "view_specs",
    "AUGMENT_PRESETS": "views",
    "build_eval_transform": "views",
    "build_view_transform": "views",
    "collate_views": "views",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
