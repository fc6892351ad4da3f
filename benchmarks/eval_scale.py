"""Evaluation at scale: the new k-NN and RankMe paths against the old ones, in the same run (ratios new/old).

- k-NN, both protocols (instdisc k=200 T=0.1, dino k=20 T=0.07). Old: one FAISS ``IndexFlatIP`` per protocol
  (two searches), each over an ``F.normalize`` copy of the labelled bank plus the index's own copy. New:
  `ssl_toolkit.eval.knn_protocols`, one search at k=200, the bank copied once and normalised in place, FAISS's
  index-free ``knn`` (torch fallback without faiss).
- RankMe. Old: ``torch.linalg.svdvals`` of the whole float64 matrix. New: `ssl_toolkit.eval.rankme`, a
  float64 Gram accumulated over row chunks + ``eigvalsh``.
- Raw-pixel floor: the float64 matrix the old RankMe would have built at the images' native size against the
  bounded one (images above 32 px resized to 32 px), computed from the sizes (the old one is not run).
- LiDAR and alpha-ReQ: new only (no old path), absolute times at the eval defaults.

Each measured pair alternates old and new ``--repeats`` times (old first on odd rounds, new first on even
ones) and reports medians; the output names the machine and every size. ``--tiny`` runs seconds-long
sizes to check that the script works; it measures nothing worth quoting.

    python benchmarks/eval_scale.py                 # 50k x 10k x 512 k-NN, 25,600 x {512, 2048} RankMe
    python benchmarks/eval_scale.py --tiny
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.eval import alpha_req, knn_protocols, lidar, rankme
from ssl_toolkit.eval.defaults import KNN_PROTOCOLS, LIDAR_SAMPLES, LIDAR_VIEWS, RANKME_SAMPLES, RAW_PIXELS_MAX_SIZE
from ssl_toolkit.eval.knn import resolve_backend


def old_knn_two_protocols(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, backend: str) -> dict:
    """The previous `score_features` k-NN: one `knn_accuracy` (bank copy, normalise copy, index, search) per
    protocol."""
    out = {}
    for name, (k, temperature) in KNN_PROTOCOLS.items():
        keep = train_y >= 0
        labels = train_y[keep]
        bank = F.normalize(train_f.float()[keep], dim=1)  # copy 1 (index) + copy 2 (normalize)
        queries = F.normalize(test_f.float(), dim=1)
        if backend == "torch":
            sims, idx = [], []
            for q in queries.split(4096):
                s, i = torch.mm(q, bank.t()).topk(k, dim=1)
                sims.append(s)
                idx.append(i)
            sims, idx = torch.cat(sims), torch.cat(idx)
        else:
            import faiss

            index = faiss.IndexFlatIP(bank.shape[1])
            index.add(bank.contiguous().numpy())  # copy 3: the index's own storage
            parts = [index.search(q.contiguous().numpy(), k) for q in queries.split(4096)]
            sims = torch.cat([torch.from_numpy(s) for s, _ in parts])
            idx = torch.cat([torch.from_numpy(i) for _, i in parts]).long()
        weights = (sims.double() / temperature).exp()
        scores = torch.zeros(len(queries), int(labels.max()) + 1, dtype=torch.float64)
        scores.scatter_add_(1, labels[idx], weights)
        out[name] = round(100.0 * (scores.argmax(1) == test_y).double().mean().item(), 4)
    return out


def old_rankme(z: Tensor, eps: float = 1e-7) -> float:
    """The previous RankMe: a float64 SVD of the whole matrix."""
    sigma = torch.linalg.svdvals(z.to(torch.float64))
    p = sigma / sigma.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alternate(
    old: Callable[[], object], new: Callable[[], object], repeats: int
) -> tuple[float, float, object, object]:
    """Median seconds of ``old`` and ``new`` over ``repeats`` alternating rounds, and their last results."""
    times: dict[str, list[float]] = {"old": [], "new": []}
    results: dict[str, object] = {}
    for r in range(repeats):
        order = (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
        for name, fn in order:
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["old"]), statistics.median(times["new"]), results["old"], results["new"]


def _features(n: int, d: int, classes: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, d, generator=g), dim=1)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + 2.0 / d**0.5 * torch.randn(n, d, generator=g), y  # noise of norm 2 around unit class centres


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        import faiss

        faiss_info = f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} OpenMP threads)"
    except ImportError:
        faiss_info = "faiss not installed"
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {faiss_info}, GPU: {gpu}"
    )


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes, to check the script runs")
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512, help="k-NN feature width")
    parser.add_argument("--rankme-dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--rankme-samples", type=int, default=RANKME_SAMPLES)
    parser.add_argument("--image-size", type=int, default=224, help="native image side for the raw-pixel line")
    parser.add_argument("--backend", default="auto", help="k-NN backend (auto, faiss-cpu, faiss-gpu, torch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.tiny:
        args.n_train, args.n_test, args.dim, args.rankme_dims, args.rankme_samples = 2000, 500, 64, [128], 2048
        args.repeats = 1
    backend = resolve_backend(args.backend)
    print(f"machine: {_machine()}")
    print(f"k-NN backend: {backend}; repeats: {args.repeats} (alternating, medians)")

    feats, labels = _features(args.n_train + args.n_test, args.dim, 10, 0)  # one set of class centres
    train_f, test_f = feats[: args.n_train], feats[args.n_train :]
    train_y, test_y = labels[: args.n_train], labels[args.n_train :]
    t_old, t_new, acc_old, acc_new = alternate(
        lambda: old_knn_two_protocols(train_f, train_y, test_f, test_y, backend),
        lambda: knn_protocols(train_f, train_y, test_f, test_y, backend=backend),
        args.repeats,
    )
    bank = args.n_train * args.dim * 4
    print(f"\nk-NN both protocols, {args.n_train} train x {args.n_test} test x {args.dim}:")
    print(f"  old (2 searches): {t_old:.2f} s   new (1 search): {t_new:.2f} s   ratio new/old {t_new / t_old:.3f}")
    print(f"  top-1 old {acc_old}  new { {k: round(v, 4) for k, v in acc_new.items()} }")
    print(f"  bank copies besides the caller's: old 3 ({_gib(3 * bank)} per protocol), new 1 ({_gib(bank)})")

    for d in args.rankme_dims:
        z, _ = _features(args.rankme_samples, d, 10, 2)
        t_old, t_new, r_old, r_new = alternate(lambda z=z: old_rankme(z), lambda z=z: rankme(z), args.repeats)
        print(f"\nRankMe, {args.rankme_samples} x {d} float32:")
        print(f"  old (float64 SVD): {t_old:.2f} s   new (float64 Gram + eigvalsh): {t_new:.2f} s   "
              f"ratio new/old {t_new / t_old:.3f}")  # fmt: skip
        print(f"  RankMe old {r_old:.6f} new {r_new:.6f} (relative difference {abs(r_new - r_old) / r_old:.1e})")
        print(f"  float64 memory: old {_gib(args.rankme_samples * d * 8)} (whole matrix), new {_gib(d * d * 8)}")

    native = 3 * args.image_size**2
    bounded = 3 * min(args.image_size, RAW_PIXELS_MAX_SIZE) ** 2
    print(f"\nraw-pixel floor at {args.image_size} px, {args.rankme_samples} samples (computed, not run):")
    print(f"  old: {args.rankme_samples} x {native} float64 = {_gib(args.rankme_samples * native * 8)}; new: images "
          f"resized to {RAW_PIXELS_MAX_SIZE} px, {bounded} features, Gram {_gib(bounded * bounded * 8)}")  # fmt: skip

    n_lidar = min(LIDAR_SAMPLES, args.rankme_samples)
    for d in args.rankme_dims:
        views = torch.randn(n_lidar, LIDAR_VIEWS, d, generator=torch.Generator().manual_seed(3))
        start = time.perf_counter()
        value = lidar(views)
        t_lidar = time.perf_counter() - start
        z, _ = _features(args.rankme_samples, d, 10, 4)
        start = time.perf_counter()
        alpha = alpha_req(z)
        t_alpha = time.perf_counter() - start
        print(f"\nnew only, D={d}: LiDAR {n_lidar} x {LIDAR_VIEWS} views {t_lidar:.2f} s (value {value:.1f}); "
              f"alpha-ReQ {args.rankme_samples} samples {t_alpha:.2f} s (value {alpha:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
