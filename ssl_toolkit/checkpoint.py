"""Atomic, finite, rotated training checkpoints on top of `accelerator.save_state`.

Each save goes to ``checkpoints/.tmp-step-N``, is renamed to ``checkpoints/step-N`` once every process has
written its part, and only then does the ``last`` symlink move (``os.replace`` of a symlink is atomic on
POSIX). A kill at any point leaves ``last`` on a complete checkpoint; stale ``.tmp-*`` folders are removed at
the next start. A state with a non-finite parameter, buffer or optimizer value is never saved (a checkpoint is
good when it is called good), the newest ``keep`` checkpoints are kept, and a failed write (full disk) stops the
run in one line with ``last`` untouched. accelerate writes the model as safetensors and loads the rest with
``torch.load(weights_only=True)``: nothing is unpickled.

Written by hand rather than with accelerate's ``ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=N)``: that one writes straight into ``checkpoint_N`` (a kill mid-write leaves a partial folder
that looks like the newest) and has no finiteness check.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator

from ssl_toolkit.errors import ConfigError, TrainingStopped

LAST = "last"


class CheckpointWriteError(TrainingStopped):
    """A checkpoint could not be written (disk full, permissions); ``last`` still points at the previous one."""


def clean_stale(ckpt_dir: Path) -> None:
    """Remove half-written checkpoints left by a killed run."""
    for tmp in ckpt_dir.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def step_of(checkpoint: Path) -> int:
    """The optimizer step a ``step-N`` folder was saved at."""
    return int(checkpoint.name.rsplit("-", 1)[1])


def _complete(ckpt_dir: Path) -> list[Path]:
    return sorted((p for p in ckpt_dir.glob("step-*") if p.is_dir()), key=step_of)


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The folder ``last`` points to; the newest complete ``step-N`` if ``last`` is missing or dangling."""
    link = ckpt_dir / LAST
    target = link.resolve() if link.is_symlink() or link.exists() else None
    if target is not None and target.is_dir():
        return target
    complete = _complete(ckpt_dir)
    return complete[-1] if complete else None


def nonfinite_tensors(*modules_or_states: object) -> list[str]:
    """Names of the non-finite floating tensors in modules (parameters and buffers) and optimizer states."""
    bad: list[str] = []
    for obj in modules_or_states:
        if isinstance(obj, torch.nn.Module):
            items = list(obj.state_dict(keep_vars=False).items())
        else:  # an optimizer
            items = [(f"optimizer.{i}.{k}", v) for i, st in enumerate(obj.state.values()) for k, v in st.items()]
        bad += [n for n, t in items if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
    return bad


def save_checkpoint(
    accelerator: Accelerator, ckpt_dir: Path, step: int, *, keep: int = 2, check: tuple = ()
) -> Path | None:
    """Save the full training state for ``step`` atomically; keep the newest ``keep`` checkpoints.

    Args:
        check: modules and optimizers whose values must all be finite; otherwise nothing is written, a warning
            says so and None is returned.

    Raises:
        CheckpointWriteError: the write failed (``OSError``); the partial folder is removed, ``last`` unchanged.
    """
    bad = nonfinite_tensors(*check)
    if bad:
        warnings.warn(
            f"step {step}: not saving a checkpoint, {len(bad)} tensor(s) are not finite (e.g. {bad[0]}); "
            f"{LAST} stays at {last_checkpoint(ckpt_dir) or 'none'}",
            stacklevel=2,
        )
        return None
    name = f"step-{step:08d}"
    tmp, final = ckpt_dir / f".tmp-{name}", ckpt_dir / name
    try:
        if accelerator.is_main_process:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _publish(ckpt_dir, tmp, final, keep)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(
            f"could not write checkpoint {final} ({err.strerror or err}); {LAST} still points at "
            f"{last_checkpoint(ckpt_dir) or 'none'}. Free space (or fix permissions) and rerun the same command "
            "to resume"
        ) from None
    accelerator.wait_for_everyone()
    return final


def _publish(ckpt_dir: Path, tmp: Path, final: Path, keep: int) -> None:
    """Rename the finished checkpoint into place, move ``last`` to it, remove the ones beyond ``keep``."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    link_tmp = ckpt_dir / f".tmp-link-{final.name}"
    if link_tmp.is_symlink():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, ckpt_dir / LAST)
    for old in _complete(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> None:
    """`accelerator.load_state`, with a damaged checkpoint reported in one line naming the way back."""
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # noqa: BLE001 - safetensors, pickle (weights_only) and shape errors come in many types
        earlier = [p for p in _complete(checkpoint.parent) if step_of(p) < step_of(checkpoint)]
        fix = (
            f"remove it (rm -r {checkpoint}) to resume from {earlier[-1].name}"
            if earlier
            else "remove the checkpoints folder to start over"
        )
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"checkpoint {checkpoint} cannot be loaded ({type(err).__name__}: {reason}); {fix}") from None


DIVERGED = ".diverged"  # names the checkpoint the last divergence resumed from


def divergence_message(ckpt_dir: Path, *, loss: float, step: int, epoch: int) -> str:
    """What to do about a non-finite loss at ``step`` (numbered as in metrics.csv), and a note of it.

    The newest kept checkpoint is finite, but finite weights can already be diverged. The first divergence
    after a checkpoint advises resuming from it with gentler settings, naming the one before as the way back;
    a second divergence from the same checkpoint (recorded in ``checkpoints/.diverged``) advises going back.
    """
    kept = _complete(ckpt_dir)
    head = f"loss is {loss} at step {step} (epoch {epoch}); stopped without writing a checkpoint"
    fix = "a lower train.lr, a higher temperature or train.mixed_precision=no"
    if not kept:
        return f"{head}. No checkpoint to return to: rerun with {fix}"
    last, marker = kept[-1], ckpt_dir / DIVERGED
    again = marker.is_file() and marker.read_text().strip() == last.name
    marker.write_text(last.name + "\n")
    back = f"remove {last.name} (rm -r {last}) to resume from {kept[-2].name}" if len(kept) > 1 else None
    if again:
        if back is None:
            return f"{head}, again after resuming from {last.name}, the only checkpoint left: start a new run"
        return f"{head}, again after resuming from {last.name}, whose weights are likely diverged: {back}, with {fix}"
    also = f"; if it diverges again, {back}" if back else ""
    return f"{head}; the last good checkpoint is {last}. Rerun the same command with {fix}: it resumes from there{also}"
