"""Execution settings that change speed, not the model: memory layout and compilation (``train.channels_last``,
``train.compile``).

Both act on the module in place, so parameter names, ``state_dict`` keys, checkpoints and exports are the same
as without them: ``Module.to(memory_format=torch.channels_last)`` keeps the parameters (only their strides
change) and ``Module.compile()`` compiles ``forward`` without the ``_orig_mod.`` wrapper that ``torch.compile(m)``
would add. Only the encoder is compiled: it is where the time goes, its input sizes are few (one graph per view
resolution), and the objective's float32 regions and Python-side statistics stay eager. Measured on the default
job: ``benchmarks/default_job_step.py``.
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from ssl_toolkit.errors import ConfigError


def check_compiler(device_type: str) -> None:
    """Refuse ``train.compile`` on CPU where inductor has no C++ compiler to call (before anything is built)."""
    if device_type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise ConfigError(
            "train.compile=true on CPU needs a C++ compiler (inductor builds its kernels with one): install g++ "
            "(e.g. apt install g++) or set train.compile=false"
        )


def apply_speed_settings(model: nn.Module, *, channels_last: bool, compile: bool) -> nn.Module:
    """Put ``model``'s 4-D weights in channels-last layout and/or compile its ``encoder`` in place; returns it."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.encoder.compile()
    return model
