"""Multi-view datasets with reproducible randomness: `ViewDataset` and `EpochSampler`.

Determinism scheme: the views of sample ``i`` in epoch ``e`` depend only on ``(seed, e, i)``, never on
the number of DataLoader workers, the process or the order of calls. ``ViewDataset.__getitem__`` applies
its transforms inside ``torch.random.fork_rng(devices=[])`` after ``torch.manual_seed(mix_seeds(seed, e,
i))``, so the global CPU generator (the only one torchvision v2 transforms use) is seeded per sample and
restored afterwards. The epoch travels *through the index*: ``EpochSampler`` yields ``e * n + i`` and the
dataset decodes ``e, i = divmod(index, n)``; plain indices below ``n`` mean epoch 0. The seed mixing is
splitmix64 in plain Python integers, so it needs no numpy or ``random`` state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from ssl_toolkit.data.generated import sample_extras, source_of
from ssl_toolkit.errors import ConfigError

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seeds(*parts: int) -> int:
    """Hash integers into one 64-bit seed (splitmix64 folded over ``parts``); order matters."""
    h = 0
    for part in parts:
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n + i`` for ``i`` in a permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    Args:
        n: dataset length.
        seed: base seed of the permutations.
        shuffle: False yields ``i`` in order (still offset by ``epoch * n``).
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ConfigError(f"EpochSampler needs n >= 1, got {n}")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation (and view randomness) the next iteration uses."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        return iter((order + self.epoch * self.n).tolist())

    def __len__(self) -> int:
        return self.n


class ViewDataset(Dataset):
    """Wraps an ``(image, label)`` dataset and yields ``(views, id, extras)``, one view per transform.

    With a bank of generated images (``data/generated.py``) the base yields a `Sample` instead of an image;
    ``sources`` then names, per view, the image it is cut from ("real" or "generated"), and ``extras`` holds
    the sample's per-sample signals (``is_generated``; empty for plain images). The base is read inside the
    per-sample seeded region, so a random draw it makes (a bank variant) is as reproducible as the views.
    ``id`` is ``base.sample_id(i)`` when the base defines it (AdaInf's replicated real images share one id),
    else ``i``.

    Args:
        base: dataset yielding ``(image, label)`` or ``(Sample, label)``.
        transforms: one callable per view, applied to the same decoded image.
        seed: base seed of the view randomness.
        sources: per view, "real" or "generated"; None for a plain dataset.
    """

    def __init__(
        self, base: Dataset, transforms: Sequence[Callable], *, seed: int = 0, sources: Sequence[str] | None = None
    ) -> None:
        if len(transforms) < 1:
            raise ConfigError("ViewDataset needs at least one view transform")
        if sources is not None and len(sources) != len(transforms):
            raise ConfigError(f"{len(sources)} view sources for {len(transforms)} view transforms")
        self.base = base
        self.transforms = list(transforms)
        self.seed = int(seed)
        self.sources = None if sources is None else tuple(sources)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        index = int(index)
        if index < 0:
            raise IndexError(f"ViewDataset index must be >= 0, got {index}")
        epoch, i = divmod(index, len(self))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seeds(self.seed, epoch, i))
            image, _ = self.base[i]
            if self.sources is None:
                views = [t(image) for t in self.transforms]
            else:
                views = [t(source_of(image, src)) for t, src in zip(self.transforms, self.sources)]
        sample_id = self.base.sample_id(i) if hasattr(self.base, "sample_id") else i
        return views, sample_id, sample_extras(image)
