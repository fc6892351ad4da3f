"""Optimizer steps whose gradients are not finite while the loss is: skipped, said once, counted at the end.

A NaN or Inf *loss* stops the run (`ssl_toolkit.checkpoint.divergence_message`). Non-finite *gradients* under a
finite loss are a different failure: a numerical fault in one backward kernel, not a diverging run. Seen with
PyTorch 2.14's bf16 convolutions on CPU: a stride-2 3x3 convolution over a 1x1 map returns garbage in the
weight taps that only see padding in 5 to 54 % of calls (benchmarks/bf16_conv_grads.py). Applying such a step
would leave NaN in weights that the forward never reads at that size, and every later checkpoint would be
refused. As AMP's gradient scaler does for fp16 overflows, the step is skipped instead. Written here because
accelerate only skips steps for its fp16 scaler, not for bf16 or fp32.
"""

from __future__ import annotations

import warnings

import torch


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimizer would apply is finite (after the all-reduce: the same answer on
    every process, so all of them step or skip together)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one foreach pass
    norm = total_norm(grads) if total_norm else torch.stack([torch.linalg.vector_norm(g) for g in grads]).sum()
    return bool(torch.isfinite(norm))


class StepGuard:
    """Counts the skipped steps of one invocation; warns at the first and, via `close`, with the count."""

    def __init__(self) -> None:
        self.skipped = 0

    def allows(self, optimizer: torch.optim.Optimizer, step: int) -> bool:
        """True when the step's gradients are finite; otherwise count it (and explain the first) and say False."""
        if gradients_finite(optimizer):
            return True
        self.skipped += 1
        if self.skipped == 1:
            warnings.warn(
                f"step {step + 1}: the loss is finite but some gradients are not; the optimizer step is skipped, "
                "as is any later such step (counted at the end). A known cause: PyTorch's bf16 convolution on CPU "
                "can return garbage weight gradients for 1x1 feature maps at stride 2 (views too small for the "
                "backbone); larger views or train.mixed_precision=fp32 avoid it",
                stacklevel=2,
            )
        return False

    def close(self) -> None:
        """The count, when any step was skipped."""
        if self.skipped:
            warnings.warn(
                f"{self.skipped} optimizer step(s) of this run were skipped for non-finite gradients", stacklevel=2
            )
