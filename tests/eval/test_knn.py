"""k-NN: agreement with a brute-force float64 vote, the reference JSON numbers, -1 labels and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import knn, knn_accuracy, knn_classify
from tests.conftest import reference

BACKENDS = [
    "torch",
    pytest.param("faiss-cpu", marks=pytest.mark.skipif(knn._faiss() is None, reason="no faiss")),
]


def _reference() -> dict:
    return reference("views_eval_reference.json")["knn"]


def brute_force(train, train_labels, test, k: int, temperature: float, num_classes: int) -> torch.Tensor:
    """Independent float64 reference: full similarity matrix, topk, exp(sim/T) votes summed per class."""
    sims = F.normalize(test.double(), dim=1) @ F.normalize(train.double(), dim=1).T  # (N_test, N_train)
    top, idx = sims.topk(k, dim=1)
    scores = torch.zeros(len(test), num_classes, dtype=torch.float64)
    scores.scatter_add_(1, train_labels[idx], (top / temperature).exp())
    return scores.argmax(dim=1)


def _blobs(seed: int, n_train: int, n_test: int, dim: int = 32, classes: int = 7, noise: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(classes, dim, generator=g)
    y_train = torch.randint(0, classes, (n_train,), generator=g)
    y_test = torch.randint(0, classes, (n_test,), generator=g)
    x_train = mu[y_train] + noise * torch.randn(n_train, dim, generator=g)
    x_test = mu[y_test] + noise * torch.randn(n_test, dim, generator=g)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_brute_force_reference(backend: str) -> None:
    x_train, y_train, x_test, y_test = _blobs(0, 600, 300)
    ks = [1, 5, 20, 100]
    preds = knn_classify(x_train, y_train, x_test, k=ks, temperature=0.1, backend=backend, chunk_size=128)
    assert sorted(preds) == ks
    for k in ks:
        ref = brute_force(x_train, y_train, x_test, k, 0.1, 7)
        assert preds[k].dtype == torch.int64 and preds[k].device.type == "cpu" and preds[k].shape == (300,)
        n_diff = int((preds[k] != ref).sum())
        assert n_diff <= 1, f"k={k}: {n_diff} predictions differ from the float64 reference"
        acc, ref_acc = (preds[k] == y_test).double().mean(), (ref == y_test).double().mean()
        assert abs(acc - ref_acc) <= n_diff / len(y_test)


def test_backends_and_chunking_agree() -> None:
    x_train, _, x_test, _ = _blobs(1, 500, 97)
    bank, queries = F.normalize(x_train, dim=1), F.normalize(x_test, dim=1)
    s_full, i_full = knn.search_topk(bank, queries, 10, backend="torch", chunk_size=4096)
    s_chunk, i_chunk = knn.search_topk(bank, queries, 10, backend="torch", chunk_size=7)
    assert torch.equal(i_full, i_chunk) and torch.allclose(s_full, s_chunk)
    assert s_full.shape == (97, 10) and i_full.dtype == torch.int64
    assert torch.all(s_full[:, :-1] >= s_full[:, 1:])  # sorted descending
    if knn._faiss() is not None:
        s_faiss, i_faiss = knn.search_topk(bank, queries, 10, backend="faiss-cpu", chunk_size=16)
        assert torch.allclose(s_faiss, s_full, atol=1e-5)
        assert (i_faiss == i_full).double().mean() > 0.99


def _reference_inputs(ref: dict) -> tuple[torch.Tensor, ...]:
    """The seeded recipe of ``knn.recipe``; checked against its checksums."""
    g = torch.Generator().manual_seed(0)
    mu = F.normalize(torch.randn(10, 64, generator=g, dtype=torch.float64), dim=1)
    y_train, y_test = torch.arange(10).repeat_interleave(100), torch.arange(10).repeat_interleave(50)
    x_train = mu[y_train] + 0.35 * torch.randn(1000, 64, generator=g, dtype=torch.float64)
    x_test = mu[y_test] + 0.35 * torch.randn(500, 64, generator=g, dtype=torch.float64)
    for x, checksum in ((x_train, ref["checksum_x_train"]), (x_test, ref["checksum_x_test"])):
        assert list(x.shape) == checksum["shape"]
        assert x.sum().item() == pytest.approx(checksum["sum"], rel=1e-8)
        assert (x**2).sum().item() == pytest.approx(checksum["sum_sq"], rel=1e-8)
        assert x.flatten()[:3].tolist() == pytest.approx(checksum["first3"], rel=1e-8)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproduces_reference_json(backend: str) -> None:
    ref = _reference()
    x_train, y_train, x_test, y_test = _reference_inputs(ref)
    expected = ref["reference_float64"]
    for (k, t), key in [
        ((20, 0.07), "k20_T0.07_weighted(DINO/solo-learn)"),
        ((200, 0.1), "k200_T0.1_weighted(InstDisc/lightly)"),
    ]:
        acc = knn_accuracy(x_train, y_train, x_test, y_test, k=k, temperature=t, backend=backend)
        assert acc[k] == pytest.approx(expected[key]["top1"], abs=1e-9)  # 72.8 and 84.2
        preds = knn_classify(x_train, y_train, x_test, k=k, temperature=t, backend=backend)[k]
        assert preds[:20].tolist() == expected[key]["first20_pred"]
        assert int(preds.sum()) == expected[key]["pred_sum"]
    acc = knn_accuracy(x_train, y_train, x_test, y_test, k=1, temperature=0.07, backend=backend)
    assert acc[1] == pytest.approx(expected["k1"]["top1"], abs=1e-9)  # 54.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_unlabelled_bank_samples_are_ignored(backend: str) -> None:
    x_train, y_train, x_test, y_test = _blobs(2, 300, 60)
    # unlabelled copies of the test points would be every query's nearest neighbour if they were kept
    x_bank = torch.cat([x_train, x_test])
    y_bank = torch.cat([y_train, torch.full((60,), -1)])
    with_unlabelled = knn_classify(x_bank, y_bank, x_test, k=[1, 10], temperature=0.1, backend=backend)
    without = knn_classify(x_train, y_train, x_test, k=[1, 10], temperature=0.1, backend=backend)
    for k in (1, 10):
        assert torch.equal(with_unlabelled[k], without[k])
    # k is bounded by the labelled bank, not the full one
    with pytest.raises(ConfigError, match="labelled training samples"):
        knn_classify(x_bank, y_bank, x_test, k=301, temperature=0.1, backend=backend)
    # test samples labelled -1 are not scored
    y_scored = y_test.clone()
    y_scored[:30] = -1
    acc = knn_accuracy(x_train, y_train, x_test, y_scored, k=10, temperature=0.1, backend=backend)[10]
    assert acc == pytest.approx(100.0 * (without[10][30:] == y_test[30:]).double().mean().item())


def test_tie_breaks_to_lowest_class() -> None:
    bank = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    preds = knn_classify(bank, torch.tensor([3, 1]), torch.tensor([[1.0, 0.0]]), k=2, temperature=0.1)
    assert preds[2].tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"k": [5, 0]}, "k must be"),
        ({"k": 51}, "exceeds"),
        ({"k": 5, "temperature": 0.0}, "temperature"),
        ({"k": 5, "backend": "annoy"}, "unknown k-NN backend"),
        ({"k": 5, "num_classes": 2}, "num_classes"),
        ({"k": 5, "chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    x_train, y_train, x_test, _ = _blobs(3, 50, 5, classes=4)
    kwargs = {"temperature": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        knn_classify(x_train, y_train, x_test, **kwargs)


def test_bad_shapes() -> None:
    x_train, y_train, x_test, y_test = _blobs(4, 50, 5)
    with pytest.raises(ConfigError, match="2-D"):
        knn_classify(x_train[0], y_train, x_test, k=1, temperature=0.1)
    with pytest.raises(ConfigError, match="2-D"):
        knn_classify(x_train, y_train, x_test[None], k=1, temperature=0.1)
    with pytest.raises(ConfigError, match="train_labels must have shape"):
        knn_classify(x_train, y_train[:-1], x_test, k=1, temperature=0.1)
    with pytest.raises(ConfigError, match="dims differ"):
        knn_classify(x_train, y_train, x_test[:, :-1], k=1, temperature=0.1)
    with pytest.raises(ConfigError, match="test_labels must have shape"):
        knn_accuracy(x_train, y_train, x_test, y_test[:-1], k=1, temperature=0.1)
    with pytest.raises(ConfigError, match=">= 0, or -1"):
        knn_classify(x_train, y_train - 2, x_test, k=1, temperature=0.1)


def test_gpu_k_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # the check runs before any GPU call, so it can be tested without a GPU
    monkeypatch.setattr(knn, "resolve_backend", lambda backend: "faiss-gpu")
    x = torch.randn(3000, 4)
    with pytest.raises(ConfigError, match="k <= 2048"):
        knn.search_topk(x, x[:2], 2049)


def test_backend_resolution() -> None:
    expected = "faiss-gpu" if knn._faiss_has_gpu(knn._faiss()) else "faiss-cpu" if knn._faiss() else "torch"
    assert knn.resolve_backend("auto") == expected
    assert knn.resolve_backend("torch") == "torch"
    if not knn._faiss_has_gpu(knn._faiss()):
        with pytest.raises(ConfigError, match="faiss-gpu"):
            knn.resolve_backend("faiss-gpu")


def test_protocol_shortcut_equals_explicit_settings() -> None:
    x_train, y_train, x_test, y_test = _blobs(5, 400, 80)
    for protocol, (k, t) in (("dino", (20, 0.07)), ("instdisc", (200, 0.1))):
        short = knn_accuracy(x_train, y_train, x_test, y_test, protocol=protocol)
        assert short == knn_accuracy(x_train, y_train, x_test, y_test, k=k, temperature=t)
    with pytest.raises(ConfigError, match="not both"):
        knn_classify(x_train, y_train, x_test, protocol="dino", k=5)
    with pytest.raises(ConfigError, match="unknown k-NN protocol"):
        knn_classify(x_train, y_train, x_test, protocol="moco")
    with pytest.raises(ConfigError, match="protocol="):
        knn_classify(x_train, y_train, x_test, k=5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_search_serves_every_protocol(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x_train, y_train, x_test, y_test = _blobs(6, 500, 90)
    separate = {
        p: knn_accuracy(x_train, y_train, x_test, y_test, protocol=p, backend=backend)
        for p in knn.defaults.KNN_PROTOCOLS
    }
    calls = []
    original = knn._Searcher.search
    monkeypatch.setattr(knn._Searcher, "search", lambda self, q, k: calls.append(k) or original(self, q, k))
    both = knn.knn_protocols(x_train, y_train, x_test, y_test, backend=backend)
    assert calls == [200]  # one search call, at the largest k
    assert both == {"instdisc": separate["instdisc"][200], "dino": separate["dino"][20]}
    tiny = knn.knn_protocols(x_train[:50], y_train[:50], x_test, y_test, protocols=["instdisc"], backend=backend)
    assert tiny["instdisc"] == knn_accuracy(x_train[:50], y_train[:50], x_test, y_test, k=50, temperature=0.1)[50]


def test_numpy_inputs_and_the_bank_copy() -> None:
    x_train, y_train, x_test, y_test = _blobs(7, 300, 50)
    as_numpy = knn_accuracy(x_train.numpy(), y_train.numpy(), x_test.numpy(), y_test.numpy(), k=[5, 10],
                            temperature=0.1)  # fmt: skip
    assert as_numpy == knn_accuracy(x_train, y_train, x_test, y_test, k=[5, 10], temperature=0.1)
    before = x_train.clone()
    bank = knn.normalized_bank(x_train)
    assert torch.equal(x_train, before)  # the caller's features are not normalised in place
    torch.testing.assert_close(bank, F.normalize(x_train, dim=1), rtol=0, atol=0)
    assert bank.dtype == torch.float32 and bank.is_contiguous()
    keep = y_train > 0
    torch.testing.assert_close(knn.normalized_bank(x_train.double(), keep), F.normalize(x_train[keep], dim=1))


def test_torch_chunks_are_sized_by_the_bank(monkeypatch: pytest.MonkeyPatch) -> None:
    assert knn.torch_query_chunk(1000, block_elements=10_000) == 10
    assert knn.torch_query_chunk(50_000, block_elements=10_000) == 1  # never 0
    x_train, y_train, x_test, _ = _blobs(8, 400, 37)
    expected = knn_classify(x_train, y_train, x_test, k=7, temperature=0.1, backend="torch")
    sizes = []
    original = knn._Searcher.search
    monkeypatch.setattr(knn._Searcher, "search", lambda self, q, k: sizes.append(len(q)) or original(self, q, k))
    monkeypatch.setattr(knn.defaults, "KNN_TORCH_BLOCK_ELEMENTS", 400 * 8)  # 8 queries per block
    chunked = knn_classify(x_train, y_train, x_test, k=7, temperature=0.1, backend="torch")
    assert sizes == [8, 8, 8, 8, 5] and torch.equal(chunked[7], expected[7])
