"""Label-free monitoring during pretraining: RankMe of embedding and projector, k-NN when labels exist.

Every ``monitor.every`` optimizer steps the main process embeds a fixed, seeded subset of clean (eval
transform) training images with the current encoder in eval mode and scores it with the same functions
as the offline evaluation (`ssl_toolkit.eval`): RankMe (Garrido et al. 2023, https://arxiv.org/abs/2210.02885)
of the backbone embedding and of the projector output, and — when the images have labels — a weighted
k-NN (dino protocol, k=20, T=0.07) whose bank is the first ``knn_bank`` images of the subset and whose
queries are the rest. A RankMe below ``collapse_fraction`` of the embedding width prints a collapse warning.
The best embedding RankMe so far is a label-free model-selection signal (the RankMe paper's use case): with
``export_best`` the encoder of that step is exported to ``run_dir/encoder_best``.

The monitor runs inside a forked CPU RNG and puts the model back in train mode, so it changes nothing the
training sees; per-step losses are the same with and without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ssl_toolkit.eval.features import extract_features
from ssl_toolkit.eval.knn import knn_accuracy
from ssl_toolkit.eval.rankme import rankme
from ssl_toolkit.eval.run import KNN_PROTOCOLS


class Monitor:
    """Scores the encoder on a fixed subset; see the module docstring.

    Args:
        dataset: un-augmented ``(image, label)`` training images (labels -1 when unknown).
        transform: the clean eval transform (uint8 image -> normalised float tensor).
        samples: subset size (seeded by ``seed``).
        knn_bank: how many of the subset form the k-NN bank (the rest are queries).
        collapse_fraction: warn when embedding RankMe < this fraction of the embedding width.
        batch_size: feature-extraction batch size.
        seed: subset seed.
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Tensor], Tensor],
        *,
        samples: int = 2048,
        knn_bank: int = 1536,
        collapse_fraction: float = 0.05,
        batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(seed)
        self.subset = Subset(dataset, torch.randperm(n, generator=g)[: min(samples, n)].tolist())
        self.transform = transform
        self.knn_bank = min(knn_bank, len(self.subset) - 1)
        self.collapse_fraction = collapse_fraction
        self.batch_size = batch_size
        self.best_rankme = -math.inf

    @torch.no_grad()
    def score(self, encoder: nn.Module, projector: nn.Module, device: torch.device) -> dict[str, Any]:
        """Metrics of the current encoder: ``rankme``, ``rankme_projector``, optionally ``knn_dino``,
        and flags ``collapse`` (RankMe below the threshold) and ``best`` (a new best RankMe)."""
        modes = (encoder.training, projector.training)
        try:
            with torch.random.fork_rng(devices=[]):
                h, labels = extract_features(
                    encoder, self.subset, transform=self.transform, batch_size=self.batch_size, device=device,
                    progress=False,
                )  # fmt: skip
                projector.eval()
                z = torch.cat([projector(c.to(device)).float().cpu() for c in h.split(self.batch_size)])
        finally:
            encoder.train(modes[0])
            projector.train(modes[1])
        out: dict[str, Any] = {"rankme": rankme(h), "rankme_projector": rankme(z)}
        bank, queries = slice(0, self.knn_bank), slice(self.knn_bank, None)
        if bool((labels[bank] >= 0).any()) and bool((labels[queries] >= 0).any()):
            k, temperature = KNN_PROTOCOLS["dino"]
            k = min(k, int((labels[bank] >= 0).sum()))  # small banks (quick runs, tests)
            acc = knn_accuracy(h[bank], labels[bank], h[queries], labels[queries], k=k, temperature=temperature)
            out["knn_dino"] = acc[k]
        out["collapse"] = out["rankme"] < self.collapse_fraction * h.shape[1]
        out["best"] = out["rankme"] > self.best_rankme
        self.best_rankme = max(self.best_rankme, out["rankme"])
        return out
