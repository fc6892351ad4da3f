"""Frozen features for evaluation: clean (eval-transform) images, or seeded augmented views, through an encoder.

`extract_features` gives one feature row per image (k-NN, linear probe, RankMe, alpha-ReQ);
`extract_view_features` gives V augmented views per image, grouped by image (LiDAR's surrogate classes).

Also re-estimates BatchNorm statistics for a randomly initialised encoder, so that the random-init floor is
a fair one: with PyTorch's default running statistics (mean 0, var 1) a random ResNet's activations are
badly scaled and its k-NN accuracy is near chance, which says nothing about the architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults


class TransformedDataset(Dataset):
    """``(transform(image), label)`` over a dataset of ``(image, label)``."""

    def __init__(self, base: Dataset, transform: Callable[[Tensor], Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[i]
        return self.transform(image), int(label)


class ViewsOfDataset(Dataset):
    """``(stack of n_views transform(image), label)`` over a dataset of ``(image, label)``."""

    def __init__(self, base: Dataset, transform: Callable[[Tensor], Tensor], n_views: int) -> None:
        self.base, self.transform, self.n_views = base, transform, n_views

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[i]
        return torch.stack([self.transform(image) for _ in range(self.n_views)]), int(label)  # (V, C, H, W)


def _loader(dataset: Dataset, transform: Callable, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        TransformedDataset(dataset, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )


class _InMemoryBatches:
    """Batches of a dataset that holds its images as one tensor (``image_batch(start, stop)``: Fashion-MNIST,
    `ArrayDataset`), the transform applied once per batch: on 28 px images the per-image Python of a
    DataLoader (one ``__getitem__`` and one transform call each) costs more than the encoder's forward pass.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Tensor], Tensor], batch_size: int) -> None:
        self.dataset, self.transform, self.batch_size = dataset, transform, batch_size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.dataset), self.batch_size):
            images, labels = self.dataset.image_batch(start, start + self.batch_size)
            yield self.transform(images), labels


def _batches(dataset: Dataset, transform: Callable, batch_size: int, num_workers: int) -> Iterable:
    """``(transformed images, labels)`` batches in dataset order, a whole batch per transform call when the
    dataset can give one (the eval transform is deterministic and batch-wise, so the values are the same)."""
    if callable(getattr(dataset, "image_batch", None)):
        return _InMemoryBatches(dataset, transform, batch_size)
    return _loader(dataset, transform, batch_size, num_workers)


@torch.no_grad()
def extract_features(
    encoder: nn.Module | None,
    dataset: Dataset,
    *,
    transform: Callable[[Tensor], Tensor],
    batch_size: int = defaults.EVAL_BATCH_SIZE,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "features",
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Features and labels of every item, in dataset order; ``encoder=None`` gives flattened pixels.

    Shape:
        returns features (N, F) float32 on CPU and labels (N,) int64.
    """
    if encoder is not None:
        encoder.eval().to(device)
    feats, labels = [], []
    for images, y in tqdm(
        _batches(dataset, transform, batch_size, num_workers), desc=desc, disable=not progress, leave=False
    ):
        x = images.to(device)
        out = x.flatten(1) if encoder is None else encoder(x)
        feats.append(out.float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels).long()


@torch.no_grad()
def extract_view_features(
    encoders: Mapping[str, nn.Module],
    dataset: Dataset,
    *,
    transform: Callable[[Tensor], Tensor],
    n_views: int = defaults.LIDAR_VIEWS,
    seed: int = defaults.SEED,
    batch_size: int = defaults.EVAL_BATCH_SIZE,
    device: str | torch.device = "cpu",
    desc: str = "views",
    progress: bool = True,
) -> dict[str, Tensor]:
    """Features of ``n_views`` augmented views of every item, grouped by item, for every encoder at once.

    Each batch of views is drawn once and fed to every encoder, so all encoders see the same views (and the
    augmentation, usually the expensive part on CPU, runs once). The views are drawn in the main process, in
    dataset order, from torch's global RNG seeded with ``seed`` inside ``torch.random.fork_rng`` (the caller's
    RNG state is left as it was): the same dataset, transform and seed always give the same views.

    Args:
        encoders: name -> encoder, each evaluated in eval mode, e.g. ``{"encoder": model}``.
        dataset: yields ``(uint8 image, label)``.
        transform: a random view transform, e.g. ``build_view_transform(augment="simclr", size=..., ...)``.
        n_views: views per item, >= 2 for LiDAR.
        seed: seeds the views.
        batch_size: images per encoder forward (``batch_size // n_views`` items, at least 1).

    Returns:
        ``{name: features}``, each (N, n_views, F) float32 on the CPU; ``[i, j]`` is view j of item i.
    """
    if n_views < 1 or not encoders:
        raise ConfigError(f"extract_view_features needs n_views >= 1 and an encoder, got {n_views}, {len(encoders)}")
    for encoder in encoders.values():
        encoder.eval().to(device)
    items_per_batch = max(1, batch_size // n_views)
    loader = DataLoader(ViewsOfDataset(dataset, transform, n_views), batch_size=items_per_batch, shuffle=False)
    feats: dict[str, list[Tensor]] = {name: [] for name in encoders}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for views, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            b = views.shape[0]
            flat = views.flatten(0, 1).to(device)  # (B * V, C, H, W)
            for name, encoder in encoders.items():
                feats[name].append(encoder(flat).float().cpu().view(b, n_views, -1))  # (B, V, F)
    if not len(dataset):
        raise ConfigError("extract_view_features got an empty dataset")
    return {name: torch.cat(parts) for name, parts in feats.items()}


@torch.no_grad()
def reset_norm_affine(encoder: nn.Module) -> nn.Module:
    """Set every normalisation layer's scale to 1 and shift to 0 (PyTorch's default initialisation).

    timm zero-initialises the last BatchNorm scale of each residual block (``zero_init_last``), which makes
    a freshly initialised ResNet's blocks identities; a random-init floor should see the random blocks.
    """
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm) and m.weight is not None:
            m.weight.fill_(1.0)
            if m.bias is not None:
                m.bias.zero_()
    return encoder


@torch.no_grad()
def recalibrate_batchnorm(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    transform: Callable[[Tensor], Tensor],
    num_batches: int = defaults.RECALIBRATE_BATCHES,
    batch_size: int = defaults.RECALIBRATE_BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Replace BatchNorm running statistics by their average over ``num_batches`` clean batches (a seeded
    subset), with `torch.optim.swa_utils.update_bn` (reset, cumulative average, momentum restored)."""
    from torch.optim.swa_utils import update_bn

    encoder.to(device)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(dataset), generator=g)[: num_batches * batch_size].tolist()
    subset = torch.utils.data.Subset(dataset, order)
    update_bn(_loader(subset, transform, batch_size, 0), encoder, device=torch.device(device))
    return encoder.eval()
