"""DCL / DCLW against the reference values (lightly 1.6.0, tests/reference), lightly's `DCLLoss` / `DCLWLoss`
wherever they apply, and a per-sample loop written independently of ssl_toolkit/objectives/dcl.py elsewhere
(local crops, sample weights)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from lightly.loss import DCLLoss, DCLWLoss
from lightly.loss.dcl_loss import negative_mises_fisher_weights

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import StepContext, build_objective, objective_kwargs
from ssl_toolkit.objectives.dcl import negative_vmf_weights
from tests.conftest import reference

NAMES = {"DCL": "dcl", "DCLW": "dclw"}
TOL = 1e-5
CASES = ["dcl_dclw_small_tau0.1_sigma0.5"]


def _case(name: str) -> dict:
    return reference("objectives_reference.json")["cases"][name]


def _inputs(case: dict) -> tuple[list[torch.Tensor], list[str]]:
    names = [n for n, _ in case["inputs_order"]]
    return [torch.tensor(case["inputs"][n], dtype=torch.float32, requires_grad=True) for n in names], names


def _randn(n_views: int, batch: int = 8, dim: int = 16, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g, dtype=dtype).requires_grad_() for _ in range(n_views)]


def _lightly_dclw(sigma: float = 0.5, temperature: float = 0.1) -> DCLWLoss:
    return DCLWLoss(temperature=temperature, sigma=sigma, gather_distributed=False)


def _quiet(fn, *args):
    with warnings.catch_warnings():  # lightly's weights do torch.tensor(tensor), which warns
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args)


def test_reference_file_has_the_small_cases() -> None:
    found = sorted(k for k in reference("objectives_reference.json")["cases"] if k.startswith("dcl_dclw_small_"))
    assert found == CASES


# the same τ as a constant and as a cosine schedule with start == end: one implementation for both
@pytest.mark.parametrize("tau_kind", ["constant", "cosine"])
@pytest.mark.parametrize("variant", ["DCL", "DCLW"])
@pytest.mark.parametrize("name", CASES)
def test_loss_and_grads_match_reference(name: str, variant: str, tau_kind: str) -> None:
    case = _case(name)
    ref = case["variants"][variant]
    params = dict(ref["params"])
    tau = params.pop("temperature")
    temperature = tau if tau_kind == "constant" else {"kind": "cosine", "start": tau, "end": tau}
    z, names = _inputs(case)
    objective = build_objective({"name": NAMES[variant], "temperature": temperature, **params})
    out = objective(z)
    out.loss.backward()
    assert abs(out.loss.item() - ref["loss"]) < TOL
    assert out.logs["temperature"].item() == pytest.approx(tau)
    for t, n in zip(z, names):
        torch.testing.assert_close(t.grad, torch.tensor(ref["grad"][n]), atol=TOL, rtol=0)


@pytest.mark.parametrize("tau_kind", ["constant", "cosine"])
@pytest.mark.parametrize("name", CASES)
def test_weights_kept_in_graph_match_reference(name: str, tau_kind: str) -> None:
    case = _case(name)
    ref = case["variants"]["DCLW"]
    tau, sigma = ref["params"]["temperature"], ref["params"]["sigma"]
    temperature = tau if tau_kind == "constant" else {"kind": "cosine", "start": tau, "end": tau}
    z, names = _inputs(case)
    objective = build_objective("dclw", temperature=temperature, sigma=sigma, detach_weights=False)
    loss = objective(z).loss
    loss.backward()
    assert abs(loss.item() - ref["loss"]) < TOL  # same value, other gradient
    alt = ref["grad_alt_weight_not_detached"]["grad"]
    for t, n in zip(z, names):
        torch.testing.assert_close(t.grad, torch.tensor(alt[n]), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_vmf_weights_match_reference_and_lightly(name: str) -> None:
    case = _case(name)
    z, _ = _inputs(case)
    u0, u1 = (torch.nn.functional.normalize(v.detach(), dim=1) for v in z)
    sigma = case["variants"]["DCLW"]["params"]["sigma"]
    w = negative_vmf_weights((u0 * u1).sum(1), sigma)
    torch.testing.assert_close(w, torch.tensor(case["variants"]["DCLW"]["weights_w_i"]), atol=TOL, rtol=0)
    torch.testing.assert_close(w, _quiet(negative_mises_fisher_weights, u0, u1, sigma), atol=1e-6, rtol=0)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("gather_distributed", [True, False])
@pytest.mark.parametrize("variant", ["DCL", "DCLW"])
@pytest.mark.parametrize("progress", [None, 0.0, 0.3, 1.0])
def test_two_views_equal_lightly_at_that_tau(variant: str, progress: float | None, gather_distributed: bool) -> None:
    """lightly's losses are the reference wherever they apply: two views, a float τ (constant, or a cosine
    schedule at ``progress``), one process."""
    spec = {"kind": "cosine", "start": 0.5, "end": 0.1} if progress is not None else 0.2
    tau = 0.2 if progress is None else 0.1 + 0.4 * 0.5 * (1 + math.cos(math.pi * progress))
    z = _randn(2, seed=1)
    objective = build_objective(NAMES[variant], temperature=spec, gather_distributed=gather_distributed)
    out = objective(z, StepContext(progress=progress or 0.0))
    out.loss.backward()
    z_ref = [v.detach().clone().requires_grad_() for v in z]
    lightly_loss = (
        DCLLoss(temperature=tau, gather_distributed=gather_distributed)
        if variant == "DCL"
        else DCLWLoss(temperature=tau, sigma=0.5, gather_distributed=gather_distributed)
    )
    expected = _quiet(lightly_loss, *z_ref)
    expected.backward()
    assert out.logs["temperature"].item() == pytest.approx(tau, abs=1e-6)
    assert abs(out.loss.item() - expected.item()) < TOL
    for got, want in zip(z, z_ref):
        torch.testing.assert_close(got.grad, want.grad, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["DCL", "DCLW"])
def test_learnable_tau_value_and_gradient(variant: str) -> None:
    objective = build_objective(NAMES[variant], temperature={"kind": "learnable", "init": 0.2, "min": 0.05, "max": 1})
    z = _randn(2, seed=2)
    loss = objective(z).loss
    loss.backward()

    def lightly_at(log_tau: float) -> float:
        fn = (
            DCLLoss(temperature=math.exp(log_tau)) if variant == "DCL" else _lightly_dclw(temperature=math.exp(log_tau))
        )
        return _quiet(fn, *(v.detach().double() for v in z)).item()

    log_tau = math.log(0.2)
    assert abs(loss.item() - lightly_at(log_tau)) < TOL
    # d loss / d log τ by a float64 central difference of lightly's loss
    h = 1e-5
    numeric = (lightly_at(log_tau + h) - lightly_at(log_tau - h)) / (2 * h)
    assert objective.temperature.log_tau.grad.item() == pytest.approx(numeric, rel=1e-4, abs=1e-5)


def _loop_dcl(z, tau, n_global, sigma=None, weights=None):
    """Per-sample float64 loops over (anchor view a, global positive view p != a), mean per anchor of the
    mean over its positives; negatives: the other samples of views a and p; sample i's terms times weights[i]."""
    u = [torch.nn.functional.normalize(v.double(), dim=1) for v in z]
    n_views, batch = len(u), u[0].shape[0]
    anchor_losses = []
    for a in range(n_views):
        positives = [p for p in range(n_global) if p != a]
        if not positives:
            continue
        per_pos = []
        for p in positives:
            s = (u[a] * u[p]).sum(1)
            w = 2 - batch * torch.softmax(s.detach() / sigma, 0) if sigma else torch.ones(batch, dtype=s.dtype)
            terms = []
            for i in range(batch):
                negs = [torch.exp(u[a][i] @ u[q][j] / tau) for q in (a, p) for j in range(batch) if j != i]
                term = -w[i] * s[i] / tau + torch.log(torch.stack(negs).sum())
                terms.append(term if weights is None else weights[i] * term)
            per_pos.append(torch.stack(terms).mean())
        anchor_losses.append(torch.stack(per_pos).mean())
    return torch.stack(anchor_losses).mean()


@pytest.mark.parametrize("variant,sigma", [("DCL", None), ("DCLW", 0.5)])
@pytest.mark.parametrize("n_views,n_global", [(4, 2), (3, 3), (5, 1), (2, 1), (3, 2)])
def test_multiview_matches_per_sample_loop(variant: str, sigma: float | None, n_views: int, n_global: int) -> None:
    z = _randn(n_views, batch=6, dim=5, seed=n_views + n_global)
    out = build_objective(NAMES[variant], temperature=0.2)(z, StepContext(n_global=n_global))
    out.loss.backward()
    z_ref = [v.detach().clone().double().requires_grad_() for v in z]
    expected = _loop_dcl(z_ref, 0.2, n_global, sigma)
    expected.backward()
    assert abs(out.loss.item() - expected.item()) < TOL
    for got, want in zip(z, z_ref):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["DCL", "DCLW"])
def test_all_global_views_average_the_two_view_loss_over_pairs(variant: str) -> None:
    z = _randn(4, seed=5)
    got = build_objective(NAMES[variant], temperature=0.1)(z, StepContext(n_global=4)).loss
    pair_loss = DCLLoss(temperature=0.1) if variant == "DCL" else _lightly_dclw()
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    expected = sum(_quiet(pair_loss, z[a], z[b]) for a, b in pairs) / len(pairs)
    assert abs(got.item() - expected.item()) < TOL


@pytest.mark.parametrize("variant", ["DCL", "DCLW"])
def test_local_crops_only_meet_global_views(variant: str) -> None:
    # anchor terms A_v: the globals' involve only globals, a local crop's only itself and the globals, so
    # 4 L(g0, g1, l2, l3) = 3 L(g0, g1, l2) + 3 L(g0, g1, l3) - 2 L(g0, g1)
    z = [v.detach() for v in _randn(4, seed=6)]
    objective = build_objective(NAMES[variant], temperature=0.1)
    ctx = StepContext(n_global=2)
    full = objective(z, ctx).loss
    with_2, with_3, globals_only = (objective(v, ctx).loss for v in (z[:3], [*z[:2], z[3]], z[:2]))
    assert abs(4 * full.item() - (3 * with_2.item() + 3 * with_3.item() - 2 * globals_only.item())) < 4 * TOL


def test_a_single_sample_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 2 samples"):
        build_objective("dcl")([torch.randn(1, 3)] * 3)


@pytest.mark.parametrize("n_views", [2, 4])
def test_sample_weights_scale_each_anchor_term(n_views: int) -> None:
    """GenView's quality weights (mean 1, no gradient) weight the per-anchor loop's terms, loss and gradients."""
    z = _randn(n_views, batch=6, dim=8, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    w = w * 6 / w.sum()
    loss = build_objective("dcl", temperature=0.2)(z, StepContext(n_global=2, extras={"sample_weights": w})).loss
    loss.backward()
    z_ref = [v.detach().clone().requires_grad_() for v in z]
    expected = _loop_dcl(z_ref, 0.2, 2, weights=w)
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-6
    for got, want in zip(z, z_ref):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-7)


def test_kwargs_and_defaults() -> None:
    assert objective_kwargs("dcl") == {"temperature": 0.1, "gather_distributed": True}
    assert objective_kwargs("dclw") == {
        "temperature": 0.1,
        "sigma": 0.5,
        "gather_distributed": True,
        "detach_weights": True,
    }


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("dcl", {"tau": 0.1}, "tau.*accepted: temperature, gather_distributed"),
        ("dcl", {"sigma": 0.5}, "sigma.*accepted"),
        ("dcl", {"temperature": 0}, "temperature must be a number > 0"),
        ("dcl", {"temperature": {"kind": "linear"}}, "kind 'linear' is not known"),
        ("dcl", {"temperature": {"kind": "cosine", "start": 0.5}}, "missing keys \\['end'\\]"),
        ("dcl", {"gather_distributed": "yes"}, "gather_distributed must be true or false"),
        ("dclw", {"sigma": 0}, "sigma must be a number > 0"),
        ("dclw", {"sigma": "0.5"}, "sigma must be a number > 0"),
        ("dclw", {"detach_weights": 1}, "detach_weights must be true or false"),
    ],
)
def test_bad_kwargs_are_config_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_objective({"name": name, **kwargs})
