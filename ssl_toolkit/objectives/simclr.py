"""SimCLR: NT-Xent for two views, the multi-positive SupCon L_out form for more.

SimCLR (Chen et al., 2020): https://arxiv.org/abs/2002.05709
SupCon L_out (Khosla et al., 2020): https://arxiv.org/abs/2004.11362

Two views use lightly's `NTXentLoss` unchanged. lightly has no multi-view NT-Xent, so the V > 2 form is
written here: every embedding is an anchor, its V - 1 other views are positives, every other embedding
(across processes when gathering) is in the denominator, and the loss is the mean over anchors of the
mean positive log-likelihood. At V = 2 it is exactly NT-Xent. Inputs are cast to float32 first, so the
loss is computed in fp32 under autocast (lightly does not cast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.utils import dist as lightly_dist
from torch import Tensor

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region
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
        # a constant τ uses lightly's loss as it is; a scheduled or learnable one the same maths written here
        self._ntxent = (
            NTXentLoss(temperature=self.temperature.value, gather_distributed=gather_distributed)
            if self.temperature.is_constant
            else None
        )

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is V >= 2 tensors of shape (B, D); returns a scalar loss."""
        if len(z) < 2:
            raise ValueError(f"simclr needs at least 2 views, got {len(z)}")
        with float32_region(z) as z:
            tau = self.temperature(ctx.progress)
            # lightly builds its gather mask on the CPU (spec §0.2: may fail on multi-GPU), so it runs one process only
            one_process = not (self.gather_distributed and lightly_dist.world_size() > 1)
            if len(z) == 2 and self._ntxent is not None and one_process and ctx.sample_weights is None:
                loss = self._ntxent(z[0], z[1])
            else:
                n_pos = ctx.n_global if self.positives == "global" else len(z)
                if n_pos < 2:
                    raise ValueError("simclr positives='global' needs >= 2 global views; use positives='all'")
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
    u = [F.normalize(v, dim=1) for v in z]
    world, rank = 1, 0
    if gather_distributed and lightly_dist.world_size() > 1:
        world, rank = lightly_dist.world_size(), lightly_dist.rank()
        u_all = [torch.cat(lightly_dist.gather(v), dim=0) for v in u]  # V x (W*B, D), grads kept
    else:
        u_all = u
    anchors = torch.cat(u, dim=0)  # (V*B, D)
    candidates = torch.cat(u_all, dim=0)  # (V*W*B, D), view-major
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
