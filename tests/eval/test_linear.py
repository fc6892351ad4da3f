"""Linear probe: learns separable blobs, stays near chance on random labels, ignores -1, picks the best."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import linear_probe
from ssl_toolkit.eval.linear import _fit, _HeadGrid


def _blobs(seed: int, n_train: int = 1500, n_test: int = 500, dim: int = 32, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    mu = 3.0 * torch.randn(classes, dim, generator=g)
    y_train = torch.randint(0, classes, (n_train,), generator=g)
    y_test = torch.randint(0, classes, (n_test,), generator=g)
    x_train = mu[y_train] + torch.randn(n_train, dim, generator=g)
    x_test = mu[y_test] + torch.randn(n_test, dim, generator=g)
    return x_train, y_train, x_test, y_test


FAST = {"epochs": 5, "batch_size": 256}


def test_separable_blobs_reach_high_accuracy() -> None:
    result = linear_probe(*_blobs(0), **FAST)
    assert result["top1"] > 97.0 and result["val_top1"] > 97.0
    assert result["epochs"] == 5 and result["n_val"] == 150 and result["n_train"] == 1350
    assert len(result["grid"]) == 8
    assert {(c["lr"], c["batch_norm"]) for c in result["grid"]} == {
        (lr, bn) for lr in (1.0, 0.3, 0.1, 0.03) for bn in (False, True)
    }  # the defaults of ssl_toolkit.eval.defaults, shared with the CLI and EvalConfig


def test_random_labels_stay_near_chance() -> None:
    x_train, _, x_test, _ = _blobs(1, classes=5)
    g = torch.Generator().manual_seed(11)
    y_train, y_test = (
        torch.randint(0, 5, (len(x_train),), generator=g),
        torch.randint(0, 5, (len(x_test),), generator=g),
    )
    result = linear_probe(x_train, y_train, x_test, y_test, **FAST)
    assert abs(result["top1"] - 20.0) < 8.0  # chance is 20 %; 500 test samples give a std of about 1.8


def test_chosen_head_is_best_on_val_and_deterministic() -> None:
    # overlapping blobs at a large, shifted scale and a tiny lr in the grid, so the val accuracies differ
    g = torch.Generator().manual_seed(2)
    mu = 0.4 * torch.randn(5, 32, generator=g)
    y_train, y_test = torch.randint(0, 5, (1500,), generator=g), torch.randint(0, 5, (500,), generator=g)
    x_train = 10.0 * (mu[y_train] + torch.randn(1500, 32, generator=g)) + 3.0
    x_test = 10.0 * (mu[y_test] + torch.randn(500, 32, generator=g)) + 3.0
    result = linear_probe(x_train, y_train, x_test, y_test, lrs=(1e-5, 0.3, 0.01), **FAST, seed=3)
    val = [c["val_top1"] for c in result["grid"]]
    assert len(set(val)) > 2, "the grid should not be flat, or the choice is not tested"
    best = max(range(len(val)), key=lambda h: val[h])  # first best in grid order
    assert result["val_top1"] == val[best] > val[0]
    assert (result["lr"], result["batch_norm"]) == (
        result["grid"][best]["lr"],
        result["grid"][best]["batch_norm"],
    )
    assert linear_probe(x_train, y_train, x_test, y_test, lrs=(1e-5, 0.3, 0.01), **FAST, seed=3) == result


def test_unlabelled_samples_are_ignored() -> None:
    x_train, y_train, x_test, y_test = _blobs(4)
    g = torch.Generator().manual_seed(5)
    # unlabelled junk far from the data: harmful if it were used, invisible if dropped
    junk = 100.0 * torch.randn(500, x_train.shape[1], generator=g)
    x_mixed = torch.cat([x_train, junk])
    y_mixed = torch.cat([y_train, torch.full((500,), -1)])
    y_test_partial = y_test.clone()
    y_test_partial[:100] = -1
    result = linear_probe(x_mixed, y_mixed, x_test, y_test_partial, **FAST)
    assert result["n_train"] + result["n_val"] == len(y_train)
    assert result["n_test"] == len(y_test) - 100
    clean = linear_probe(x_train, y_train, x_test[100:], y_test[100:], **FAST)
    assert result == clean


def test_stacked_sgd_equals_one_torch_optimizer_per_head() -> None:
    """The hand-written per-column SGD step equals torch.optim.SGD + cosine LambdaLR, head by head."""
    x, y, _, _ = _blobs(6, n_train=300, dim=8, classes=3)
    lrs, epochs, batch_size = [0.3, 0.05], 3, 64
    gen = torch.Generator().manual_seed(0)
    probe = _HeadGrid(8, 3, [False, False], gen)
    w0 = probe.weight.detach().clone()
    head_lr = torch.tensor(lrs).repeat_interleave(3)
    _fit(probe, x, y, head_lr, epochs, batch_size, 1e-3, gen, False)

    total = epochs * math.ceil(len(y) / batch_size)
    for h, lr in enumerate(lrs):
        head = torch.nn.Linear(8, 3)
        with torch.no_grad():
            head.weight.copy_(w0[:, 3 * h : 3 * h + 3].T)
            head.bias.zero_()
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        order = torch.Generator().manual_seed(0)
        torch.randn(8, 6, generator=order)  # the init draw of _HeadGrid
        for _ in range(epochs):
            perm = torch.randperm(len(y), generator=order)
            for idx in perm.split(batch_size):
                opt.zero_grad()
                F.cross_entropy(head(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
        torch.testing.assert_close(probe.weight.detach()[:, 3 * h : 3 * h + 3], head.weight.detach().T)
        torch.testing.assert_close(probe.bias.detach()[3 * h : 3 * h + 3], head.bias.detach())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lrs": ()}, "lrs"),
        ({"lrs": (0.1, -1.0)}, "lrs"),
        ({"batch_norm": ()}, "batch_norm"),
        ({"epochs": 0}, "epochs"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"num_classes": 2}, "num_classes"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    x_train, y_train, x_test, y_test = _blobs(7, n_train=100, n_test=20)
    with pytest.raises(ConfigError, match=message):
        linear_probe(x_train, y_train, x_test, y_test, **kwargs)


def test_bad_shapes() -> None:
    x_train, y_train, x_test, y_test = _blobs(8, n_train=100, n_test=20)
    with pytest.raises(ConfigError, match="2-D"):
        linear_probe(x_train[0], y_train, x_test, y_test)
    with pytest.raises(ConfigError, match="labels must have shape"):
        linear_probe(x_train, y_train[:-1], x_test, y_test)
    with pytest.raises(ConfigError, match="dims differ"):
        linear_probe(x_train, y_train, x_test[:, :-1], y_test)
    with pytest.raises(ConfigError, match="too few"):
        linear_probe(x_train, torch.full_like(y_train, -1), x_test, y_test)
