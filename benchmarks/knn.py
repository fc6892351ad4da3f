"""Time ``ssl_toolkit.eval.knn_classify`` (FAISS) against lightly's brute-force ``knn_predict``.

Both run the same weighted k-NN vote (cosine top-k, weights ``exp(sim / T)``) on the same L2-normalised
float32 features; the script prints both wall times, their ratio, the fraction of identical top-1 predictions
and the machine. lightly's ``knn_predict`` is called on query batches of ``--lightly-batch`` rows, as its
``KNNClassifier`` does once per validation batch. If lightly's benchmarking module cannot be imported (it
pulls in Lightning), a torch copy of the same maths stands in, and the output says so.

    python benchmarks/knn.py                                   # 50k train x 10k test x 512, k=200, T=0.1
    python benchmarks/knn.py --n-train 5000 --n-test 1000      # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.eval.knn import knn_classify, resolve_backend


def _torch_knn_predict(feature, feature_bank, feature_labels, num_classes, knn_k=200, knn_t=0.1) -> Tensor:
    """lightly 1.6.0's ``knn_predict`` maths, for when its module cannot be imported."""
    sim_weight, sim_indices = torch.mm(feature, feature_bank).topk(k=knn_k, dim=-1)  # (B, k)
    sim_labels = torch.gather(feature_labels.expand(feature.size(0), -1), dim=-1, index=sim_indices)
    one_hot = F.one_hot(sim_labels, num_classes).float()  # (B, k, C)
    scores = (one_hot * (sim_weight / knn_t).exp().unsqueeze(-1)).sum(dim=1)  # (B, C)
    return scores.argsort(dim=-1, descending=True)


def _lightly_knn_predict():
    try:
        from lightly.utils.benchmarking.knn import knn_predict
    except ImportError as err:
        return _torch_knn_predict, f"torch copy of lightly's knn_predict (lightly import failed: {err})"
    import lightly

    return knn_predict, f"lightly {lightly.__version__} lightly.utils.benchmarking.knn.knn_predict"


def _data(n_train: int, n_test: int, dim: int, classes: int, noise: float, seed: int):
    """Unit cluster centres plus Gaussian noise of norm about ``noise``, L2-normalised, float32."""
    g = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    y_train, y_test = (
        torch.randint(0, classes, (n_train,), generator=g),
        torch.randint(0, classes, (n_test,), generator=g),
    )
    x_train = F.normalize(mu[y_train] + noise / dim**0.5 * torch.randn(n_train, dim, generator=g), dim=1)
    x_test = F.normalize(mu[y_test] + noise / dim**0.5 * torch.randn(n_test, dim, generator=g), dim=1)
    return x_train, y_train, x_test, y_test


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--noise", type=float, default=8.0, help="noise norm per sample (centres have norm 1)")
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--backend", default="auto", help="knn_classify backend (auto, faiss-cpu, ...)")
    parser.add_argument("--lightly-batch", type=int, default=1024, help="queries per knn_predict call")
    parser.add_argument("--repeats", type=int, default=1, help="time each side this many times, keep the best")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    knn_predict, lightly_name = _lightly_knn_predict()
    backend = resolve_backend(args.backend)
    x_train, y_train, x_test, y_test = _data(args.n_train, args.n_test, args.dim, args.classes, args.noise, args.seed)
    bank_t = x_train.t().contiguous()  # lightly wants the bank as (D, N)

    # warm-up on a slice, so one-off costs (thread pools, first allocations) are not timed
    knn_classify(x_train[:1000], y_train[:1000], x_test[:64], k=10, temperature=args.temperature, backend=backend)
    knn_predict(x_test[:64], bank_t[:, :1000], y_train[:1000], args.classes, 10, args.temperature)

    t_ours, t_theirs = float("inf"), float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = knn_classify(
            x_train,
            y_train,
            x_test,
            k=args.k,
            temperature=args.temperature,
            num_classes=args.classes,
            backend=backend,
        )[args.k]
        t_ours = min(t_ours, time.perf_counter() - start)

        start = time.perf_counter()
        batches = x_test.split(args.lightly_batch)
        theirs = torch.cat(
            [knn_predict(q, bank_t, y_train, args.classes, args.k, args.temperature)[:, 0] for q in batches]
        )
        t_theirs = min(t_theirs, time.perf_counter() - start)

    acc_ours = 100 * (ours == y_test).double().mean()
    acc_theirs = 100 * (theirs == y_test).double().mean()
    print(f"data: {args.n_train} train x {args.n_test} test x {args.dim} features, {args.classes} classes")
    print(f"k={args.k}, T={args.temperature}; machine: {_machine()}")
    print(f"times: best of {args.repeats}")
    print(f"ssl_toolkit knn_classify [{backend}]: {t_ours:.2f} s, top-1 {acc_ours:.2f} %")
    print(f"{lightly_name} [batches of {args.lightly_batch}]: {t_theirs:.2f} s, top-1 {acc_theirs:.2f} %")
    print(f"speed-up (lightly / ssl_toolkit): {t_theirs / t_ours:.2f}x")
    print(f"identical top-1 predictions: {(ours == theirs).double().mean():.4%}")


if __name__ == "__main__":
    main()
