"""DCL and DCLW: contrastive learning with the positive pair removed from the denominator.

Decoupled Contrastive Learning (Yeh et al., ECCV 2022): https://arxiv.org/abs/2110.06848

For two views, anchor ``u_i`` (view k) and positive ``u_i'`` (the other view), paper Eq. 6:

    L_i = -w_i s(u_i, u_i') / τ + log Σ_{j≠i} [exp(s(u_i, u_j) / τ) + exp(s(u_i, u_j') / τ)],

averaged over the 2B anchors; DCL has ``w_i = 1``, DCLW the negative von Mises-Fisher weight
``w_i = 2 - B_g softmax_i(s(u_i, u_i') / σ)``, whose batch mean is 1.

One implementation serves every setting (2 or V views, constant, scheduled or learnable τ, one or several
processes, sample weights); lightly's `DCLLoss` / `DCLWLoss` are the references the tests compare with where
they apply (two views, a constant τ, one process, no weights). Written here rather than calling lightly, and why:

- **Scheduled or learnable τ**: lightly's losses take a float.
- **More than two views** (lightly's loss is two-view only): each view is an anchor; its positives are the
  *global* views ``z[:n_global]`` other than itself (so a global anchor has ``n_global - 1`` positives and a
  local crop has ``n_global``; local crops are never each other's positives: the spec's multi-crop rule,
  learning_by_sorting's ``n_pos_augs``, objectives_spec.md §1). An ordered (anchor view a, positive view p) pair
  contributes lightly's one-direction DCL term, with negatives the *other samples* of views a and p (so every
  pair is exactly a two-view DCL). The loss is the mean over anchors of the mean over their positives, as
  SupCon's L_out. Without local crops this is the mean over pairs of global views of the two-view DCL, and at
  V = 2 the two-view loss itself.
- **Gathering across processes**: lightly builds its diagonal mask on the CPU (``dist.eye_rank``), which
  the spec flags as likely to fail with CUDA inputs; here masks live on the logits' device. Negatives are
  gathered with `lightly.utils.dist.gather` (gradients kept), so N processes of batch B give the loss and
  gradients of one process with batch N·B.
- **DCLW weights over the global batch**: lightly normalises the vMF softmax over each process's *local*
  batch, so its 2-process loss is not the 1-process loss on the doubled batch (0.24 apart on the spec's
  test input). Here the positive similarities are gathered and the softmax runs over all ``B_g = N·B``
  samples (``w_i = 2 - B_g softmax_i``); with one process the two agree.

The weights are detached, as in lightly (``detach_weights=False`` keeps them in the graph, as the
unofficial raminnakhli implementation does; same loss, gradients up to 0.17 apart). Inputs are cast to
float32 and autocast is switched off for the loss (lightly does not cast).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region, unit_views
from ssl_toolkit.objectives.checks import check_bool, check_number
from ssl_toolkit.objectives.dist import gather_cat, gather_span
from ssl_toolkit.objectives.temperature import Temperature, build_temperature


def negative_vmf_weights(cos: Tensor, sigma: float, *, detach: bool = True, gather_distributed: bool = False) -> Tensor:
    """DCLW's weights ``2 - B_g softmax(cos / σ)``, the softmax over the batch of every process.

    Args:
        cos: cosine similarity of each sample's positive pair (any trailing dims: one weight per pair).
        sigma: the vMF scale σ.
        detach: treat the weights as constants (lightly) rather than differentiate through them.
        gather_distributed: normalise over the samples of every process, not just this one's.

    Shape:
        cos: (B, ...). Returns (B, ...).
    """
    s = (cos.detach() if detach else cos) / sigma  # (B, ...)
    world, rank = gather_span(gather_distributed)
    if world > 1:
        s = gather_cat(s)  # (W*B, ...), grads kept
    w = 2.0 - s.shape[0] * s.softmax(dim=0)  # (W*B, ...)
    batch = cos.shape[0]
    return w[rank * batch : (rank + 1) * batch]  # (B, ...)


def multiview_dcl(
    z: list[Tensor],
    temperature: float | Tensor,
    *,
    n_global: int = 2,
    sigma: float | None = None,
    detach_weights: bool = True,
    gather_distributed: bool = False,
    sample_weights: Tensor | None = None,
) -> Tensor:
    """DCL (``sigma=None``) or DCLW over V views, global views first (the form in the module docstring).

    ``sample_weights`` (B,), e.g. GenView's quality weights (mean 1, no gradient), scale every anchor term of
    their sample; the loss is then the mean of the weighted terms.

    Shape:
        z: V tensors of shape (B, D), un-normalised. Returns a scalar.
    """
    n_views, batch = len(z), z[0].shape[0]
    n_global = min(n_global, n_views)
    world, rank = gather_span(gather_distributed)
    if world * batch < 2:
        raise ValueError(f"dcl needs >= 2 samples in the (gathered) batch, got {world * batch}")
    u = unit_views(z)  # (V, B, D)
    u_all = gather_cat(u, dim=1) if world > 1 else u  # (V, W*B, D)
    device = u.device

    logits = torch.einsum("abd,qnd->abqn", u, u_all) / temperature  # (V, B, V, W*B)
    same = torch.arange(world * batch, device=device)[None, :] == torch.arange(batch, device=device)[:, None] + (
        rank * batch
    )  # (B, W*B): the anchor's own sample in every view; neither self nor positive is a negative
    neg_lse = logits.masked_fill(same[None, :, None, :], float("-inf")).logsumexp(dim=-1)  # (V, B, V)
    # negatives of the pair (a, p): other samples in views a and p
    pair_neg = torch.logaddexp(neg_lse.diagonal(dim1=0, dim2=2).T[:, :, None], neg_lse)  # (V, B, V)

    cos = torch.einsum("abd,pbd->bap", u, u)  # (B, V, V): s(u_i^a, u_i^p)
    pos = cos.permute(1, 0, 2) / temperature  # (V, B, V)
    if sigma is not None:
        weights = negative_vmf_weights(cos, sigma, detach=detach_weights, gather_distributed=gather_distributed)
        pos = pos * weights.permute(1, 0, 2)  # (V, B, V)

    view = torch.arange(n_views, device=device)
    is_pair = (view[None, :] < n_global) & (view[None, :] != view[:, None])  # (V, V): p global, p != a
    n_pos = is_pair.sum(dim=1)  # (V,)
    has_pos = n_pos > 0
    terms = (pair_neg - pos).masked_fill(~is_pair[:, None, :], 0.0)  # (V, B, V)
    per_anchor = terms.sum(dim=2)[has_pos] / n_pos[has_pos, None]  # (V', B)
    if sample_weights is not None:
        per_anchor = per_anchor * sample_weights.to(per_anchor)[None, :]
    return per_anchor.mean()


class DCL(Objective):
    """Decoupled contrastive loss (no positive in the denominator); V > 2 as in the module docstring.

    Args:
        temperature: softmax temperature τ (default 0.1, lightly's and the unofficial code's): a number,
            ``{kind: cosine, start, end}`` or ``{kind: learnable, init, min, max}`` (see `temperature.py`).
        gather_distributed: use the embeddings of every process as negatives, keeping their gradients.
    """

    sigma: float | None = None
    detach_weights: bool = True

    accepts_sample_weights = True

    def __init__(self, *, temperature: float | dict | Temperature = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        self.temperature = build_temperature(temperature)
        self.gather_distributed = check_bool(gather_distributed, "gather_distributed")

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is V >= 2 tensors of shape (B, D), global views first; returns a scalar loss."""
        with float32_region(z) as z:
            tau = self.temperature(ctx.progress).to(z[0].device)
            loss = multiview_dcl(
                z,
                tau,
                n_global=ctx.n_global,
                sigma=self.sigma,
                detach_weights=self.detach_weights,
                gather_distributed=self.gather_distributed,
                sample_weights=ctx.sample_weights,
            )
        return LossOutput(loss=loss, logs={"temperature": tau.detach()})


class DCLW(DCL):
    """DCL with the positive term weighted by the negative vMF weight, normalised over the global batch.

    Args:
        temperature: softmax temperature τ, as for `DCL`.
        sigma: vMF scale σ of the weights (0.5, lightly's and the paper's).
        gather_distributed: gather negatives and normalise the weights over every process's samples
            (lightly's `DCLWLoss` normalises per process; see the module docstring).
        detach_weights: weights as constants (lightly); False differentiates through them (raminnakhli).
    """

    def __init__(
        self,
        *,
        temperature: float | dict | Temperature = 0.1,
        sigma: float = 0.5,
        gather_distributed: bool = True,
        detach_weights: bool = True,
    ) -> None:
        super().__init__(temperature=temperature, gather_distributed=gather_distributed)
        self.sigma = check_number(sigma, "sigma", 0.0, low_open=True)
        self.detach_weights = check_bool(detach_weights, "detach_weights")

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, detach_weights={self.detach_weights}"
