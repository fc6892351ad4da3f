"""SwAV: swapped prediction of Sinkhorn-Knopp codes over learnable prototypes, with multi-crop and a queue.

SwAV (Caron et al., NeurIPS 2020): https://arxiv.org/abs/2006.09882; follows the official code
(facebookresearch/swav ``main_swav.py``, views_eval_spec.md §1).

Each forward renormalises the prototype rows to unit length in place (the official code does it at the start
of every iteration), L2-normalises the projector outputs and scores them, ``s_v = u_v Cᵀ``. Codes come only
from the global crops ``z[:n_global]`` (Sinkhorn-Knopp on detached scores; ``n_global`` and ``proj_dim`` are
builder facts, filled in from the views and ``model.projector_out``); every other crop, the other global
crops and all local crops, predicts each code with ``softmax(s_v / τ)``:

    L = 1/n_global Σ_i 1/(V-1) Σ_{v≠i} -1/B Σ_b Σ_k q_i[b,k] log p_v[b,k]

Written here rather than taken from lightly, and why:

- **Sinkhorn-Knopp**: lightly's `sinkhorn` is the official algorithm (less the redundant ``/K``), but it
  all-reduces the sums over every column it is given, so a queue that is identical on every process would be
  counted once per process. Here the queue's columns are summed once and only the batch's columns are
  all-reduced, so N processes of batch B give the codes of one process with batch N·B and the same queue.
  It runs in float32 at least (exp(1/ε) overflows fp16; spec §1.8).
- **Prototypes**: a bias-free ``nn.Linear(proj_dim, n_prototypes)``; lightly's `SwaVPrototypes` has a bias,
  which leaves the codes unchanged but changes the predictions (spec §1.7).
- **Loss**: lightly's `SwaVLoss` is tied to its `sinkhorn`; the cross-entropy is a few lines and equals it
  (tested against it).
- **Queue**: the official code keeps a per-process queue of that process's embeddings. Here it holds the
  *gathered* L2-normalised embeddings of the global crops, identical on every process (DDP broadcasts buffers
  from process 0 at each forward, which would overwrite per-process queues). As officially, it is filled from
  ``ctx.progress >= queue_start`` on, scored with the current prototypes, prepended to the batch's scores in
  Sinkhorn, used only once full, and the current batch enters it after it has been read. It and its fill
  count are persistent buffers, so a checkpoint restores it exactly.
- **Freezing the prototypes** for ``freeze_prototypes_steps`` steps: the official code sets their gradient to
  None after backward; lightly toggles ``requires_grad``, which crashes DDP. Here, while frozen, the weight
  enters the graph as ``w.detach() + 0·w``: its gradient is exactly zero and DDP still sees it used. Unlike a
  None gradient the optimizer still applies weight decay to it (and Adam counts the step); decay only rescales
  the rows, which the next renormalisation undoes.

The in-place renormalisation means every forward must be followed by its backward before the next forward.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region, unit_views
from ssl_toolkit.objectives.checks import check_bool, check_int, check_number
from ssl_toolkit.objectives.dist import gather_cat, gather_span
from ssl_toolkit.objectives.temperature import Temperature, build_temperature

# exp(1 / ε) of a unit score overflows float32 below this ε (the official values are 0.05 and 0.03)
MIN_EPSILON = 1.0 / 88.0


def _global_sum(q: Tensor, n_shared: int, world: int, dim: int | None = None) -> Tensor:
    """Sum of ``q`` over the shared columns (counted once) and the batch columns of every process."""
    local = q[:, n_shared:].sum() if dim is None else q[:, n_shared:].sum(dim=dim)
    if world > 1:
        dist.all_reduce(local)
    shared = q[:, :n_shared].sum() if dim is None else q[:, :n_shared].sum(dim=dim)
    return local + shared


@torch.no_grad()
def sinkhorn(
    scores: Tensor,
    *,
    shared: Tensor | None = None,
    iterations: int = 3,
    epsilon: float = 0.05,
    distributed: bool = False,
) -> Tensor:
    """Soft codes by Sinkhorn-Knopp, as the official ``distributed_sinkhorn`` (with the queue prepended).

    Args:
        scores: this process's batch scores.
        shared: scores of rows identical on every process (the queue), counted once, or None.
        iterations: Sinkhorn iterations.
        epsilon: entropic regularisation ε.
        distributed: sum over the batches of all processes (the batch size is then ``world · B``).

    Shape:
        scores: (B, K); shared: (L, K). Returns (B, K) codes, each row summing to 1.
    """
    world, _ = gather_span(distributed)
    n_shared = 0 if shared is None else shared.shape[0]
    dtype = torch.promote_types(scores.dtype, torch.float32)
    everything = scores if shared is None else torch.cat([shared, scores])
    q = torch.exp(everything.to(dtype) / epsilon).T  # (K, L + B)
    n_prototypes, n_samples = q.shape[0], n_shared + world * scores.shape[0]
    q /= _global_sum(q, n_shared, world)
    for _ in range(iterations):
        q /= _global_sum(q, n_shared, world, dim=1)[:, None]  # each prototype gets mass 1/K ...
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)  # ... and each sample 1/B (columns are local)
        q /= n_samples
    q *= n_samples
    return q[:, n_shared:].T  # (B, K)


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float | Tensor) -> Tensor:
    """Every view but ``i`` predicts ``codes[i]``; mean over the predicting views, then over the codes.

    Shape:
        scores: V tensors (B, K); codes: the codes of views 0..len(codes)-1, each (B, K). Returns a scalar.
    """
    n_views = len(scores)
    log_p = [F.log_softmax(s / temperature, dim=1) for s in scores]  # V x (B, K)
    loss = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        cross_entropies = [-(q * log_p[v]).sum(dim=1).mean() for v in range(n_views) if v != i]
        loss = loss + torch.stack(cross_entropies).sum() / (n_views - 1)
    return loss / len(codes)


class SwAV(Objective):
    """SwAV loss with bias-free prototypes, a distributed Sinkhorn, an optional queue and prototype freezing.

    Args:
        n_prototypes: number of prototypes K (official 3000 for ImageNet).
        proj_dim: the projector's output size (a builder fact: ``model.projector_out``).
        temperature: τ of the predictions (official 0.1): a number, ``{kind: cosine, start, end}`` or
            ``{kind: learnable, init, min, max}`` (see `temperature.py`).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (official 3).
        sinkhorn_epsilon: Sinkhorn's ε (official 0.05; 0.03 is the README's fix for collapse); > 1/88.
        queue_length: embeddings per global crop kept in the queue, counted over all processes; 0: no queue
            (official 3840 = 15 batches at batch 256, none at 4096).
        queue_start: training fraction (``ctx.progress``) from which the queue is filled; it is used once full.
        n_global: number of global crops, whose codes are predicted (a builder fact); sizes the queue.
        freeze_prototypes_steps: the prototypes get a zero gradient while ``ctx.step`` is below this.
        gather_distributed: Sinkhorn over the batches of all processes and a queue of all processes'
            embeddings (identical everywhere); False keeps each process to its own batch.
    """

    def __init__(
        self,
        *,
        n_prototypes: int = 3000,
        proj_dim: int,
        temperature: float | dict | Temperature = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        queue_length: int = 0,
        queue_start: float = 0.0,
        n_global: int,
        freeze_prototypes_steps: int = 0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        for value, what, low in [
            (n_prototypes, "n_prototypes", 2),
            (proj_dim, "proj_dim", 1),
            (sinkhorn_iterations, "sinkhorn_iterations", 1),
            (queue_length, "queue_length", 0),
            (n_global, "n_global", 1),
            (freeze_prototypes_steps, "freeze_prototypes_steps", 0),
        ]:
            check_int(value, what, low)
        self.temperature = build_temperature(temperature)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = check_number(sinkhorn_epsilon, "sinkhorn_epsilon", MIN_EPSILON)
        self.queue_start = check_number(queue_start, "queue_start (a fraction of training)", 0.0, 1.0)
        self.n_global, self.freeze_prototypes_steps = n_global, freeze_prototypes_steps
        self.gather_distributed = check_bool(gather_distributed, "gather_distributed")
        self.prototypes = nn.Linear(proj_dim, n_prototypes, bias=False)
        self.register_buffer("queue", torch.zeros(n_global, queue_length, proj_dim))  # newest first
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.int64))  # valid rows, <= queue_length

    def _queue_in_use(self, ctx: StepContext) -> bool:
        length = self.queue.shape[1]
        return length > 0 and ctx.progress >= self.queue_start and int(self.queue_fill) >= length

    @torch.no_grad()
    def _enqueue(self, u: list[Tensor], ctx: StepContext) -> None:
        """Put the (gathered) global-crop embeddings at the front of the queue, dropping the oldest."""
        length = self.queue.shape[1]
        if not self.training or length == 0 or ctx.progress < self.queue_start:
            return
        world, _ = gather_span(self.gather_distributed)
        for i, v in enumerate(u):
            new = gather_cat(v) if world > 1 else v  # (B_g, D)
            self.queue[i] = torch.cat([new.to(self.queue.dtype), self.queue[i]])[:length]
        self.queue_fill.add_(new.shape[0]).clamp_(max=length)

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is V >= 2 tensors of shape (B, proj_dim), the ``n_global`` global crops first."""
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        frozen = ctx.step < self.freeze_prototypes_steps
        use_queue = self._queue_in_use(ctx)
        with float32_region(z) as z:
            tau = self.temperature(ctx.progress)
            weight = self.prototypes.weight.float()  # (K, D), unit rows
            if frozen:  # zero gradient, yet used, so DDP reduces it as every other step
                weight = weight.detach() + 0.0 * weight
            u = unit_views(z)  # (V, B, D)
            scores = list(u @ weight.T)  # V x (B, K)
            codes = [
                sinkhorn(
                    scores[i].detach(),
                    shared=self.queue[i].float() @ weight.detach().T if use_queue else None,  # (L, K)
                    iterations=self.sinkhorn_iterations,
                    epsilon=self.sinkhorn_epsilon,
                    distributed=self.gather_distributed,
                )
                for i in range(self.n_global)
            ]  # n_global x (B, K)
            loss = swapped_prediction_loss(scores, codes, tau)
            self._enqueue(list(u[: self.n_global].detach()), ctx)
            entropy = torch.stack([-(q * q.clamp_min(1e-30).log()).sum(dim=1).mean() for q in codes]).mean()
        device = loss.device
        logs = {
            "temperature": tau.detach().to(device),
            "code_entropy": entropy / math.log(self.prototypes.out_features),  # 1: uniform codes
            "queue_used": torch.tensor(float(use_queue), device=device),
            "queue_fill": (self.queue_fill.float() / max(self.queue.shape[1], 1)).to(device),
            "prototypes_frozen": torch.tensor(float(frozen), device=device),
        }
        return LossOutput(loss=loss, logs=logs)
