"""Weighted k-NN classification on frozen features: one exact FAISS search serves every k.

Protocol (docs/architecture.md, "Evaluation definitions"): L2-normalised float32 features, cosine similarity
(inner product of unit vectors), the top-k training neighbours, each voting for its label with weight
``exp(sim / T)``; the class with the largest summed weight wins (argmax: the lowest class index wins a tie).
Training samples labelled -1 (unlabelled) are dropped from the bank before the search.

The search is FAISS's exact brute-force ``IndexFlatIP`` (``GpuIndexFlatIP`` when the GPU build sees a
device), with a chunked ``torch.mm`` + ``topk`` fallback when faiss is not importable. The vote is written
here by hand because lightly's ``knn_predict`` lives in ``lightly.utils.benchmarking`` (which imports
Lightning), builds the whole query-by-bank similarity matrix at once and serves a single k per search.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.errors import ConfigError

BACKENDS = ("auto", "faiss-gpu", "faiss-cpu", "torch")
GPU_MAX_K = 2048  # faiss GPU_MAX_SELECTION_K (1024 in older/ROCm builds)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_has_gpu(faiss) -> bool:
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_backend(backend: str = "auto") -> str:
    """Turn ``"auto"`` into the backend that will run, and check that an explicit one is available.

    ``"auto"`` picks ``"faiss-gpu"`` (GPU faiss build and a visible GPU), then ``"faiss-cpu"``, then
    ``"torch"`` (faiss not importable).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown k-NN backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    faiss = _faiss()
    if backend == "auto":
        return "faiss-gpu" if _faiss_has_gpu(faiss) else "faiss-cpu" if faiss is not None else "torch"
    if backend.startswith("faiss") and faiss is None:
        raise ConfigError(f"k-NN backend {backend!r} needs faiss: pip install faiss-cpu (or faiss-gpu)")
    if backend == "faiss-gpu" and not _faiss_has_gpu(faiss):
        raise ConfigError("k-NN backend 'faiss-gpu' needs a GPU build of faiss and a visible GPU")
    return backend


def _check_features(name: str, x: Tensor) -> None:
    if x.ndim != 2:
        raise ConfigError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}")


def _faiss_index(train: Tensor, backend: str) -> tuple[object, object]:
    """An exact inner-product index holding ``train``, plus the GPU resources it needs alive (or None)."""
    faiss = _faiss()
    res = None
    d = train.shape[1]
    if backend == "faiss-gpu":
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = (train.device.index or 0) if train.device.type == "cuda" else 0
        cfg.useFloat16 = False  # fp16 storage is approximate; this index must be exact
        index = faiss.GpuIndexFlatIP(res, d, cfg)
    else:
        index = faiss.IndexFlatIP(d)
    index.add(train.detach().float().cpu().contiguous().numpy())
    return index, res


def search_topk(
    train: Tensor, test: Tensor, k: int, *, backend: str = "auto", chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """Exact top-k inner-product search of every ``test`` row against the ``train`` rows.

    Rows are used as given: L2-normalise them first for cosine similarity (``knn_classify`` does).
    Queries are searched ``chunk_size`` at a time, so the torch backend holds at most a
    ``(chunk_size, N_train)`` similarity block.

    Args:
        train: the bank to search.
        test: the queries.
        k: neighbours per query, ``1 <= k <= N_train`` (``<= 2048`` on the faiss GPU backend).
        backend: ``"auto"``, ``"faiss-gpu"``, ``"faiss-cpu"`` or ``"torch"`` (see `resolve_backend`).
        chunk_size: queries per search call.

    Shape:
        train: (N_train, D); test: (N_test, D). Returns similarities (N_test, k) float32, sorted descending,
        and indices into ``train`` (N_test, k) int64, both on ``test.device``.
    """
    _check_features("train features", train)
    _check_features("test features", test)
    if train.shape[1] != test.shape[1]:
        raise ConfigError(f"train and test feature dims differ: {train.shape[1]} vs {test.shape[1]}")
    if not 1 <= k <= train.shape[0]:
        raise ConfigError(f"k must be in [1, bank size = {train.shape[0]}], got {k}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    backend = resolve_backend(backend)
    if backend == "faiss-gpu" and k > GPU_MAX_K:
        raise ConfigError(f"faiss GPU search supports k <= {GPU_MAX_K}, got k={k}; use backend='faiss-cpu'")
    sims, idx = [], []
    if backend == "torch":
        bank_t = train.detach().float().t()  # (D, N_train)
        for q in test.detach().float().to(train.device).split(chunk_size):
            s, i = torch.mm(q, bank_t).topk(k, dim=1)  # (chunk, k)
            sims.append(s)
            idx.append(i)
    else:
        index, _resources = _faiss_index(train, backend)  # the GPU index must not outlive its resources
        for q in test.detach().float().cpu().split(chunk_size):
            s, i = index.search(q.contiguous().numpy(), k)
            sims.append(torch.from_numpy(s))
            idx.append(torch.from_numpy(i))
    if not sims:  # no queries
        return torch.empty(0, k, device=test.device), torch.empty(0, k, dtype=torch.long, device=test.device)
    return torch.cat(sims).to(test.device), torch.cat(idx).long().to(test.device)


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int | Sequence[int],
    temperature: float,
    num_classes: int | None = None,
    backend: str = "auto",
    chunk_size: int = 4096,
) -> dict[int, Tensor]:
    """Predict test labels by an ``exp(sim / T)``-weighted vote of the k nearest training samples.

    One search at ``max(k)`` serves every requested k. Training samples labelled -1 are ignored.

    Args:
        train_features: the labelled bank (clean, non-augmented features).
        train_labels: class indices in ``[0, num_classes)``, or -1 for unlabelled samples.
        test_features: the queries.
        k: one neighbour count or several.
        temperature: ``T`` in the vote weight ``exp(sim / T)``; must be > 0.
        num_classes: defaults to ``max(train_labels) + 1``.
        backend: search backend, see `resolve_backend`.
        chunk_size: queries per search call (bounds memory).

    Returns:
        ``{k: predicted labels}`` for every requested k; labels are int64 on the CPU.

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        each returned tensor: (N_test,).
    """
    ks = sorted({int(x) for x in k} if isinstance(k, Sequence) else {int(k)})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be a positive int or a non-empty sequence of them, got {k!r}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    _check_features("train features", train_features)
    _check_features("test features", test_features)
    if train_labels.ndim != 1 or train_labels.shape[0] != train_features.shape[0]:
        raise ConfigError(f"train_labels must have shape ({train_features.shape[0]},), got {tuple(train_labels.shape)}")
    labels = train_labels.detach().long().cpu()
    if (labels < -1).any():
        raise ConfigError("train_labels must be class indices >= 0, or -1 for unlabelled samples")
    keep = labels >= 0
    labels = labels[keep]
    if labels.numel() == 0:
        raise ConfigError("no labelled training samples (every train label is -1)")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.max()) >= num_classes:
        raise ConfigError(f"train label {int(labels.max())} is >= num_classes={num_classes}")
    if ks[-1] > labels.numel():
        raise ConfigError(f"k={ks[-1]} exceeds the number of labelled training samples ({labels.numel()})")

    bank = F.normalize(train_features.detach().float()[keep.to(train_features.device)], dim=1)
    queries = F.normalize(test_features.detach().float(), dim=1)
    sims, idx = search_topk(bank, queries, ks[-1], backend=backend, chunk_size=chunk_size)
    weights = (sims.cpu().double() / temperature).exp()  # (N_test, k_max); float64 keeps near-ties stable
    votes_for = labels[idx.cpu()]  # (N_test, k_max)
    preds = {}
    for kk in ks:
        scores = torch.zeros(queries.shape[0], num_classes, dtype=torch.float64)
        scores.scatter_add_(1, votes_for[:, :kk], weights[:, :kk])  # (N_test, C)
        preds[kk] = scores.argmax(dim=1)  # first maximum: lowest class index wins a tie
    return preds


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int | Sequence[int],
    temperature: float,
    num_classes: int | None = None,
    backend: str = "auto",
    chunk_size: int = 4096,
) -> dict[int, float]:
    """Top-1 percent of `knn_classify` for every requested k; test samples labelled -1 are not scored.

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        test_labels: (N_test,).
    """
    if test_labels.ndim != 1 or test_labels.shape[0] != test_features.shape[0]:
        raise ConfigError(f"test_labels must have shape ({test_features.shape[0]},), got {tuple(test_labels.shape)}")
    target = test_labels.detach().long().cpu()
    scored = target >= 0
    if not scored.any():
        raise ConfigError("no labelled test samples (every test label is -1)")
    preds = knn_classify(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        backend=backend,
        chunk_size=chunk_size,
    )
    return {kk: 100.0 * (p[scored] == target[scored]).double().mean().item() for kk, p in preds.items()}
