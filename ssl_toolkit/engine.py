"""The training loop: accelerate handles processes, devices, precision, accumulation and checkpoints.

Nothing here is specific to an objective, a view pipeline or a data source: the loader yields a `Batch`, the
model turns it into a `LossOutput`, and the engine steps on it. `train(cfg)` returns the run folder (see
``run_folder.py`` for what it holds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ssl_toolkit.builders import (
    TrainData,
    apply_optimizer_settings,
    build_loader,
    build_model,
    build_optimizer,
    build_train_data,
)
from ssl_toolkit.checkpoint import divergence_message, load_checkpoint, save_checkpoint
from ssl_toolkit.data import Batch
from ssl_toolkit.errors import ConfigError, NonFiniteLossError
from ssl_toolkit.export import export_run
from ssl_toolkit.interrupts import Interrupted, StopRequests
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.run_folder import OpenRun, open_for_training, run_dir_of
from ssl_toolkit.run_log import ProgressLog
from ssl_toolkit.run_summary import RunRecord
from ssl_toolkit.schedule import lr_factor, warmup_steps_for
from ssl_toolkit.speed import apply_speed_settings, check_compiler
from ssl_toolkit.step_guard import StepGuard
from ssl_toolkit.trackers import accelerator_kwargs

__all__ = ["NonFiniteLossError", "run_dir_of", "train"]


def _check_world_size(accelerator: Accelerator) -> None:
    expected = os.environ.get("WORLD_SIZE")
    if expected is not None and int(expected) != accelerator.num_processes:
        raise RuntimeError(
            f"WORLD_SIZE={expected} but accelerate sees {accelerator.num_processes} process(es); on CPU use "
            "`accelerate launch --multi_gpu --num_processes N` (`--cpu --num_processes N` starts only one)"
        )


@dataclass
class _Run:
    """Everything one training run holds, prepared by accelerate."""

    cfg: DictConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    data: TrainData
    folder: OpenRun
    total_steps: int = 0
    warmup_steps: int = 0
    guard: StepGuard = field(default_factory=StepGuard)  # skips steps with non-finite gradients

    @property
    def run_dir(self) -> Path:
        return self.folder.run_dir

    @property
    def core(self) -> torch.nn.Module:
        """The model without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)


def _prepare(cfg: DictConfig, folder: OpenRun, accelerator: Accelerator) -> _Run:
    """Seed, data, model and optimizer, prepared by accelerate; resume from the folder's last checkpoint."""
    tc = cfg.train
    if tc.compile:
        check_compiler(accelerator.device.type)
    set_seed(tc.seed)
    data = build_train_data(cfg)
    if data.size < tc.batch_size * tc.grad_accum * accelerator.num_processes:
        raise ConfigError(
            f"{data.size} training images make no full batch of train.batch_size={tc.batch_size} x grad_accum="
            f"{tc.grad_accum} x {accelerator.num_processes} process(es); lower train.batch_size or use more images"
        )
    model = apply_speed_settings(build_model(cfg, data), channels_last=tc.channels_last, compile=tc.compile)
    optimizer = build_optimizer(model, tc)
    model, optimizer, loader = accelerator.prepare(model, optimizer, build_loader(data, cfg))
    run = _Run(cfg, accelerator, model, optimizer, loader, data, folder)
    if folder.resume_from is not None:
        load_checkpoint(accelerator, folder.resume_from)
        apply_optimizer_settings(optimizer, tc)  # the recipe's lr/decay/momentum over the saved ones
    steps = tc.epochs * (len(loader) // tc.grad_accum)
    run.total_steps = steps if tc.max_steps is None else min(tc.max_steps, steps)
    run.warmup_steps = warmup_steps_for(tc, run.total_steps)
    return run


def _set_lr(run: _Run, step: int) -> None:
    tc = run.cfg.train
    factor = lr_factor(step, total_steps=run.total_steps, warmup_steps=run.warmup_steps, min_ratio=tc.min_lr_ratio)
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _forward_backward(run: _Run, batch: Batch, step: int, epoch: int) -> tuple[torch.Tensor, dict]:
    """One micro-batch: loss, NaN guard, backward and (on accumulation boundaries) the optimizer step."""
    acc = run.accelerator
    with acc.accumulate(run.model):
        ctx = StepContext(step=step, progress=step / run.total_steps, n_global=run.data.n_global, ids=batch.ids,
                          view_kinds=run.data.view_kinds, extras=batch.extras)  # fmt: skip
        out = run.model(batch.views, ctx)
        loss_mean = acc.reduce(out.loss.detach(), reduction="mean")  # also keeps every process's guard in step
        if not torch.isfinite(loss_mean):  # step + 1: the step's number in metrics.csv
            raise NonFiniteLossError(
                divergence_message(run.folder.ckpt_dir, loss=loss_mean.item(), step=step + 1, epoch=epoch)
            )
        acc.backward(out.loss)
        if acc.sync_gradients:
            _set_lr(run, step)
            if run.cfg.train.grad_clip:
                acc.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
        if not acc.sync_gradients or run.guard.allows(run.optimizer, step):  # after clipping, before the step
            run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss_mean, out.logs


def _row(run: _Run, epoch: int, loss_mean: torch.Tensor, logs: dict) -> dict[str, float]:
    """A metrics row: epoch, loss, lr and the objective's logs, averaged over processes."""
    acc = run.accelerator
    extra = {k: acc.reduce(v.detach().float().to(loss_mean.device), reduction="mean").item() for k, v in logs.items()}
    return {"epoch": epoch, "loss": loss_mean.item(), "lr": run.optimizer.param_groups[0]["lr"], **extra}


def _progress(run: _Run, step: int) -> ProgressLog:
    tc, acc = run.cfg.train, run.accelerator
    return ProgressLog(
        run.run_dir,
        total_steps=run.total_steps,
        step=step,
        images_per_step=tc.batch_size * tc.grad_accum * acc.num_processes,
        log_every=tc.log_every,
        main=acc.is_main_process,
        bar=tc.progress_bar,
        wait_hint=f"raise data.num_workers (now {run.cfg.data.num_workers}), data.view_device=cuda, or shards",
    )


def _monitor(run: _Run, step: int):
    """The label-free monitor of ``monitor.every`` (main process only), or None."""
    if not (run.cfg.monitor.every and run.accelerator.is_main_process):
        return None
    from ssl_toolkit.monitor import TrainingMonitor

    base = run.data.base
    export = partial(export_run, run.cfg, mean=base.mean, std=base.std, run_dir=run.run_dir)
    return TrainingMonitor.from_recipe(run.cfg, base, run.run_dir, step=step, export=export)


def train(cfg: DictConfig) -> Path:
    """Pretrain as the recipe says, resuming from ``checkpoints/last`` when present; return the run folder.

    Raises:
        ConfigError: the run folder is in use, or a resume does not fit it (nothing is written then).
        TrainingStopped: a NaN loss, a failed checkpoint write or a signal (after a checkpoint) ended the run.
    """
    tc = cfg.train
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum,
                              cpu=tc.cpu, **accelerator_kwargs(cfg, run_dir_of(cfg)))  # fmt: skip
    _check_world_size(accelerator)
    folder = open_for_training(cfg, main=accelerator.is_main_process)
    try:
        accelerator.wait_for_everyone()
        with StopRequests() as stop:
            run = _prepare(cfg, folder, accelerator)
            record = RunRecord.start(run)  # start summary, run.json, trackers
            step = _loop(run, stop)
        _finish(run, step, record)
    finally:
        folder.close()
    return folder.run_dir


def _save(run: _Run, step: int) -> None:
    save_checkpoint(
        run.accelerator, run.folder.ckpt_dir, step, keep=run.cfg.train.keep_checkpoints, check=(run.core, run.optimizer)
    )


def _loop(run: _Run, stop: StopRequests) -> int:
    """The epochs and steps; returns the last step taken."""
    acc, cfg, core = run.accelerator, run.cfg, run.core
    tc = cfg.train
    step = int(core.train_step)
    progress, monitor = _progress(run, step), _monitor(run, step)
    run.model.train()
    start_epoch, skip = divmod(step * tc.grad_accum, len(run.loader))
    try:
        for epoch in range(start_epoch, tc.epochs):
            if step >= run.total_steps:
                break
            run.loader.set_epoch(epoch)
            batches = acc.skip_first_batches(run.loader, skip) if skip else run.loader
            skip = 0
            for batch in progress.timed(batches, finish=run.data.finish_batch):
                loss_mean, logs = _forward_backward(run, batch, step, epoch)
                if not acc.sync_gradients:
                    continue
                step += 1
                core.train_step.fill_(step)
                row = _row(run, epoch, loss_mean, logs) if progress.due(step) else {}
                progress.update(step, row, core.objective.histograms() if row and acc.is_main_process else None)
                if monitor is not None and (step % cfg.monitor.every == 0 or step == run.total_steps):
                    monitor.check(step, core.encoder, core.projector, acc.device)  # before the checkpoint (resume)
                signum = stop.requested(acc)
                if signum or step % tc.save_every == 0 or step == run.total_steps:
                    _save(run, step)
                if signum:
                    raise Interrupted(f"stopped by signal {signum} after step {step}, checkpoint saved; rerun the "
                                      "same command to resume", signum)  # fmt: skip
                if step >= run.total_steps:
                    break
    finally:
        progress.close()
        if monitor is not None:
            monitor.close()
    return step


def _finish(run: _Run, step: int, record: RunRecord) -> None:
    """Export the encoder (main process), record the end (run.json, skipped files), end the trackers."""
    acc, base, encoder = run.accelerator, run.data.base, None
    if acc.is_main_process:
        run.guard.close()
        encoder = export_run(run.cfg, run.core.encoder, mean=base.mean, std=base.std, run_dir=run.run_dir, step=step)
    record.finish(step, encoder)
    acc.wait_for_everyone()
    acc.end_training()
