"""SimCLR: NT-Xent for two views, the multi-positive SupCon L_out form for more, in one implementation.

SimCLR (Chen et al., 2020): https://arxiv.org/abs/2002.05709
SupCon L_out (Khosla et al., 2020): https://arxiv.org/abs/2004.11362

Every embedding is an anchor, its other views are positives, every other embedding (across processes when
gathering) is in the denominator, and the loss is the mean over anchors of the mean positive log-likelihood;
at V = 2 it is exactly NT-Xent. Written here rather than calling lightly's `NTXentLoss`, and why: lightly's loss
takes two views, a float τ and no per-sample weights, and builds its gather mask on the CPU (spec §0.2: may
fail on multi-GPU), while one formula must serve 2 or V views, a constant, scheduled or learnable τ, one or
several processes and sample weights. lightly's `NTXentLoss` is the reference the tests compare with wherever
it applies (2 views, constant τ, no weights). Inputs are cast to float32 first, so the loss is computed in
fp32 under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region, unit_views
from ssl_toolkit.objectives.dist import gather_cat, gather_span
from ssl_toolkit.objectives.temperature import Temperature, build_temperature


class SimCLR(Objective):
    """NT-Xent (V = 2) / SupCon L_out with instance labels (V > 2).

    Args:
        temperature: softmax temperature τ (SimCLR's ImageNet default 0.1; lightly's default 0.5): a number,
            ``{kind: cosine, start, end}`` or ``{kind: learnable, init, min, max}`` (see `temperature.py`).
        gather_distributed: use the embeddings of every process as negatives, keeping their gradients.
        positives: with more views than ``ctx.n_global``, which views are an anchor's positives: "global" (the
            global views other than itself; local crops pull towards the global crops but not towards each
            other, as learning_by_sorting's ``n_pos_augs``, objectives_spec.md §1) or "all" (every other view
            of the sample, SupCon L_out over all views). The same thing when every view is global.
    """

    accepts_sample_weights = True

    def __init__(
        self,
        *,
        temperature: float | dict | Temperature = 0.1,
        gather_distributed: bool = True,
        positives: str = "global",
    ) -> None:
        super().__init__()
        if positives not in ("global", "all"):
            raise ValueError(f"simclr: positives must be 'global' or 'all', got {positives!r}")
        self.temperature = build_temperature(temperature)
        self.gather_distributed = gather_distributed
        self.positives = positives

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is V >= 2 tensors of shape (B, D); returns a scalar loss."""
        n_pos = ctx.n_global if self.positives == "global" else len(z)
        if n_pos < 2:  # depends on an argument, so the class attributes cannot say it
            raise ValueError("simclr positives='global' needs >= 2 global views; use positives='all'")
        with float32_region(z) as z:
            tau = self.temperature(ctx.progress).to(z[0].device)
            loss = multiview_ntxent(
                z,
                tau,
                gather_distributed=self.gather_distributed,
                n_positive_views=n_pos,
                sample_weights=ctx.sample_weights,
            )
        return LossOutput(loss=loss, logs={"temperature": tau.detach()})


def multiview_ntxent(
    z: list[Tensor],
    temperature: float | Tensor,
    *,
    gather_distributed: bool = False,
    n_positive_views: int | None = None,
    sample_weights: Tensor | None = None,
) -> Tensor:
    """SupCon L_out with instance labels over V views; equals NT-Xent at V = 2.

    Positives of an anchor are the same sample in the first ``n_positive_views`` views (default: all V),
    itself excluded; every embedding but the anchor is in the denominator. ``sample_weights`` (B,), e.g.
    GenView's quality weights (mean 1, no gradient), scale the terms of every anchor of their sample.

    Shape:
        z: V tensors of shape (B, D), un-normalised. Returns a scalar.
    """
    n_views, batch = len(z), z[0].shape[0]
    u = unit_views(z)  # (V, B, D)
    world, rank = gather_span(gather_distributed)
    u_all = gather_cat(u, dim=1) if world > 1 else u  # (V, W*B, D), grads kept
    anchors = u.flatten(0, 1)  # (V*B, D)
    candidates = u_all.flatten(0, 1)  # (V*W*B, D), view-major
    logits = anchors @ candidates.T / temperature  # (V*B, V*W*B)

    device = logits.device
    global_b = world * batch
    local = torch.arange(batch, device=device) + rank * batch  # position of local samples in a view block
    view = torch.arange(n_views, device=device)
    self_col = (view[:, None] * global_b + local[None, :]).reshape(-1)  # (V*B,)
    rows = torch.arange(n_views * batch, device=device)
    logits = logits.masked_fill(
        torch.zeros_like(logits, dtype=torch.bool).index_put_((rows, self_col), torch.tensor(True, device=device)),
        float("-inf"),
    )
    log_prob = logits.log_softmax(dim=1)  # (V*B, V*W*B)

    # Positives of anchor (v, b): the same sample in every other positive view.
    n_pos = n_views if n_positive_views is None else max(1, min(int(n_positive_views), n_views))
    same_sample = torch.zeros_like(log_prob, dtype=torch.bool)
    for v in range(n_pos):
        same_sample[rows, v * global_b + local.repeat(n_views)] = True
    same_sample[rows, self_col] = False
    counts = same_sample.sum(dim=1)  # (V*B,): n_pos - 1 for positive views, n_pos for the others
    pos_log_prob = log_prob.masked_fill(~same_sample, 0.0).sum(dim=1) / counts  # (V*B,)
    if sample_weights is not None:
        pos_log_prob = pos_log_prob * sample_weights.to(pos_log_prob).repeat(n_views)
    return -pos_log_prob.mean()
