"""GPU check section: k-NN and RankMe of ``ssl_toolkit.eval`` on the device, checked against the CPU path.

k-NN goes through ``knn_classify(..., backend="torch")`` with the bank on the device: faiss-gpu 1.15.1 is a
135 MB wheel built for CUDA 12 and cannot travel to the lent machine (64 MiB limit, CUDA 13), so the GPU
search there is the torch path (``torch.mm`` + ``topk`` in query chunks).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from ssl_toolkit.eval import knn_classify, rankme

if TYPE_CHECKING:
    from gpu_check import Check

# (bank, dim, queries, classes, k, CPU-checked queries); tiny: the CPU dry run
KNN_FULL, KNN_TINY = (1_000_000, 512, 10_000, 100, 200, 1000), (2000, 64, 200, 10, 20, 100)
RANKME_FULL, RANKME_TINY = (25_600, 2048, 64), (512, 64, 16)  # (samples, width, true rank of the signal)


def clustered_features(centres: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples around the class ``centres`` (noise of std 2), so that neighbour votes rarely tie.

    Shape:
        centres: (C, D). Returns features (n, D) float32 and labels (n,) int64, on the device of ``centres``.
    """
    g = torch.Generator(device=centres.device).manual_seed(seed)
    labels = torch.randint(0, centres.shape[0], (n,), generator=g, device=centres.device)
    noise = torch.randn(n, centres.shape[1], generator=g, device=centres.device)
    return centres[labels] + 2.0 * noise, labels


def _timed(check: Check, fn):
    check.sync()
    t0 = time.perf_counter()
    out = fn()
    check.sync()
    return out, time.perf_counter() - t0


def knn_rows(check: Check) -> tuple[list[dict[str, Any]], list[str]]:
    bank, dim, queries, classes, k, n_cpu = KNN_TINY if check.tiny else KNN_FULL
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)).to(check.device)  # (C, D)
    train, train_y = clustered_features(centres, bank, seed=1)
    test, test_y = clustered_features(centres, queries, seed=2)
    kwargs = {"k": k, "temperature": 0.1, "num_classes": classes, "backend": "torch"}
    knn_classify(train[:1000], train_y[:1000], test[:10], **{**kwargs, "k": min(k, 1000)})  # warm-up
    preds, seconds = _timed(check, lambda: knn_classify(train, train_y, test, **kwargs)[k])
    cpu_train, cpu_y, cpu_test = train.cpu(), train_y.cpu(), test[:n_cpu].cpu()
    cpu_preds, cpu_seconds = _timed(check, lambda: knn_classify(cpu_train, cpu_y, cpu_test, **kwargs)[k])
    same = (preds[:n_cpu] == cpu_preds).float().mean().item()
    rows = [
        {"path": f"knn_classify, torch backend on {check.device.type}", "bank": bank, "dim": dim, "queries": queries,
         "k": k, "seconds": round(seconds, 3), "queries_per_s": queries / seconds,
         "top1_vs_true_class_%": 100 * (preds == test_y.cpu()).float().mean().item()},
        {"path": "knn_classify, torch backend on cpu (same bank)", "bank": bank, "dim": dim, "queries": n_cpu,
         "k": k, "seconds": round(cpu_seconds, 3), "queries_per_s": n_cpu / cpu_seconds,
         "identical_predictions_%": 100 * same},
    ]  # fmt: skip
    notes = [
        f"k-NN: {bank:,} x {dim} L2-normalised float32 bank of {classes} clustered classes, k = {k}, T = 0.1; the "
        f"first {n_cpu:,} queries were also searched on the CPU and {100 * same:.2f} % of their predictions match "
        f"(float32 matmul precision `{torch.get_float32_matmul_precision()}`).",
        "faiss-gpu 1.15.1 is a 135 MB wheel built for CUDA 12 and cannot travel to the lent machine (64 MiB, "
        "CUDA 13): the device search is `knn_classify(backend='torch')` (torch.mm + topk in 4096-query chunks).",
    ]
    return rows, notes


def rankme_rows(check: Check) -> tuple[list[dict[str, Any]], list[str]]:
    n, dim, rank = RANKME_TINY if check.tiny else RANKME_FULL
    g = torch.Generator(device=check.device).manual_seed(2)
    signal = torch.randn(n, rank, generator=g, device=check.device) @ torch.randn(
        rank, dim, generator=g, device=check.device
    )
    z = signal + 0.05 * torch.randn(n, dim, generator=g, device=check.device)  # (n, dim)
    rankme(z[:256])  # warm-up (solver handles)
    value, seconds = _timed(check, lambda: rankme(z))
    cpu_value, cpu_seconds = _timed(check, lambda: rankme(z.cpu()))
    rows = [
        {"path": f"rankme on {check.device.type}", "samples": n, "width": dim, "rankme": value, "seconds": seconds},
        {"path": "rankme on cpu (same matrix)", "samples": n, "width": dim, "rankme": cpu_value,
         "seconds": cpu_seconds, "abs_difference": abs(value - cpu_value)},
    ]  # fmt: skip
    notes = [f"RankMe: float64 SVD (`torch.linalg.svdvals`) of a rank-{rank} signal plus noise, {n:,} x {dim}."]
    return rows, notes


def knn_rankme_section(check: Check) -> dict[str, Any]:
    """k-NN on a large bank and RankMe on a large matrix, on the device and on the CPU."""
    knn, knn_notes = knn_rows(check)
    if check.device.type == "cuda":
        torch.cuda.empty_cache()
    rank, rank_notes = rankme_rows(check)
    return {"notes": knn_notes + rank_notes, "tables": {"k-NN": knn, "RankMe": rank}}
