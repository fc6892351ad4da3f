"""GroCo: learning by sorting groups of positive and negative similarities with a differentiable sorter.

Learning by Sorting (Shvetsova, Petersen, Kukleva, Schiele, Kuehne; ICCV 2023): https://arxiv.org/abs/2301.02009
Official code: ninatu/learning_by_sorting, ``learning_by_sorting/losses/groco.py`` (@47c074e).

For each anchor view ``a`` (every view takes a turn) and sample i:

1. positives: cosines of ``u_i^a`` to sample i's *global* views other than ``a``, sorted ascending (a global
   anchor has ``n_global - 1`` of them, a local crop ``n_global``: the official ``n_pos_augs`` rule);
2. negatives: the k largest cosines of ``u_i^a`` to the same view of the other samples of the (gathered)
   batch, ascending;
3. ``x = [negatives ; positives]`` (B, k + p) is relaxed-sorted by a differentiable sorting network, giving
   a doubly stochastic ``P`` with ``sort(x) = x @ P`` (``P[j, r]``: mass of input j at ascending rank r);
4. ``q_neg[j] = clip(sum_{r<k} P[j, r], 0, 1)``, ``q_pos[j] = clip(sum_{r>=k} P[j, r], 0, 1)`` and the anchor
   loss is ``(BCE(q_pos, 1[j >= k]) + BCE(q_neg, 1[j < k])) / 2``, BCE averaged over B (k + p) entries; the
   loss is the mean over anchor views that have at least one positive.

With ``stop_grad`` (the official default, never overridden in its configs) positives and negatives are
detached, so only the anchor side receives gradient.

What comes from where, and why:

- The sorting network and the relaxed sort are diffsort's (``get_sorting_network`` builds the comparator
  matrices, ``diffsort.sort`` runs them). diffsort keeps the matrices as a plain Python list on a fixed
  device (``DiffSortNet`` is not moved by ``.to()``; the official code overrides the module's device
  methods), so here each network's matrices are **non-persistent buffers** of a `_SortingNetwork`
  submodule: they follow ``.to(device/dtype)`` like any buffer, but stay out of ``state_dict``. They are
  constants rebuilt from (network type, size) by the constructor, not training state; leaving them out keeps
  checkpoints independent of diffsort's matrix layout and of which sizes happened to be built before a save
  (a persistent, lazily built size would make a strict load into a fresh module fail).
- The sorter size ``k + p`` depends on ``n_global``, which arrives with each step (``ctx.n_global``): the two
  sizes of the official two-positive-view setting (``k + 1`` and ``k + 2``) are built in the constructor and
  any other size once, on first use, on the inputs' device, then cached.
- diffsort is imported inside the functions that need it, so ``import ssl_toolkit.objectives`` works
  without it.
- Distributed negatives use lightly's gather (all_reduce in backward). The official GatherLayer drops the
  cross-rank gradient, which only stop_grad hides; with this gather N processes of batch B give the loss and
  gradients of one process on N B samples, with or without stop_grad.
- Cosines use the official normalisation eps (1e-8). Inputs are cast to float32 with autocast off (the
  official code calls ``.float()`` too).
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.objectives.base import LossOutput, Objective, StepContext, float32_region, unit_views
from ssl_toolkit.objectives.checks import check_bool, check_choice, check_int, check_number
from ssl_toolkit.objectives.dist import gather_cat, gather_span

SORTING_NETWORKS = ("odd_even", "bitonic")
INTERPOLATIONS = ("cauchy", "logistic", "logistic_phi", "gaussian", "reciprocal", "optimal")  # diffsort 0.2.0
_MATRICES = ("split_a", "split_b", "combine_min", "combine_max")


def _diffsort() -> ModuleType:
    try:
        import diffsort
    except ImportError as err:
        raise ImportError("the groco objective needs the diffsort package: pip install diffsort") from err
    return diffsort


class _SortingNetwork(nn.Module):
    """diffsort's comparator matrices for one network size, as non-persistent buffers (see module docstring)."""

    def __init__(self, kind: str, size: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        layers = _diffsort().get_sorting_network(kind, size, device or "cpu")
        self.n_layers = len(layers)
        for i, matrices in enumerate(layers):
            for name, matrix in zip(_MATRICES, matrices):
                self.register_buffer(f"{name}_{i}", matrix, persistent=False)

    def layers(self) -> list[tuple[Tensor, ...]]:
        """The network in diffsort's format: one ``(split_a, split_b, combine_min, combine_max)`` per layer."""
        return [tuple(getattr(self, f"{name}_{i}") for name in _MATRICES) for i in range(self.n_layers)]


class GroCo(Objective):
    """Group ordering constraints: every positive must sort above the k hardest negatives.

    Args:
        topk_negatives: k, the hardest in-batch negatives per anchor (official ``topk_neg=10``);
            at most ``B_g - 1``.
        steepness: inverse temperature of the comparators (official 1: a very soft sort of cosines).
        sorting_network: ``"odd_even"`` (official) or ``"bitonic"``.
        interpolation: diffsort's comparator relaxation: ``"cauchy"`` (official), ``"logistic"``,
            ``"logistic_phi"``, ``"gaussian"``, ``"reciprocal"`` or ``"optimal"``.
        art_lambda: exponent of ``"logistic_phi"`` (official 0.25; unused by the others).
        stop_grad: detach positives and negatives, so only anchors get gradient (official True).
        gather_distributed: draw negatives from every process's batch (the official code gathers).
    """

    def __init__(
        self,
        *,
        topk_negatives: int = 10,
        steepness: float = 1.0,
        sorting_network: str = "odd_even",
        interpolation: str = "cauchy",
        art_lambda: float = 0.25,
        stop_grad: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.topk_negatives = check_int(topk_negatives, "topk_negatives", 1)
        self.steepness = check_number(steepness, "steepness", 0.0, low_open=True)
        self.sorting_network = check_choice(sorting_network, "sorting_network", SORTING_NETWORKS)
        self.interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)
        self.art_lambda = check_number(art_lambda, "art_lambda", 0.0, low_open=True)
        self.stop_grad = check_bool(stop_grad, "stop_grad")
        self.gather_distributed = check_bool(gather_distributed, "gather_distributed")
        # the official sizes (n_pos_augs = 2): global anchors have 1 positive, local crops 2
        self.networks = nn.ModuleDict({str(p): _SortingNetwork(sorting_network, topk_negatives + p) for p in (1, 2)})

    def network(self, n_positives: int, device: torch.device) -> list[tuple[Tensor, ...]]:
        """The sorter for ``k + n_positives`` inputs, built on ``device`` and cached on first use."""
        key = str(n_positives)
        if key not in self.networks:
            self.networks[key] = _SortingNetwork(self.sorting_network, self.topk_negatives + n_positives, device)
        return self.networks[key].layers()

    def forward(self, z: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        """Shape: z is V >= 2 tensors of shape (B, D), global views first; returns a scalar loss."""
        n_views, n_global = len(z), min(ctx.n_global, len(z))
        world, rank = gather_span(self.gather_distributed)
        batch = z[0].shape[0]
        if self.topk_negatives > world * batch - 1:
            raise ValueError(
                f"topk_negatives={self.topk_negatives} needs a batch of more than k samples, got {world * batch}"
            )
        with float32_region(z) as z:
            u = unit_views(z, eps=1e-8)  # (V, B, D)
            other = u.detach() if self.stop_grad else u  # the positive / negative side
            candidates = gather_cat(other, dim=1) if world > 1 else other  # (V, W*B, D)
            cols = torch.arange(world * batch, device=u.device)
            own = cols[None, :] == torch.arange(batch, device=u.device)[:, None] + rank * batch  # (B, W*B)

            losses, stats = [], []
            for a in range(n_views):
                pos_views = [p for p in range(n_global) if p != a]
                if not pos_views:  # a single global view as anchor has nothing to sort above its negatives
                    continue
                pos = torch.einsum("bd,pbd->bp", u[a], other[pos_views]).sort(dim=1).values  # (B, p) ascending
                neg = (u[a] @ candidates[a].T).masked_fill(own, float("-inf"))  # (B, W*B)
                neg = neg.topk(self.topk_negatives, dim=1).values.flip(1)  # (B, k) ascending
                losses.append(self._sorting_loss(torch.cat([neg, pos], dim=1), len(pos_views)))
                ends = (pos[:, 0], pos[:, -1], neg[:, 0], neg[:, -1])
                stats.append(torch.stack([e.detach().mean() for e in ends]))
            loss = torch.stack(losses).mean()
        pos_min, pos_max, neg_min, neg_max = torch.stack(stats).mean(dim=0)
        logs = {"pos_min": pos_min, "pos_max": pos_max, "neg_min": neg_min, "neg_max": neg_max}
        return LossOutput(loss=loss, logs={**logs, "pos_neg_gap": pos_min - neg_max})

    def _sorting_loss(self, x: Tensor, n_positives: int) -> Tensor:
        """The official BCE between the relaxed group memberships and "negatives below positives".

        Shape:
            x: (B, k + p), negatives then positives, each group ascending. Returns a scalar.
        """
        k = self.topk_negatives
        network = self.network(n_positives, x.device)
        _, perm = _diffsort().sort(network, x, self.steepness, self.art_lambda, self.interpolation)  # (B, n, n)
        q_neg = perm[:, :, :k].sum(dim=2).clip(0, 1)  # (B, n): mass of input j among the k lowest ranks
        q_pos = perm[:, :, k:].sum(dim=2).clip(0, 1)  # (B, n)
        t_neg = (torch.arange(x.shape[1], device=x.device) < k).to(x.dtype).expand_as(q_neg)  # (B, n)
        return (F.binary_cross_entropy(q_pos, 1 - t_neg) + F.binary_cross_entropy(q_neg, t_neg)) / 2

    def extra_repr(self) -> str:
        return (
            f"topk_negatives={self.topk_negatives}, steepness={self.steepness}, "
            f"sorting_network={self.sorting_network!r}, interpolation={self.interpolation!r}, "
            f"art_lambda={self.art_lambda}, stop_grad={self.stop_grad}, gather_distributed={self.gather_distributed}"
        )
