"""iSogCLR: the robust global contrastive loss with one learned temperature per sample.

Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic
Temperature Individualization", ICML 2023: https://arxiv.org/abs/2305.11965
Official code: zhqiu/contrastive-learning-iSogCLR ``unimodal_exps/losses.py`` (``SogCLR_DRO_Loss``); also
LibAUC 2.0.1 ``GCLoss_v1(enable_isogclr=True)``.

Objective (RGCL), with S_i the 2B_g - 2 negatives of anchor i (every embedding but the anchor and its positive):

    F(w, τ) = 1/n Σ_i [ τ_i log( 1/|S_i| Σ_{z∈S_i} exp(h_i(z)/τ_i) ) + τ_i ρ ],   τ_i ∈ [τ_min, τ_max].

Each step, for the 2B anchors a (view 1 and view 2 of sample i, which share τ_i), everything detached but z:
g_a = mean over negatives of exp(s_ab/τ_i); u_a = g_a at a sample's first visit, else (1-γ) u_i + γ g_a;
p_ab = exp(s_ab/τ_i)/u_a; the surrogate loss (1/B) Σ_i Σ_views [(1/|S|) Σ_b p_ab s_ab - s(a, a⁺)], whose
gradient is the SogCLR estimator (its value is not F and can be negative); ∇τ_a = log u_a + ρ -
(1/|S|) Σ_b p_ab s_ab/τ_i averaged over the two views (optionally clipped); momentum m_i ← (1-β) m_i + β ∇τ_i
(β weights the *new* gradient); τ_i ← clip(τ_i - η m_i, τ_min, τ_max); u_i ← mean of the two views' u_a.
The loss uses τ from before the update. Matches the official code and LibAUC on the spec's reference.

Written here because lightly has no loss with per-sample state; only its gathers are reused
(`lightly.utils.dist.gather`, gradients kept, for the negatives; `concat_all_gather` for the table rows).
Choices, and where they differ from the sources:

- **Defaults** are the official README's (CIFAR-100): γ=0.8, ρ=0.4, η=0.03, β=0.5, τ_init=0.1, τ∈[0.05, 1].
  LibAUC ``GCLoss_v1`` uses γ=0.9, ρ=0.3 ("0.1~0.5 for unimodal"), η=0.01, β=0.9, τ_max=0.7 and no clip; the
  official ``main_supcon.py`` argparse ρ=6, η=0.001, β=0.9. The official code clips ∇τ to ±3 (hard-coded),
  LibAUC does not: ``tau_grad_clip=None`` is LibAUC's behaviour, ``3.0`` the official one.
- **First visit** is tracked per sample by the persistent ``seen`` mask. The official code tests
  ``epoch == 0``; LibAUC tests ``u[index].sum() == 0`` per *batch*, which mis-initialises the unseen
  samples of a batch that mixes seen and unseen ones. All three agree on batches of one kind.
- **u** is one value per sample (the mean of the two views' estimates), as both sources keep it.
- **gamma_schedule**: ``"constant"``, or ``"cosine"`` (LibAUC/FastCLIP): γ goes from 1 at the start of
  training to ``gamma`` at ``gamma_decay_progress`` of training (they recommend half the epochs), following
  ``ctx.progress`` rather than whole epochs.
- **Distributed**: negatives are gathered with gradients (``gather_distributed``), so |S| = 2(B_g - 1) as in
  LibAUC. LibAUC writes u for the gathered indices but τ and the momentum *only for the local ones*, so each
  rank's τ table drifts. Here every process all-gathers (ids, new u, new momentum, new τ) of its samples,
  without gradient, and writes every row, so the tables are identical on all ranks and equal to one process
  on the global batch, with or without ``gather_distributed``. An id twice in a global batch keeps its first
  occurrence's row, the same on every rank.
- **Views**: iSogCLR is a two-view objective (``min_global_views = max_views = 2``): it uses ``z[0]`` and
  ``z[1]``, and a recipe with more views fails at validation. ``dataset_size`` is a builder fact (the
  number of training images), so ``data.subset`` cannot leave it wrong.
- **Numerics**: as the unimodal official code, exp(s/τ) is not shifted by a running maximum (the bimodal
  variant's trick for τ ≈ 0.005), so the maths runs in float32 with autocast off and ``tau_min`` must be
  >= 0.02 (exp(1/0.05) = 4.9e8 already overflows fp16).
"""

from __future__ import annotations

import math

import torch
from lightly.models.utils import concat_all_gather
from lightly.utils import dist as lightly_dist
from torch import Tensor

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region, unit_views
from ssl_toolkit.objectives.checks import check_bool, check_choice, check_int, check_number
from ssl_toolkit.objectives.dist import gather_cat, gather_span

GAMMA_SCHEDULES = ("constant", "cosine")


def _first_occurrence(ids: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct id (deterministic, unlike duplicate writes)."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    pos = torch.arange(ids.numel(), device=ids.device)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long, device=ids.device)
    return first.scatter_reduce(0, inverse, pos, reduce="amin")  # (U,)


class ISogCLR(Objective):
    """RGCL with per-sample moving averages ``u`` and per-sample temperatures ``τ`` (not trained by autograd).

    Args:
        dataset_size: number of training samples (a builder fact); ``ctx.ids`` lie in ``[0, dataset_size)``.
        gamma: moving-average weight γ of the new estimate in u (its final value under a cosine schedule).
        rho: the KL radius ρ of the DRO; larger ρ pushes τ down (harder negatives weigh more).
        eta: step size η of the τ update.
        beta: momentum β of the τ gradient (weight of the new gradient).
        tau_init: initial τ of every sample.
        tau_min: lower bound of τ (>= 0.02 for float32 safety).
        tau_max: upper bound of τ.
        gamma_schedule: ``"constant"`` or ``"cosine"`` (γ from 1 down to ``gamma``).
        gamma_decay_progress: cosine: fraction of training over which γ decays.
        tau_grad_clip: clip ∇τ to ``[-c, c]`` (official code: 3.0); None: no clip (LibAUC).
        gather_distributed: take negatives from every process (gradients kept).
    """

    min_global_views = 2
    max_views = 2

    def __init__(
        self,
        *,
        dataset_size: int,
        gamma: float = 0.8,
        rho: float = 0.4,
        eta: float = 0.03,
        beta: float = 0.5,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        gamma_schedule: str = "constant",
        gamma_decay_progress: float = 0.5,
        tau_grad_clip: float | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.dataset_size = check_int(dataset_size, "dataset_size", 1)
        self.gamma_schedule = check_choice(gamma_schedule, "gamma_schedule", GAMMA_SCHEDULES)
        self.gamma = check_number(gamma, "gamma", 0.0, 1.0, low_open=True)
        self.rho = check_number(rho, "rho", 0.0)
        self.eta = check_number(eta, "eta", 0.0)
        self.beta = check_number(beta, "beta", 0.0, 1.0, low_open=True)
        self.tau_min = check_number(tau_min, "tau_min", 0.02)
        self.tau_max = check_number(tau_max, "tau_max", self.tau_min)
        tau_init = check_number(tau_init, "tau_init (between tau_min and tau_max)", self.tau_min, self.tau_max)
        self.gamma_decay_progress = check_number(gamma_decay_progress, "gamma_decay_progress", 0.0, 1.0, low_open=True)
        clip = tau_grad_clip
        self.tau_grad_clip = None if clip is None else check_number(clip, "tau_grad_clip", 0.0, low_open=True)
        self.gather_distributed = check_bool(gather_distributed, "gather_distributed")
        self.register_buffer("u", torch.zeros(dataset_size))
        self.register_buffer("tau", torch.full((dataset_size,), tau_init))
        self.register_buffer("tau_momentum", torch.zeros(dataset_size))
        self.register_buffer("seen", torch.zeros(dataset_size, dtype=torch.bool))

    def gamma_at(self, progress: float) -> float:
        """γ at training ``progress`` in [0, 1]."""
        if self.gamma_schedule == "constant":
            return self.gamma
        p = min(max(float(progress) / self.gamma_decay_progress, 0.0), 1.0)
        return self.gamma + (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * p))

    def tau_histogram_values(self) -> Tensor:
        """The τ of every sample seen so far (float32, CPU), for a histogram of the learned temperatures."""
        return self.tau[self.seen].detach().float().cpu()

    def histograms(self) -> dict[str, Tensor]:
        """The learned per-sample τ (samples seen so far), logged as a TensorBoard histogram."""
        return {"tau": self.tau_histogram_values()}

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is 2 tensors of shape (B, D) (only z[0], z[1] are used); ctx.ids (B,). Scalar loss."""
        ids = self._checked_ids(z, ctx)
        with float32_region(z[:2]) as (z1, z2):
            loss, rows = self._loss_and_rows(z1, z2, ids, ctx.progress)
        tau_used = self._write_rows(ids, rows)
        logs = {"temperature": tau_used.mean(), "tau_min": tau_used.min(), "tau_max": tau_used.max()}
        return LossOutput(loss=loss, logs=logs)

    def _checked_ids(self, z: list[Tensor], ctx: StepContext) -> Tensor:
        if ctx.ids is None:
            raise ValueError("isogclr needs the dataset indices of the batch (ctx.ids)")
        ids = ctx.ids.to(device=self.u.device, dtype=torch.long).reshape(-1)
        if ids.numel() != z[0].shape[0]:
            raise ValueError(f"isogclr: {ids.numel()} ids for a batch of {z[0].shape[0]}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.dataset_size):
            raise ValueError(
                f"isogclr: ids must lie in [0, dataset_size={self.dataset_size}), got min {int(ids.min())} and "
                f"max {int(ids.max())}; set objective.dataset_size to the training set's length"
            )
        return ids

    def _loss_and_rows(self, z1: Tensor, z2: Tensor, ids: Tensor, progress: float) -> tuple[Tensor, Tensor]:
        """The surrogate loss and each sample's new table row ``[u, momentum, τ, τ used]`` (B, 4)."""
        u1, u2 = unit_views([z1, z2])  # (B, D) each
        batch, device = u1.shape[0], u1.device
        world, rank = gather_span(self.gather_distributed)
        c1 = gather_cat(u1) if world > 1 else u1  # (B_g, D), grads kept
        c2 = gather_cat(u2) if world > 1 else u2
        global_b = c1.shape[0]
        sim = torch.cat([u1, u2]) @ torch.cat([c1, c2]).T  # (2B, 2B_g): anchors view-major, candidates too
        rows = torch.arange(2 * batch, device=device)
        own = (torch.arange(batch, device=device) + rank * batch).repeat(2)  # (2B,) column of the anchor's sample
        neg = torch.ones_like(sim, dtype=torch.bool)
        neg[rows, own] = False  # view-1 copy of the sample (self or positive)
        neg[rows, own + global_b] = False  # view-2 copy
        n_neg = 2 * global_b - 2

        tau_i = self.tau[ids].to(device)  # (B,)
        with torch.no_grad():
            tau = tau_i.repeat(2)[:, None]  # (2B, 1), both views share τ_i
            logits = sim.detach() / tau  # (2B, 2B_g)
            exp = logits.exp().masked_fill(~neg, 0.0)  # (2B, 2B_g)
            g = exp.sum(dim=1) / n_neg  # (2B,)
            gamma = self.gamma_at(progress)
            u_prev, seen = self.u[ids].to(device).repeat(2), self.seen[ids].to(device).repeat(2)
            u_a = torch.where(seen, (1.0 - gamma) * u_prev + gamma * g, g)  # (2B,)
            p = exp / u_a[:, None]  # (2B, 2B_g)
            grad_tau = (u_a.log() + self.rho - (p * logits).sum(dim=1) / n_neg).view(2, batch).mean(0)  # (B,)
            if self.tau_grad_clip is not None:
                grad_tau = grad_tau.clamp(-self.tau_grad_clip, self.tau_grad_clip)
            momentum = (1.0 - self.beta) * self.tau_momentum[ids].to(device) + self.beta * grad_tau  # (B,)
            tau_new = (tau_i - self.eta * momentum).clamp(self.tau_min, self.tau_max)  # (B,)
            new_rows = torch.stack([u_a.view(2, batch).mean(0), momentum, tau_new, tau_i], dim=1)  # (B, 4)

        positive = (u1 * u2).sum(dim=1)  # (B,)
        weighted_neg = ((p * sim).sum(dim=1) / n_neg).view(2, batch).sum(0)  # (B,) summed over the two views
        loss = (weighted_neg - 2.0 * positive).mean()
        return loss, new_rows

    @torch.no_grad()
    def _write_rows(self, ids: Tensor, rows: Tensor) -> Tensor:
        """Write the new rows of every process's samples into the tables; returns the τ used (global batch)."""
        rows = rows.to(self.u.device)
        world = lightly_dist.world_size()
        if world > 1:  # always, even without gather_distributed: the tables must stay identical on all ranks
            ids, rows = concat_all_gather(ids.contiguous()), concat_all_gather(rows.contiguous())  # (W*B,), (W*B, 4)
        first = _first_occurrence(ids)
        ids, rows = ids[first], rows[first]  # (U,), (U, 4)
        self.u[ids] = rows[:, 0]
        self.tau_momentum[ids] = rows[:, 1]
        self.tau[ids] = rows[:, 2]
        self.seen[ids] = True
        return rows[:, 3]

    def extra_repr(self) -> str:
        return (
            f"dataset_size={self.dataset_size}, gamma={self.gamma} ({self.gamma_schedule}), rho={self.rho}, "
            f"eta={self.eta}, beta={self.beta}, tau in [{self.tau_min}, {self.tau_max}], "
            f"tau_grad_clip={self.tau_grad_clip}"
        )
