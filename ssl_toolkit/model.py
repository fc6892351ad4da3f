"""`SSLModel`: a timm encoder, a lightly projection head and the objective, run as one module.

The objective is a submodule so that DDP reduces its gradients and `accelerator.save_state` saves its
buffers (queues, per-sample tables). `forward(views, ctx)` does everything a training step needs inside
one call (one encoder forward per resolution group, the projector once, then the loss), which is what DDP
expects.

The optional EMA (momentum) branch is a frozen copy of encoder + projector, moved towards the online weights
with lightly's ``update_momentum`` once per optimizer step, at the first forward of the step (as MoCo updates
its key encoder before computing keys), with momentum following a cosine from ``start`` to ``end`` over
training (BYOL's schedule; a constant when start == end). It runs on the global views without gradient and
hands the objective ``ctx.z_ema``. Its weights are parameters without gradient and its last-updated step a
buffer, so checkpoints carry both and resume is exact; the optimizer and DDP skip it.

Optional ``signals`` are frozen modules the builders attach that compute a per-sample tensor from the views
(e.g. GenView's quality weights); their outputs join the data source's extras in ``ctx.extras``, so neither
the engine nor this module knows what they are.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from lightly.models.modules.heads import ProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from ssl_toolkit.errors import ConfigError, did_you_mean
from ssl_toolkit.objectives import LossOutput, Objective, StepContext
from ssl_toolkit.small_input import SUFFIX


def build_encoder(
    backbone: str, *, small_input: bool = False, backbone_kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """A timm model without classifier (`num_classes=0`), randomly initialised; never downloads weights.

    ``small_input=True`` selects the registered ``<backbone>_small_input`` variant (3x3 stride-1 stem, no
    max-pool; see `ssl_toolkit.small_input`), which exports and reloads like any timm model.
    """
    name = backbone
    if small_input and not backbone.endswith(SUFFIX):
        name = f"{backbone}{SUFFIX}"
        if not timm.is_model(name):
            accepted = ", ".join(m.removesuffix(SUFFIX) for m in timm.list_models(f"*{SUFFIX}"))
            raise ConfigError(f"model.small_input=true is available for {accepted}, not {backbone!r}")
    kwargs = dict(backbone_kwargs or {})
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"cannot build backbone {name!r} with {kwargs}: {err}") from err


# How the projector's last Linear is normalised (``model.projector_last_norm``).
PROJECTOR_LAST_NORMS = ("bn", "bn_noaffine", "none")


def _last_norm(kind: str, dim: int) -> nn.Module | None:
    if kind not in PROJECTOR_LAST_NORMS:
        raise ConfigError(
            f"unknown model.projector_last_norm {kind!r}{did_you_mean(kind, PROJECTOR_LAST_NORMS)}; accepted: "
            f"{', '.join(PROJECTOR_LAST_NORMS)}"
        )
    if kind == "none":
        return None
    return nn.BatchNorm1d(dim, affine=kind == "bn")


def build_projector(
    in_dim: int, *, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 2, last_norm: str = "bn"
) -> nn.Module:
    """An MLP head from lightly's ``ProjectionHead`` blocks: ``num_layers - 1`` Linear-BN-ReLU blocks, then a Linear.

    ``last_norm`` says what follows the last Linear:

    - ``"bn"`` (default): ``BatchNorm1d`` with scale and shift, i.e. lightly's ``SimCLRProjectionHead`` (the head
      of SimCLR v2); same modules, parameter names and random initialisation as that class, so recipes and
      checkpoints made before this option are unchanged.
    - ``"bn_noaffine"``: ``BatchNorm1d(affine=False)``, the head of GroCo (Shvetsova et al., ICCV 2023,
      ``ninatu/learning_by_sorting``, ``models/projection/regular_projection.py``): every output dimension is
      standardised over the batch with no learned scale.
    - ``"none"``: a plain Linear with bias (the head of SimCLR v1).

    A Linear followed by BatchNorm has no bias (the norm removes it), as lightly builds it; GroCo's last Linear
    keeps a bias that it freezes (``requires_grad=False``), which BatchNorm subtracts again, so the output is
    the same.
    """
    blocks: list[tuple] = [
        (in_dim if i == 0 else hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU())
        for i in range(num_layers - 1)
    ]
    blocks.append((hidden_dim, out_dim, _last_norm(last_norm, out_dim), None))
    return ProjectionHead(blocks)


def resolution_groups(views: list[Tensor]) -> list[tuple[int, int]]:
    """Split consecutive views that share a shape into ``(start, stop)`` groups."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].shape[1:] != views[start].shape[1:]:
            groups.append((start, i))
            start = i
    return groups


def ema_momentum(progress: float, start: float, end: float) -> float:
    """Cosine schedule from ``start`` (progress 0) to ``end`` (progress 1), as BYOL's momentum.

    Written here rather than lightly's ``cosine_schedule``: that one counts integer steps over
    ``max_steps - 1``, while objectives see ``ctx.progress`` (a fraction of the run), clamped to [0, 1] here.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * p) + 1.0) / 2.0


def _extras_logs(extras: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """What to log of each per-sample extra: the share of true flags, or the largest value."""
    logs = {}
    for name, values in extras.items():
        if values.dtype == torch.bool:
            logs[f"{name}_fraction"] = values.float().mean()
        else:
            logs[f"{name}_max"] = values.max()
    return logs


class SSLModel(nn.Module):
    """Encoder + projector + objective, and an optional EMA branch of encoder + projector.

    Args:
        encoder: any module mapping (N, C, H, W) images to (N, F) features.
        projector: maps (N, F) to (N, D).
        objective: the loss (see `ssl_toolkit.objectives`).
        ema_momentum: ``(start, end)`` momentum of the EMA branch, each in [0, 1]; None: no EMA branch.
        signals: frozen modules mapping the views to a (B,) tensor each, passed on as ``ctx.extras[name]``.
    """

    def __init__(
        self,
        *,
        encoder: nn.Module,
        projector: nn.Module,
        objective: Objective,
        ema_momentum: Sequence[float] | None = None,
        signals: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.objective = objective
        self.signals = nn.ModuleDict(dict(signals or {}))
        # Optimizer steps taken; a buffer so that accelerate's checkpoint (safetensors) carries it.
        self.register_buffer("train_step", torch.zeros((), dtype=torch.int64))
        self.ema_momentum: tuple[float, float] | None = None
        if ema_momentum is not None:
            values = [float(m) for m in ema_momentum]
            start, end = (values + [math.nan, math.nan])[:2]
            if len(values) != 2 or not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
                raise ConfigError(f"model.ema_momentum must be two numbers in [0, 1], got {list(ema_momentum)}")
            self.ema_momentum = (start, end)
            self.ema_encoder = copy.deepcopy(encoder)
            self.ema_projector = copy.deepcopy(projector)
            deactivate_requires_grad(self.ema_encoder)
            deactivate_requires_grad(self.ema_projector)
            self.register_buffer("ema_step", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def _ema_targets(self, views: list[Tensor], ctx: StepContext) -> tuple[Tensor, ...]:
        """Update the EMA branch once per optimizer step, then project the global views with it."""
        if int(self.ema_step) != int(self.train_step):
            m = ema_momentum(ctx.progress, *self.ema_momentum)  # type: ignore[misc]
            update_momentum(self.encoder, self.ema_encoder, m)
            update_momentum(self.projector, self.ema_projector, m)
            self.ema_step.copy_(self.train_step)
        batch = views[0].shape[0]
        globals_ = views[: ctx.n_global]
        h = torch.cat([self.ema_encoder(torch.cat(globals_[a:b])) for a, b in resolution_groups(globals_)])
        return tuple(self.ema_projector(h).split(batch))  # n_global x (B, D)

    def embed(self, views: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Encoder features ``h`` and projections ``z`` per view, one encoder call per resolution group.

        Shape:
            views: V tensors (B, C, H_v, W_v), equal sizes consecutive. Returns two lists of V (B, ·) tensors.
        """
        batch = views[0].shape[0]
        h = torch.cat([self.encoder(torch.cat(views[a:b])) for a, b in resolution_groups(views)])  # (V*B, F)
        z = self.projector(h)  # (V*B, D)
        return list(h.split(batch)), list(z.split(batch))

    def forward(self, views: list[Tensor], ctx: StepContext = StepContext()) -> LossOutput:  # noqa: B008
        if self.signals:
            with torch.no_grad():
                signals = {name: module(views) for name, module in self.signals.items()}
            ctx = dataclasses.replace(ctx, extras={**ctx.extras, **signals})
        if self.ema_momentum is not None:
            ctx = dataclasses.replace(ctx, z_ema=self._ema_targets(views, ctx))
        _, z = self.embed(views)
        out = self.objective(z, ctx)
        out.logs.update(_extras_logs(ctx.extras))
        return out
