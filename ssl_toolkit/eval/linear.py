"""Linear probe on cached frozen features: a grid of (lr x BatchNorm) heads trained in one run, chosen on val.

Protocol ("precomputed features", docs/evaluation.md, "Linear probe"): the features are used as given
(eval-mode encoder, eval transform, no augmentation), so numbers from this probe must never be compared with
augmented probes. A validation split is carved from train with a seeded permutation; every head is trained
on the rest with SGD (momentum 0.9) and a per-step cosine schedule to 0; the head with the best final val
top-1 is chosen and its test top-1 is reported once. The chosen head is *not* retrained on train + val. The
"BatchNorm" variant puts ``BatchNorm1d(d, affine=False, eps=1e-6)`` before the linear layer (MAE-style),
which normalises the features without adding parameters; it is shared by all BN heads, since without
parameters every head would hold an identical copy.

Written by hand because lightly's ``LinearClassifier`` lives in ``lightly.utils.benchmarking`` (which imports
Lightning) and trains one head per run over an image dataloader. On cached features a probe is a small convex
problem, and one concatenated matmul trains every head for about the cost of one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.arrays import as_tensor

PROTOCOL = "linear probe on cached features; SGD m0.9 + cosine; head chosen on val, trained on train minus val"


class _HeadGrid(nn.Module):
    """H independent linear heads stored side by side in one (D, H * C) weight, so one matmul serves them all.

    Heads with ``use_bn`` set read ``BatchNorm1d(affine=False)`` features, the others the raw features; heads
    with equal flags must be contiguous, so each group is one column slice of the weight.
    """

    def __init__(self, dim: int, num_classes: int, use_bn: Sequence[bool], generator: torch.Generator):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        flags = list(use_bn)
        self.groups = [(f, flags.index(f), len(flags) - flags[::-1].index(f)) for f in dict.fromkeys(flags)]
        if sum(stop - start for _, start, stop in self.groups) != len(flags):
            raise ValueError("heads sharing a batch_norm flag must be contiguous")
        # DINO's probe init: N(0, 0.01) weights, zero bias
        self.weight = nn.Parameter(0.01 * torch.randn(dim, len(flags) * num_classes, generator=generator))
        self.bias = nn.Parameter(torch.zeros(len(flags) * num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every head. Shape: x (B, D) -> (B, H, C)."""
        out = []
        for flag, start, stop in self.groups:
            cols = slice(start * self.num_classes, stop * self.num_classes)
            out.append(torch.addmm(self.bias[cols], self.bn(x) if flag else x, self.weight[:, cols]))
        return torch.cat(out, dim=1).view(x.shape[0], -1, self.num_classes)  # (B, H, C)

    @torch.no_grad()
    def sgd_step(self, lr: Tensor, buffers: list[Tensor], momentum: float, weight_decay: float) -> None:
        """``torch.optim.SGD``'s update (dampening 0, no Nesterov) with one learning rate per weight column.

        Written out because torch optimizers take one lr per tensor, not per slice. Shape: lr (H * C,).
        """
        for p, buf in zip((self.weight, self.bias), buffers, strict=True):
            buf.mul_(momentum).add_(p.grad).add_(p, alpha=weight_decay)
            p.sub_(buf * lr)
            p.grad = None

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor, chunk: int = 8192) -> list[float]:
        """Top-1 percent of every head (NaN for a head whose weights diverged). Shape: x (N, D), y (N,)."""
        self.eval()
        correct = torch.zeros(self.weight.shape[1] // self.num_classes, dtype=torch.long, device=x.device)
        for xc, yc in zip(x.split(chunk), y.split(chunk), strict=True):
            correct += (self(xc).argmax(dim=2) == yc[:, None]).sum(dim=0)  # (H,)
        acc = (100.0 * correct.double() / max(len(y), 1)).tolist()
        w = torch.cat([self.weight, self.bias[None]]).view(-1, len(acc), self.num_classes)  # (D + 1, H, C)
        finite = torch.isfinite(w).all(dim=2).all(dim=0)  # (H,)
        return [a if ok else math.nan for a, ok in zip(acc, finite.tolist(), strict=True)]


def _labelled(name: str, features: Any, labels: Any) -> tuple[Tensor, Tensor]:
    x = as_tensor(features, f"{name} features", ndim=2)
    y = as_tensor(labels, f"{name} labels", ndim=1)
    if y.shape[0] != x.shape[0]:
        raise ConfigError(f"{name} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    y = y.long().cpu()
    if (y < -1).any():
        raise ConfigError(f"{name} labels must be class indices >= 0, or -1 for unlabelled samples")
    keep = y >= 0
    return x.float().cpu()[keep], y[keep]


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the training loop single-threaded on CPU, then restore the thread count.

    Each step's matmuls are small (B x D x H*C, about 20 MFLOP at the defaults), too small to pay for
    OpenMP's fork/join: on a loaded 2-core box the 54k x 512, 8-head, 30-epoch probe took 57 s with 2 threads
    and 13.5 s with 1.
    """
    if device.type != "cpu":
        yield
        return
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def _fit(
    probe: _HeadGrid,
    x: Tensor,
    y: Tensor,
    head_lr: Tensor,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    gen: torch.Generator,
    progress: bool,
) -> None:
    """Train every head of ``probe`` at once. Shape: x (N, D), y (N,), head_lr (H * C,)."""
    n_heads = head_lr.shape[0] // probe.num_classes
    buffers = [torch.zeros_like(probe.weight), torch.zeros_like(probe.bias)]
    total, step = epochs * math.ceil(len(y) / batch_size), 0
    for _ in tqdm(range(epochs), desc="linear probe", disable=not progress):
        probe.train()
        perm = torch.randperm(len(y), generator=gen).to(x.device)
        x_epoch, y_epoch = x[perm], y[perm]  # one gather per epoch; batches are then views
        for xb, yb in zip(x_epoch.split(batch_size), y_epoch.split(batch_size), strict=True):
            if len(yb) > 1:  # BatchNorm cannot train on a single sample
                logits = probe(xb)  # (B, H, C)
                # per-head mean over the batch, summed over heads: each head gets exactly its own gradient
                loss = F.cross_entropy(logits.flatten(0, 1), yb.repeat_interleave(n_heads), reduction="sum")
                (loss / len(yb)).backward()
                cosine = 0.5 * (1.0 + math.cos(math.pi * step / total))  # per-step cosine decay to 0
                probe.sgd_step(head_lr * cosine, buffers, momentum=0.9, weight_decay=weight_decay)
            step += 1


def linear_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    lrs: Sequence[float] = defaults.LINEAR_LRS,
    batch_norm: Sequence[bool] = defaults.LINEAR_BATCH_NORM,
    epochs: int = defaults.LINEAR_EPOCHS,
    batch_size: int = defaults.LINEAR_BATCH_SIZE,
    weight_decay: float = defaults.LINEAR_WEIGHT_DECAY,
    val_fraction: float = defaults.LINEAR_VAL_FRACTION,
    seed: int = defaults.SEED,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Train every (lr, batch_norm) head at once on train minus val; report the best-on-val head's test top-1.

    Samples labelled -1 are ignored (train and test). The reported head is trained on train minus val only.
    Deterministic given ``seed`` (on a given device and thread count).

    Args:
        train_features: cached frozen features of the training set, used as given.
        train_labels: class indices, -1 for unlabelled samples.
        test_features: cached features of the test set.
        test_labels: class indices, -1 for unlabelled samples.
        lrs: learning rates of the grid (default 1.0, 0.3, 0.1, 0.03: the grid of the measured default job).
        batch_norm: whether a head sees ``BatchNorm1d(affine=False)`` features; one head per (lr, flag).
        epochs: passes over the training part.
        batch_size: samples per SGD step.
        weight_decay: SGD weight decay.
        val_fraction: share of the labelled training samples held out to choose the head, in (0, 1).
        seed: seeds the split, the head init and the batch order.
        num_classes: defaults to ``max(train and test labels) + 1``.
        device: where to train.
        progress: show a tqdm bar over epochs.

    Returns:
        ``top1`` (test %, chosen head), ``val_top1``, ``lr``, ``batch_norm``, ``epochs``, ``grid`` (one
        ``{"lr", "batch_norm", "val_top1"}`` per head; NaN marks a diverged head), ``n_train``, ``n_val``,
        ``n_test`` and ``protocol``.

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        test_labels: (N_test,).
    """
    lrs, flags = (
        list(dict.fromkeys(float(lr) for lr in lrs)),
        list(dict.fromkeys(bool(f) for f in batch_norm)),
    )
    if not lrs or min(lrs) <= 0 or not flags:
        raise ConfigError(f"lrs must be positive and non-empty and batch_norm non-empty, got {lrs}, {flags}")
    if epochs < 1 or batch_size < 2 or not 0 < val_fraction < 1:
        raise ConfigError(
            f"need epochs >= 1, batch_size >= 2 and 0 < val_fraction < 1; got {epochs}, {batch_size}, {val_fraction}"
        )
    x, y = _labelled("train", train_features, train_labels)
    x_test, y_test = _labelled("test", test_features, test_labels)
    if x.shape[1] != x_test.shape[1]:
        raise ConfigError(f"train and test feature dims differ: {x.shape[1]} vs {x_test.shape[1]}")
    n_val = max(1, round(val_fraction * len(y)))
    if len(y) - n_val < 2 or len(y_test) == 0:
        raise ConfigError(f"too few labelled samples: {len(y)} train (val {n_val}), {len(y_test)} test")
    num_classes = int(max(y.max(), y_test.max())) + 1 if num_classes is None else num_classes
    if max(int(y.max()), int(y_test.max())) >= num_classes:
        raise ConfigError(f"a label is >= num_classes={num_classes}")

    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    split = torch.randperm(len(y), generator=gen)
    x_val, y_val = x[split[:n_val]].to(device), y[split[:n_val]].to(device)
    x_fit, y_fit = x[split[n_val:]].to(device), y[split[n_val:]].to(device)
    configs = [(lr, flag) for flag in flags for lr in lrs]  # BN-major: heads of one flag are contiguous
    probe = _HeadGrid(x.shape[1], num_classes, [f for _, f in configs], gen).to(device)
    head_lr = torch.tensor([lr for lr, _ in configs], device=device).repeat_interleave(num_classes)  # (H * C,)
    with _one_thread_on_cpu(device):
        _fit(probe, x_fit, y_fit, head_lr, epochs, batch_size, weight_decay, gen, progress)

    val_acc = probe.accuracy(x_val, y_val)
    if all(math.isnan(a) for a in val_acc):
        raise ConfigError(f"every linear-probe head diverged; lower lrs {lrs} or use batch_norm=(True,)")
    best = max(range(len(configs)), key=lambda h: -math.inf if math.isnan(val_acc[h]) else val_acc[h])
    return {
        "top1": probe.accuracy(x_test.to(device), y_test.to(device))[best],
        "val_top1": val_acc[best],
        "lr": configs[best][0],
        "batch_norm": configs[best][1],
        "epochs": epochs,
        "grid": [{"lr": lr, "batch_norm": f, "val_top1": a} for (lr, f), a in zip(configs, val_acc, strict=True)],
        "n_train": len(y_fit),
        "n_val": n_val,
        "n_test": len(y_test),
        "protocol": PROTOCOL,
    }
