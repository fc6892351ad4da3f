"""Label-free monitoring during pretraining: RankMe, alpha-ReQ and LiDAR, k-NN when labels exist.

Every ``monitor.every`` optimizer steps the main process embeds a fixed, seeded subset of clean (eval
transform) training images with the current encoder in eval mode and scores it with the same functions
as the offline evaluation (`ssl_toolkit.eval`): RankMe (Garrido et al. 2023, https://arxiv.org/abs/2210.02885)
of the backbone embedding and of the projector output, alpha-ReQ (Agrawal et al. 2022) of the same backbone
features (NaN when undefined: fewer than 13 usable dimensions), LiDAR (Thilak et al. 2023,
https://arxiv.org/abs/2312.04000) of ``lidar_views`` augmented views of the first ``lidar_samples`` images
of the subset (the views are drawn from a fixed seed, so every check sees the same views), and — when the
images have labels — a weighted k-NN (dino protocol, k=20, T=0.07) whose bank is the first ``knn_bank``
images of the subset and whose queries are the rest. A RankMe below ``collapse_fraction`` of the embedding
width prints a collapse warning. The best embedding RankMe so far is a label-free model-selection signal
(the RankMe paper's use case): with ``export_best`` the encoder of that step is exported to
``run_dir/encoder_best``.

`TrainingMonitor` runs it inside a training run (logging, warnings, best export). The monitor runs inside a
forked CPU RNG and puts the model back in train mode, so it changes nothing the training sees; per-step
losses are the same with and without it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ssl_toolkit.eval.alpha_req import alpha_req
from ssl_toolkit.eval.features import extract_features, extract_view_features
from ssl_toolkit.eval.knn import knn_accuracy
from ssl_toolkit.eval.lidar import lidar
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
        view_transform: a random view transform for LiDAR (None: no LiDAR).
        lidar_samples: LiDAR's images, the first of the subset (0 or fewer than 2: no LiDAR).
        lidar_views: augmented views of each LiDAR image (>= 2).
        batch_size: feature-extraction batch size.
        seed: subset seed (and the LiDAR views' seed).
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Tensor], Tensor],
        *,
        samples: int = 2048,
        knn_bank: int = 1536,
        collapse_fraction: float = 0.05,
        view_transform: Callable[[Tensor], Tensor] | None = None,
        lidar_samples: int = 0,
        lidar_views: int = 4,
        batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g)[: min(samples, n)].tolist()
        self.subset = Subset(dataset, order)
        self.transform = transform
        use_lidar = view_transform is not None and min(lidar_samples, len(order)) >= 2
        self.lidar_subset = Subset(dataset, order[:lidar_samples]) if use_lidar else None
        self.view_transform, self.lidar_views, self.seed = view_transform, lidar_views, seed
        self.knn_bank = min(knn_bank, len(self.subset) - 1)
        self.collapse_fraction = collapse_fraction
        self.batch_size = batch_size
        self.best_rankme = -math.inf

    @torch.no_grad()
    def score(self, encoder: nn.Module, projector: nn.Module, device: torch.device) -> dict[str, Any]:
        """Metrics of the current encoder: ``rankme``, ``rankme_projector``, ``alpha_req`` (NaN when undefined),
        ``lidar`` (with a view transform), ``knn_dino`` (with labels), and flags ``collapse`` (RankMe below
        the threshold) and ``best`` (a new best RankMe)."""
        modes = (encoder.training, projector.training)
        try:
            with torch.random.fork_rng(devices=[]):
                h, labels = extract_features(
                    encoder, self.subset, transform=self.transform, batch_size=self.batch_size, device=device,
                    progress=False,
                )  # fmt: skip
                projector.eval()
                z = torch.cat([projector(c.to(device)).float().cpu() for c in h.split(self.batch_size)])
                views = None
                if self.lidar_subset is not None:  # seeded inside its own fork_rng: the same views every check
                    views = extract_view_features(
                        {"encoder": encoder}, self.lidar_subset, transform=self.view_transform,
                        n_views=self.lidar_views, seed=self.seed, batch_size=self.batch_size, device=device,
                        progress=False,
                    )["encoder"]  # fmt: skip
        finally:
            encoder.train(modes[0])
            projector.train(modes[1])
        out: dict[str, Any] = {"rankme": rankme(h), "rankme_projector": rankme(z), "alpha_req": alpha_req(h)}
        if views is not None:
            out["lidar"] = lidar(views)
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


class TrainingMonitor:
    """`Monitor` during a run (main process): ``monitor.csv``/TensorBoard rows, collapse warnings, best export.

    Args:
        dataset: the un-augmented training images (``mean``, ``std``).
        run_dir: the run folder.
        step: the step the run starts at (resume keeps the rows before it and the best RankMe so far).
        size: the clean-image side the encoder is scored at (and LiDAR's views are cut at).
        samples, knn_bank, collapse_fraction, lidar_samples, lidar_views: see `Monitor` (LiDAR's views are
            ``simclr`` views, as in ``ssl-toolkit eval``).
        export_best: export the encoder of each new best RankMe to ``run_dir/encoder_best``.
        export: ``export(encoder, step=..., folder=..., monitor=...)`` (the run's `export_run`).
        seed: subset seed.
    """

    def __init__(
        self,
        dataset: Dataset,
        run_dir: Path,
        *,
        step: int,
        size: int,
        samples: int,
        knn_bank: int,
        collapse_fraction: float,
        export_best: bool,
        export: Callable[..., Path],
        lidar_samples: int = 0,
        lidar_views: int = 4,
        seed: int = 0,
    ) -> None:
        from ssl_toolkit.data import build_eval_transform, build_view_transform
        from ssl_toolkit.eval.defaults import LIDAR_AUGMENT
        from ssl_toolkit.run_log import MetricsLogger

        transform = build_eval_transform(size=size, mean=dataset.mean, std=dataset.std)
        views = build_view_transform(augment=LIDAR_AUGMENT, size=size, mean=dataset.mean, std=dataset.std,
                                     greyscale=bool(getattr(dataset, "greyscale", False)))  # fmt: skip
        self.monitor = Monitor(
            dataset, transform, samples=samples, knn_bank=knn_bank, collapse_fraction=collapse_fraction,
            view_transform=views, lidar_samples=lidar_samples, lidar_views=lidar_views, seed=seed,
        )  # fmt: skip
        self.logger = MetricsLogger(run_dir, enabled=True, resume_step=step, name="monitor")
        self.export_best, self.export = export_best, export
        best = run_dir / "encoder_best" / "config.json"
        if best.exists():  # resumed: keep the best RankMe of the steps before
            saved = json.loads(best.read_text()).get("ssl_toolkit", {}).get("monitor", {})
            self.monitor.best_rankme = float(saved.get("rankme", -math.inf))

    @classmethod
    def from_recipe(
        cls, cfg: Any, dataset: Dataset, run_dir: Path, *, step: int, export: Callable[..., Path]
    ) -> TrainingMonitor:
        """The monitor a recipe's ``monitor`` section asks for, scoring at the eval size (default: first view's)."""
        mc = cfg.monitor
        return cls(
            dataset, run_dir, step=step, size=cfg.eval.size or cfg.views[0].size, samples=mc.samples,
            knn_bank=mc.knn_bank, collapse_fraction=mc.collapse_fraction, export_best=mc.export_best, export=export,
            lidar_samples=mc.lidar_samples, lidar_views=mc.lidar_views, seed=cfg.train.seed,
        )  # fmt: skip

    def check(self, step: int, encoder: nn.Module, projector: nn.Module, device: torch.device) -> None:
        """Score the encoder at ``step``; log, warn on collapse, export a new best."""
        out = self.monitor.score(encoder, projector, device)
        values = {k: float(v) for k, v in out.items()}
        self.logger.log(step, values)
        if out["collapse"]:
            warnings.warn(  # the command line prints it as one line above the progress bar (cli_warnings.py)
                f"step {step}: RankMe {out['rankme']:.1f} is below {self.monitor.collapse_fraction:.0%} of "
                "the embedding width; the representation may be collapsing (check the learning rate, temperature "
                "and augmentations)",
                stacklevel=1,  # attributed to this package, whoever called
            )
        if out["best"] and self.export_best:  # JSON has no NaN: an undefined alpha-ReQ is written as null
            finite = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
            self.export(encoder, step=step, folder="encoder_best", monitor={"step": step, **finite})

    def close(self) -> None:
        self.logger.close()
