"""Atomic training checkpoints on top of `accelerator.save_state`.

Each save goes to ``checkpoints/.tmp-step-N``, is renamed to ``checkpoints/step-N`` once every process has
written its part, and only then does the ``last`` symlink move (``os.replace`` of a symlink is atomic on
POSIX). A kill at any point leaves ``last`` on a complete checkpoint; stale ``.tmp-*`` folders are removed
at the next start. accelerate writes the model as safetensors and loads the rest with
``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from accelerate import Accelerator

LAST = "last"


def clean_stale(ckpt_dir: Path) -> None:
    """Remove half-written checkpoints left by a killed run."""
    for tmp in ckpt_dir.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The folder ``last`` points to, or None when there is no complete checkpoint."""
    link = ckpt_dir / LAST
    target = link.resolve() if link.is_symlink() or link.exists() else None
    return target if target is not None and target.is_dir() else None


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, *, keep: int = 1) -> Path:
    """Save the full training state for ``step`` atomically; keep the newest ``keep`` checkpoints."""
    name = f"step-{step:08d}"
    tmp, final = ckpt_dir / f".tmp-{name}", ckpt_dir / name
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        link_tmp = ckpt_dir / f".tmp-link-{name}"
        if link_tmp.is_symlink():
            link_tmp.unlink()
        os.symlink(name, link_tmp)
        os.replace(link_tmp, ckpt_dir / LAST)
        steps = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
        for old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
