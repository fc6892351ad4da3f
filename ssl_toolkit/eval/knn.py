"""Weighted k-NN classification on frozen features: one exact search at max(k) serves every k and protocol.

Protocol (docs/evaluation.md, "k-NN"): L2-normalised float32 features, cosine similarity (inner product of
unit vectors), the top-k training neighbours, each voting for its label with weight ``exp(sim / T)``; the
class with the largest summed weight wins (argmax: the lowest class index wins a tie). Training samples
labelled -1 (unlabelled) are dropped from the bank before the search. `knn_protocols` scores the named
protocols (``instdisc`` k=200 T=0.1, ``dino`` k=20 T=0.07) from one search at the largest k.

Memory: the labelled bank is copied once to float32 and L2-normalised in place (no second copy); queries are
normalised one chunk at a time. The exact search is FAISS's brute-force ``knn`` function on the CPU (the
same kernel as ``IndexFlatIP``, without copying the bank into an index), ``GpuIndexFlatIP`` when the GPU
build sees a device, and a chunked ``torch.mm`` + ``topk`` fallback when faiss is not importable, whose
query chunks are sized from the bank so that a (chunk, N_train) similarity block stays under
``KNN_TORCH_BLOCK_ELEMENTS`` (256 MiB of float32) whatever the bank size.

The vote is written here by hand because lightly's ``knn_predict`` lives in ``lightly.utils.benchmarking``
(which imports Lightning), builds the whole query-by-bank similarity matrix at once and serves a single k and
temperature per search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import defaults
from ssl_toolkit.eval.arrays import as_tensor

BACKENDS = ("auto", "faiss-gpu", "faiss-cpu", "torch")
GPU_MAX_K = 2048  # faiss GPU_MAX_SELECTION_K (1024 in older/ROCm builds)
_NORM_EPS = 1e-12  # as torch.nn.functional.normalize


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


def torch_query_chunk(n_bank: int, block_elements: int | None = None) -> int:
    """Queries per torch ``mm`` so that the (chunk, n_bank) float32 block holds at most ``block_elements``
    (default ``KNN_TORCH_BLOCK_ELEMENTS``, 2**26: 256 MiB)."""
    block = defaults.KNN_TORCH_BLOCK_ELEMENTS if block_elements is None else block_elements
    return max(1, block // max(1, n_bank))


def normalized_bank(features: Any, keep: Tensor | None = None) -> Tensor:
    """The rows of ``features`` selected by ``keep`` as one float32 copy, L2-normalised in place.

    Shape:
        features: (N, D); keep: (N,) bool or None (all rows); returns (N_kept, D) float32, contiguous.
    """
    x = as_tensor(features, "train features", ndim=2)
    if keep is not None and not bool(keep.all()):
        bank = x[keep.to(x.device)].to(torch.float32)  # indexing copies; .to is a no-op for float32
    else:
        bank = x.to(torch.float32, copy=True)
    bank = bank.contiguous()
    bank.div_(torch.linalg.vector_norm(bank, dim=1, keepdim=True).clamp_min_(_NORM_EPS))
    return bank


class _Searcher:
    """Exact top-k inner-product search against a fixed bank, with the bank held once."""

    def __init__(self, bank: Tensor, backend: str) -> None:
        """``backend`` as returned by `resolve_backend`."""
        self.bank, self.backend, self.faiss = bank, backend, _faiss()
        self._index = self._resources = None
        if self.backend == "faiss-gpu":
            res = self.faiss.StandardGpuResources()
            cfg = self.faiss.GpuIndexFlatConfig()
            cfg.device = (bank.device.index or 0) if bank.device.type == "cuda" else 0
            cfg.useFloat16 = False  # fp16 storage is approximate; this search must be exact
            self._index = self.faiss.GpuIndexFlatIP(res, bank.shape[1], cfg)
            self._index.add(bank.cpu().numpy())  # the index keeps its own copy in GPU memory
            self._resources = res  # the index must not outlive its resources
        elif self.backend == "faiss-cpu":
            self._bank_np = bank.cpu().numpy()  # no copy for a CPU tensor

    def query_chunk(self) -> int:
        if self.backend == "torch":
            return torch_query_chunk(self.bank.shape[0])
        return defaults.KNN_FAISS_QUERY_CHUNK

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Similarities (Q, k) float32 and bank indices (Q, k) int64 of one chunk of queries, on the CPU."""
        if self.backend == "torch":
            s, i = torch.mm(queries.to(self.bank.device, torch.float32), self.bank.T).topk(k, dim=1)  # (Q, k)
            return s.cpu(), i.cpu()
        q = queries.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.backend == "faiss-gpu":
            s, i = self._index.search(q, k)
        else:
            s, i = self.faiss.knn(q, self._bank_np, k, metric=self.faiss.METRIC_INNER_PRODUCT)
        return torch.from_numpy(s), torch.from_numpy(i).long()


def _check_k(k: int, n_bank: int, backend: str) -> None:
    if not 1 <= k <= n_bank:
        raise ConfigError(f"k must be in [1, bank size = {n_bank}], got {k}")
    if backend == "faiss-gpu" and k > GPU_MAX_K:
        raise ConfigError(f"faiss GPU search supports k <= {GPU_MAX_K}, got k={k}; use backend='faiss-cpu'")


def search_topk(
    train: Any, test: Any, k: int, *, backend: str = "auto", chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Exact top-k inner-product search of every ``test`` row against the ``train`` rows (used as given).

    L2-normalise the rows first for cosine similarity (`knn_classify` does).

    Args:
        train: the bank to search (numpy array or tensor).
        test: the queries.
        k: neighbours per query, ``1 <= k <= N_train`` (``<= 2048`` on the faiss GPU backend).
        backend: ``"auto"``, ``"faiss-gpu"``, ``"faiss-cpu"`` or ``"torch"`` (see `resolve_backend`).
        chunk_size: queries per search call; None sizes torch chunks by the bank (bounded memory).

    Shape:
        train: (N_train, D); test: (N_test, D). Returns similarities (N_test, k) float32, sorted descending,
        and indices into ``train`` (N_test, k) int64, both on ``test.device`` (CPU for numpy input).
    """
    train_t = as_tensor(train, "train features", ndim=2)
    test_t = as_tensor(test, "test features", ndim=2)
    if train_t.shape[1] != test_t.shape[1]:
        raise ConfigError(f"train and test feature dims differ: {train_t.shape[1]} vs {test_t.shape[1]}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    backend = resolve_backend(backend)
    _check_k(k, train_t.shape[0], backend)
    bank = train_t if train_t.dtype == torch.float32 else train_t.float()
    searcher = _Searcher(bank.contiguous(), backend)
    parts = [searcher.search(q, k) for q in test_t.split(chunk_size or searcher.query_chunk())]
    if not parts:  # no queries
        return torch.empty(0, k, device=test_t.device), torch.empty(0, k, dtype=torch.long, device=test_t.device)
    return torch.cat([s for s, _ in parts]).to(test_t.device), torch.cat([i for _, i in parts]).to(test_t.device)


def _labelled_bank(train_features: Any, train_labels: Any) -> tuple[Tensor, Tensor]:
    """The normalised labelled bank and its labels (CPU int64). Shape: (N_kept, D), (N_kept,)."""
    features = as_tensor(train_features, "train features", ndim=2)
    labels = as_tensor(train_labels, "train_labels", ndim=1).long().cpu()
    if labels.shape[0] != features.shape[0]:
        raise ConfigError(f"train_labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    if (labels < -1).any():
        raise ConfigError("train_labels must be class indices >= 0, or -1 for unlabelled samples")
    keep = labels >= 0
    if not keep.any():
        raise ConfigError("no labelled training samples (every train label is -1)")
    return normalized_bank(features, keep), labels[keep]


def _neighbours(
    bank: Tensor, test_features: Any, k: int, backend: str, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """Top-k cosine similarities (float64) and bank indices of L2-normalised query chunks, on the CPU."""
    queries = as_tensor(test_features, "test features", ndim=2)
    if queries.shape[1] != bank.shape[1]:
        raise ConfigError(f"train and test feature dims differ: {bank.shape[1]} vs {queries.shape[1]}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    backend = resolve_backend(backend)
    _check_k(k, bank.shape[0], backend)
    searcher = _Searcher(bank, backend)
    sims, idx = [torch.empty(0, k, dtype=torch.float64)], [torch.empty(0, k, dtype=torch.long)]
    for q in queries.split(chunk_size or searcher.query_chunk()):
        q = q.to(torch.float32, copy=True)
        q.div_(torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min_(_NORM_EPS))
        s, i = searcher.search(q, k)
        sims.append(s.double())  # float64 votes keep near-ties stable
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _vote(sims: Tensor, neighbour_labels: Tensor, k: int, temperature: float, num_classes: int) -> Tensor:
    """Predicted labels from the first ``k`` neighbours. Shape: (N_test, k_max) x2 -> (N_test,)."""
    scores = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64)
    scores.scatter_add_(1, neighbour_labels[:, :k], (sims[:, :k] / temperature).exp())  # (N_test, C)
    return scores.argmax(dim=1)  # first maximum: lowest class index wins a tie


def _k_and_temperature(
    k: int | Sequence[int] | None, temperature: float | None, protocol: str | None
) -> tuple[list[int], float]:
    if protocol is not None:
        if k is not None or temperature is not None:
            raise ConfigError("give either protocol= or k= and temperature=, not both")
        if protocol not in defaults.KNN_PROTOCOLS:
            raise ConfigError(f"unknown k-NN protocol {protocol!r}; accepted: {', '.join(defaults.KNN_PROTOCOLS)}")
        k, temperature = defaults.KNN_PROTOCOLS[protocol]
    if k is None or temperature is None:
        raise ConfigError("give k= and temperature=, or protocol='dino' (k=20, T=0.07) / 'instdisc' (k=200, T=0.1)")
    ks = sorted({int(x) for x in k} if isinstance(k, Sequence) else {int(k)})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be a positive int or a non-empty sequence of them, got {k!r}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    return ks, float(temperature)


def _num_classes(labels: Tensor, num_classes: int | None) -> int:
    found = int(labels.max()) + 1
    if num_classes is not None and found > num_classes:
        raise ConfigError(f"train label {found - 1} is >= num_classes={num_classes}")
    return num_classes or found


def knn_classify(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    *,
    k: int | Sequence[int] | None = None,
    temperature: float | None = None,
    protocol: str | None = None,
    num_classes: int | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> dict[int, Tensor]:
    """Predict test labels by an ``exp(sim / T)``-weighted vote of the k nearest training samples.

    One search at ``max(k)`` serves every requested k. Training samples labelled -1 are ignored.

    Args:
        train_features: the labelled bank (clean, non-augmented features); numpy array or tensor.
        train_labels: class indices in ``[0, num_classes)``, or -1 for unlabelled samples.
        test_features: the queries.
        k: one neighbour count or several (with ``temperature``).
        temperature: ``T`` in the vote weight ``exp(sim / T)``; must be > 0.
        protocol: instead of k and temperature: ``"dino"`` (k=20, T=0.07) or ``"instdisc"`` (k=200, T=0.1).
        num_classes: defaults to ``max(train_labels) + 1``.
        backend: search backend, see `resolve_backend`.
        chunk_size: queries per search call; None: sized from the bank (torch) or 4096 (faiss).

    Returns:
        ``{k: predicted labels}`` for every requested k; labels are int64 on the CPU.

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        each returned tensor: (N_test,).
    """
    ks, temperature = _k_and_temperature(k, temperature, protocol)
    bank, labels = _labelled_bank(train_features, train_labels)
    num_classes = _num_classes(labels, num_classes)
    if ks[-1] > labels.numel():
        raise ConfigError(f"k={ks[-1]} exceeds the number of labelled training samples ({labels.numel()})")
    sims, idx = _neighbours(bank, test_features, ks[-1], backend, chunk_size)
    votes_for = labels[idx]  # (N_test, k_max)
    return {kk: _vote(sims, votes_for, kk, temperature, num_classes) for kk in ks}


def _scored_targets(test_labels: Any, n_test: int) -> tuple[Tensor, Tensor]:
    target = as_tensor(test_labels, "test_labels", ndim=1).long().cpu()
    if target.shape[0] != n_test:
        raise ConfigError(f"test_labels must have shape ({n_test},), got {tuple(target.shape)}")
    scored = target >= 0
    if not scored.any():
        raise ConfigError("no labelled test samples (every test label is -1)")
    return target, scored


def _percent(pred: Tensor, target: Tensor, scored: Tensor) -> float:
    return 100.0 * (pred[scored] == target[scored]).double().mean().item()


def knn_accuracy(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    k: int | Sequence[int] | None = None,
    temperature: float | None = None,
    protocol: str | None = None,
    num_classes: int | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Top-1 percent of `knn_classify` for every requested k; test samples labelled -1 are not scored.

    ``protocol="dino"`` / ``"instdisc"`` stands for the protocol's k and temperature (see `knn_classify`).

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        test_labels: (N_test,).
    """
    n_test = as_tensor(test_features, "test features", ndim=2).shape[0]
    target, scored = _scored_targets(test_labels, n_test)
    preds = knn_classify(
        train_features, train_labels, test_features, k=k, temperature=temperature, protocol=protocol,
        num_classes=num_classes, backend=backend, chunk_size=chunk_size,
    )  # fmt: skip
    return {kk: _percent(p, target, scored) for kk, p in preds.items()}


def knn_protocols(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    protocols: Sequence[str] = tuple(defaults.KNN_PROTOCOLS),
    num_classes: int | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Top-1 percent of every named protocol from ONE search at the largest k.

    Each protocol's k is capped at the number of labelled training samples (tiny banks still get a score).

    Returns:
        ``{protocol: top-1 %}``, e.g. ``{"instdisc": 83.3, "dino": 85.6}``.

    Shape:
        train_features: (N_train, D); train_labels: (N_train,); test_features: (N_test, D);
        test_labels: (N_test,).
    """
    unknown = [p for p in protocols if p not in defaults.KNN_PROTOCOLS]
    if unknown or not protocols:
        raise ConfigError(f"unknown k-NN protocols {unknown}; accepted: {', '.join(defaults.KNN_PROTOCOLS)}")
    n_test = as_tensor(test_features, "test features", ndim=2).shape[0]
    target, scored = _scored_targets(test_labels, n_test)
    bank, labels = _labelled_bank(train_features, train_labels)
    num_classes = _num_classes(labels, num_classes)
    settings = {p: (min(defaults.KNN_PROTOCOLS[p][0], labels.numel()), defaults.KNN_PROTOCOLS[p][1]) for p in protocols}
    sims, idx = _neighbours(bank, test_features, max(k for k, _ in settings.values()), backend, chunk_size)
    votes_for = labels[idx]  # (N_test, k_max)
    return {p: _percent(_vote(sims, votes_for, k, t, num_classes), target, scored) for p, (k, t) in settings.items()}
