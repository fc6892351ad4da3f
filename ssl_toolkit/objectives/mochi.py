"""MoCHi: MoCo's queue contrast with synthetic hard negatives mixed per query.

Hard Negative Mixing for Contrastive Learning (Kalantidis et al., NeurIPS 2020): https://arxiv.org/abs/2010.01028

MoCo-v2's InfoNCE of a query q against its key k and a queue of earlier keys n_1..n_K. Per query, the N
queue entries most similar to q (Q̃^N, found on detached logits) give s extra negatives
``h = normalise(α n_i + (1-α) n_j)`` (n_i, n_j drawn from Q̃^N, α ~ U(0, 1)) and s' "even harder" ones
``h' = normalise(β q + (1-β) n_j)`` (β ~ U(0, 0.5)). Logits ``[q·k | q·queue | q·h | q·h'] / τ``, target 0.
k, the queue and the synthetic points (with the q inside h') are constants: the gradient flows only into q.

lightly has no mixing, so `hard_negative_mixing_loss` is written here (at s = s' = 0 it is lightly's
`NTXentLoss` with a memory bank, tested). lightly's `MemoryBankModule` does not hold the queue: its buffers
are not persistent (checkpoints would lose the queue), it starts from random vectors (which would be mixed
as if they were keys) and drops the part of a batch that passes the end of the ring. The queue here is a
persistent ring buffer with a fill count; keys are gathered with lightly's `concat_all_gather`.

Choices of `MoCHi` (the paper leaves them open):

- **Keys**: ``ctx.z_ema``, the EMA branch (MoCo's key encoder): ``requires_ema``, so a recipe without
  ``model.ema: true`` fails at validation instead of silently taking the other view as keys. Only the two
  global views are used (``max_views = 2``; a recipe with more views fails at validation).
- **Symmetrised**: the mean of the two directions (as lightly's MoCo example, ``0.5 * (L(q0, k1) + L(q1, k0))``).
  Both use the queue as it was before the step; afterwards the gathered keys of view 0, then view 1, are
  enqueued (as MoCo's CIFAR demo), never synthetic points.
- **Filling**: only the valid part of the queue is used and N is clamped to it. At the very first step the
  queue is empty and the loss is 0 (the positive is the only logit).
- **Own sample**: entries whose dataset index (``ctx.ids``, stored beside each key) is the query's are left
  out (logit -inf, never hard), as davidsvy/hard-negative-mixing does. It matters only when the queue spans
  an epoch.
- **Random draws**: drawn for the *global* batch from a `torch.Generator` on the queue's device seeded by
  (the run's seed, step, queue pointer, direction), then sliced to this process's rows. Every process draws
  the same, so N processes mix exactly as one process on the N-fold batch (tested), and a resumed run draws
  as the uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.utils import concat_all_gather
from torch import Tensor

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region
from ssl_toolkit.objectives.checks import check_bool, check_int
from ssl_toolkit.objectives.dist import gather_span
from ssl_toolkit.objectives.temperature import Temperature, build_temperature


def hardest_negatives(u_q: Tensor, u_n: Tensor, n_hard: int, exclude: Tensor | None = None) -> Tensor:
    """Queue positions of each query's ``n_hard`` most similar entries, most similar first.

    Shape:
        u_q: (B, D) and u_n: (K, D), normalised; exclude: (B, K) bool. Returns (B, n_hard) int64.
    """
    sim = u_q.detach() @ u_n.detach().T  # (B, K)
    if exclude is not None:
        sim = sim.masked_fill(exclude, float("-inf"))
    return sim.topk(n_hard, dim=1, sorted=True).indices  # (B, N)


def hard_negative_mixing_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    *,
    temperature: float | Tensor,
    n_hard: int,
    i_idx: Tensor,
    j_idx: Tensor,
    alpha: Tensor,
    jq_idx: Tensor,
    beta: Tensor,
    exclude: Tensor | None = None,
) -> Tensor:
    """MoCHi's InfoNCE: logits ``[q·k | q·queue | q·h | q·h'] / τ``, target 0, mean over queries.

    Args:
        q: queries (carry the gradient); normalised here.
        k: positive keys; normalised here, no gradient.
        queue: negatives; normalised here, no gradient.
        temperature: τ.
        n_hard: N, how many of the hardest queue entries the mixes draw from; 0 with no mixing.
        i_idx, j_idx: rank positions in [0, N) (0 = most similar) of the two entries of each mix h.
        alpha: weight of entry i in h.
        jq_idx: rank position of the entry mixed with the query in each h'.
        beta: weight of the query in h'.
        exclude: True where a queue entry is the query's own sample (dropped); each row must keep >= N entries.

    Shape:
        q, k: (B, D); queue: (K, D); i_idx, j_idx, alpha: (B, s); jq_idx, beta: (B, s'); exclude: (B, K).
        Returns a scalar.
    """
    u_q = F.normalize(q, dim=1)  # (B, D)
    u_k = F.normalize(k.detach(), dim=1)  # (B, D)
    u_n = F.normalize(queue.detach(), dim=1)  # (K, D)
    pos = (u_q * u_k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = u_q @ u_n.T  # (B, K)
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    logits = [pos, neg]
    if i_idx.shape[1] + jq_idx.shape[1] > 0:
        if not 0 < n_hard <= u_n.shape[0]:
            raise ValueError(f"mixing needs 0 < n_hard <= queue entries ({u_n.shape[0]}), got {n_hard}")
        synthetic = _synthetic_negatives(u_q, u_n, n_hard, i_idx, j_idx, alpha, jq_idx, beta, exclude)
        logits.append(torch.einsum("bd,bsd->bs", u_q, synthetic))  # (B, s + s')
    logits = torch.cat(logits, dim=1) / temperature  # (B, 1 + K + s + s')
    return -logits.log_softmax(dim=1)[:, 0].mean()


@torch.no_grad()
def _synthetic_negatives(
    u_q: Tensor,
    u_n: Tensor,
    n_hard: int,
    i_idx: Tensor,
    j_idx: Tensor,
    alpha: Tensor,
    jq_idx: Tensor,
    beta: Tensor,
    exclude: Tensor | None,
) -> Tensor:
    """The s mixes of two hard negatives, then the s' mixes of the query and one; constants.

    Shape: as `hard_negative_mixing_loss`; returns (B, s + s', D).
    """
    hard = hardest_negatives(u_q, u_n, n_hard, exclude)  # (B, N) queue positions
    # gather per row (rank positions -> queue positions), never through a flattened (B*N, D) tensor
    n_i, n_j, n_jq = (u_n[hard.gather(1, idx)] for idx in (i_idx, j_idx, jq_idx))  # (B, s | s', D)
    a, b = alpha.to(u_n.dtype)[..., None], beta.to(u_n.dtype)[..., None]  # (B, s, 1), (B, s', 1)
    h = F.normalize(a * n_i + (1 - a) * n_j, dim=2)  # (B, s, D)
    h_q = F.normalize(b * u_q[:, None, :] + (1 - b) * n_jq, dim=2)  # (B, s', D)
    return torch.cat([h, h_q], dim=1)  # (B, s + s', D)


class MoCHi(Objective):
    """MoCo InfoNCE against a queue of keys, with hard negative mixing (see the module docstring).

    Args:
        temperature: τ (MoCo-v2's 0.2): a number, ``{kind: cosine, start, end}`` or
            ``{kind: learnable, init, min, max}`` (see `temperature.py`).
        queue_size: K, how many keys the queue holds.
        n_hard: N, the hardest queue entries per query that the mixes draw from.
        n_mix: s, mixes of two hard negatives per query.
        n_query_mix: s', mixes of the query and a hard negative per query.
        warmup: steps (``ctx.step``) before mixing starts; plain MoCo until then.
        proj_dim: feature size of the queue (a builder fact: ``model.projector_out``).
        gather_distributed: enqueue the keys of every process (the queue is the same on every process).
    """

    requires_ema = True
    min_global_views = 2
    max_views = 2

    def __init__(
        self,
        *,
        temperature: float | dict | Temperature = 0.2,
        queue_size: int = 4096,
        n_hard: int = 1024,
        n_mix: int = 1024,
        n_query_mix: int = 256,
        warmup: int = 0,
        proj_dim: int,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = build_temperature(temperature)
        self.queue_size = check_int(queue_size, "queue_size", 1)
        self.n_hard = check_int(n_hard, "n_hard")
        if self.n_hard > self.queue_size:
            raise ValueError(f"n_hard ({n_hard}) cannot exceed queue_size ({queue_size})")
        self.n_mix, self.n_query_mix = check_int(n_mix, "n_mix"), check_int(n_query_mix, "n_query_mix")
        self.warmup, self.proj_dim = check_int(warmup, "warmup"), check_int(proj_dim, "proj_dim", 1)
        self.gather_distributed = check_bool(gather_distributed, "gather_distributed")
        self.register_buffer("queue", torch.zeros(self.queue_size, self.proj_dim))  # normalised keys
        self.register_buffer("queue_ids", torch.full((self.queue_size,), -1, dtype=torch.int64))  # -1: unknown
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))  # next slot to write
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.int64))  # valid entries: queue[:fill]
        self.register_buffer("mix_seed", torch.tensor(torch.initial_seed() % 2**62, dtype=torch.int64))

    def mixing_draws(self, rows: int, n_hard: int, *, step: int, direction: int) -> dict[str, Tensor]:
        """The draws of one direction for ``rows`` (global) queries; no mixing when ``n_hard`` is 0.

        Order and distributions as the reference recipe: i, j ~ U{0..N-1} (i = j allowed), α ~ U(0, 1),
        j' ~ U{0..N-1}, β ~ U(0, 0.5). Seeded by (mix_seed, step, queue pointer, direction); ``mix_seed`` is
        ``torch.initial_seed()`` when built (the engine's train.seed), a persistent buffer.
        """
        device = self.queue.device
        s, s_q = (self.n_mix, self.n_query_mix) if n_hard > 0 else (0, 0)
        g = torch.Generator(device=device)
        g.manual_seed(hash((int(self.mix_seed), step, int(self.queue_ptr), direction)) % 2**62)
        return {
            "i_idx": torch.randint(0, max(n_hard, 1), (rows, s), generator=g, device=device),
            "j_idx": torch.randint(0, max(n_hard, 1), (rows, s), generator=g, device=device),
            "alpha": torch.rand(rows, s, generator=g, device=device),
            "jq_idx": torch.randint(0, max(n_hard, 1), (rows, s_q), generator=g, device=device),
            "beta": 0.5 * torch.rand(rows, s_q, generator=g, device=device),
        }

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is the 2 global views, (B, proj_dim) each; ctx.z_ema their EMA outputs. Returns a scalar loss."""
        keys = list(ctx.z_ema[:2])
        if len(keys) < 2:  # the engine always passes them (requires_ema); a direct caller may not
            raise ValueError("mochi takes its keys from ctx.z_ema, the EMA branch's 2 global views (model.ema: true)")
        world, rank = gather_span(self.gather_distributed)
        batch, fill = z[0].shape[0], int(self.queue_fill)
        ids = ctx.ids.to(self.queue.device) if ctx.ids is not None else None
        exclude = None if ids is None else (self.queue_ids[None, :fill] == ids[:, None]) & (ids[:, None] >= 0)
        # N clamped to the entries every query keeps; 0 (no mixing) during warm-up or with an empty queue
        n_hard = min(self.n_hard, fill - (0 if exclude is None else int(exclude.sum(dim=1).max())))
        n_hard = 0 if ctx.step < self.warmup or self.n_mix + self.n_query_mix == 0 else n_hard
        with float32_region([*z[:2], *keys]) as t:
            q, k = t[:2], [F.normalize(v.detach(), dim=1) for v in t[2:]]  # 2 x (B, D) each
            tau = self.temperature(ctx.progress).to(q[0].device)
            queue = self.queue[:fill].clone()  # (fill, D): the queue before this step, for both directions
            losses = []
            for direction, (a, b) in enumerate(((0, 1), (1, 0))):
                draws = self.mixing_draws(world * batch, n_hard, step=ctx.step, direction=direction)
                mine = {n: d[rank * batch : (rank + 1) * batch] for n, d in draws.items()}  # this process's rows
                loss = hard_negative_mixing_loss(
                    q[a], k[b], queue, temperature=tau, n_hard=n_hard, exclude=exclude, **mine
                )
                losses.append(loss)
            loss = 0.5 * (losses[0] + losses[1])
            self._enqueue(torch.cat(k), None if ids is None else torch.cat([ids, ids]), world)
        logs = {"temperature": tau.detach(), "queue_fill": self.queue_fill.float() / self.queue_size}
        return LossOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, ids: Tensor | None, world: int) -> None:
        """Write the (gathered) keys after the oldest entries; only the newest ``queue_size`` when more.

        Shape: keys: (2B, D) normalised, view 0 then view 1; ids: (2B,).
        """
        if ids is None:
            ids = torch.full(keys.shape[:1], -1, dtype=torch.int64, device=keys.device)
        if world > 1:  # rank-major within each view, as one process holding the whole batch
            keys = torch.cat([concat_all_gather(part.contiguous()) for part in keys.chunk(2)])  # (2B_g, D)
            ids = torch.cat([concat_all_gather(part.contiguous()) for part in ids.chunk(2)])  # (2B_g,)
        n, size, ptr = keys.shape[0], self.queue_size, int(self.queue_ptr)
        keys, ids = keys[-size:], ids[-size:]
        slots = (ptr + max(n - size, 0) + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ids[slots] = ids.to(self.queue_ids.device)
        self.queue_ptr.fill_((ptr + n) % size)
        self.queue_fill.fill_(min(int(self.queue_fill) + n, size))

    def extra_repr(self) -> str:
        return (
            f"queue_size={self.queue_size}, n_hard={self.n_hard}, n_mix={self.n_mix}, "
            f"n_query_mix={self.n_query_mix}, warmup={self.warmup}, proj_dim={self.proj_dim}"
        )
