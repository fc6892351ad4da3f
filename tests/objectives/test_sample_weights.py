"""Per-sample loss weights (GenView's quality weights) in simclr and dcl, against per-anchor float64 loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit.objectives import StepContext, build_objective

TAU = 0.2


def _inputs(batch: int = 6, dim: int = 8) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    z = [torch.randn(batch, dim, generator=g, dtype=torch.float64) for _ in range(2)]
    w = torch.rand(batch, generator=g, dtype=torch.float64) + 0.5
    return z, w * batch / w.sum()  # mean 1, as GenView's weights


def ntxent_per_anchor(z: list[torch.Tensor]) -> torch.Tensor:
    """NT-Xent of each of the 2B anchors (view-major), by cross-entropy over the other 2B-1 embeddings."""
    u = F.normalize(torch.cat(z), dim=1)
    n = u.shape[0] // 2
    logits = (u @ u.T / TAU).fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, target, reduction="none")


def dcl_per_anchor(z: list[torch.Tensor]) -> torch.Tensor:
    """DCL of each anchor (view a, sample i): -s(i^a, i^p)/τ + log Σ over other samples k in views a and p."""
    u = [F.normalize(v, dim=1) for v in z]
    n, out = u[0].shape[0], []
    for a, p in ((0, 1), (1, 0)):
        for i in range(n):
            neg = [u[a][i] @ u[v][k] / TAU for v in (a, p) for k in range(n) if k != i]
            out.append(-(u[a][i] @ u[p][i]) / TAU + torch.logsumexp(torch.stack(neg), 0))
    return torch.stack(out)


@pytest.mark.parametrize(("name", "per_anchor"), [("simclr", ntxent_per_anchor), ("dcl", dcl_per_anchor)])
def test_weighted_loss_is_the_weighted_mean_of_anchor_terms(name, per_anchor) -> None:
    z, w = _inputs()
    objective = build_objective({"name": name, "temperature": TAU, "gather_distributed": False}).double()
    leaf = [v.clone().requires_grad_(True) for v in z]
    loss = objective(leaf, StepContext(n_global=2, extras={"sample_weights": w})).loss
    expected = (per_anchor(z) * w.repeat(2)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-6)
    loss.backward()
    ref = [v.clone().requires_grad_(True) for v in z]
    (per_anchor(ref) * w.repeat(2)).mean().backward()
    for a, b in zip(leaf, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    ones = objective(z, StepContext(n_global=2, extras={"sample_weights": torch.ones(6, dtype=torch.float64)})).loss
    plain = objective(z, StepContext(n_global=2)).loss  # the lightly path
    torch.testing.assert_close(ones.double(), plain.double(), rtol=1e-6, atol=1e-6)


def test_objectives_say_whether_they_take_weights() -> None:
    assert build_objective("simclr").accepts_sample_weights and build_objective("dclw").accepts_sample_weights
    assert not build_objective({"name": "swav", "n_prototypes": 8}).accepts_sample_weights
