"""How often PyTorch's CPU convolution returns non-finite weight gradients, and what the step guard costs.

The engine skips an optimizer step whose gradients are not finite under a finite loss
(`ssl_toolkit.step_guard`). The fault it was written for: under bf16 autocast on CPU, a stride-2 3x3
convolution over a 1x1 map (views too small for the backbone) sometimes returns garbage in the weight taps
that only see padding. This script counts the calls with a non-finite weight gradient for that case and its
neighbours (stride 1, a 2x2 map, fp32), each over ``--calls`` fresh random layers and inputs, and times
`gradients_finite` on the default recipe's half-width ResNet-10 gradients (median of ``--repeats``). It prints
the torch version and the machine with the figures.

    python benchmarks/bf16_conv_grads.py --calls 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ssl_toolkit.run_summary import machine
from ssl_toolkit.step_guard import gradients_finite

CASES = (  # (stride, map side, dtype)
    (2, 1, "bf16"),
    (1, 1, "bf16"),
    (2, 2, "bf16"),
    (2, 1, "fp32"),
)


def non_finite_calls(stride: int, side: int, dtype: str, calls: int, seed: int = 0) -> int:
    """Calls out of ``calls`` whose weight gradient holds a NaN or Inf (batch 8, 32 -> 64 channels, 3x3, pad 1)."""
    torch.manual_seed(seed)
    bad = 0
    for _ in range(calls):
        conv = nn.Conv2d(32, 64, 3, stride=stride, padding=1, bias=False)
        x = torch.randn(8, 32, side, side)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            y = conv(x)
        y.float().sum().backward()
        bad += int(not torch.isfinite(conv.weight.grad).all())
    return bad


def guard_ms(repeats: int) -> tuple[int, float]:
    """Parameters of the default recipe's half-width ResNet-10 and the median time of one `gradients_finite`
    over their gradients."""
    import timm

    import ssl_toolkit  # noqa: F401 - registers resnet10_small_input

    model = timm.create_model("resnet10_small_input", num_classes=0, channels=[32, 64, 128, 256], stem_stride=2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gradients_finite(optimizer)
        times.append(time.perf_counter() - start)
    return sum(p.numel() for p in model.parameters()), statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="convolutions per case (%(default)s)")
    parser.add_argument("--repeats", type=int, default=50, help="timed gradient checks (%(default)s)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}; {machine()}; {torch.get_num_threads()} threads")
    for stride, side, dtype in CASES:
        bad = non_finite_calls(stride, side, dtype, args.calls)
        print(f"3x3 conv, stride {stride}, {side}x{side} map, {dtype}: {bad} of {args.calls} calls non-finite")
    params, ms = guard_ms(args.repeats)
    print(f"gradients_finite over {params / 1e6:.2f} M gradients (the default's ResNet-10): {ms:.2f} ms median")


if __name__ == "__main__":
    main()
