"""The training loop: accelerate handles processes, devices, precision, accumulation and checkpoints.

Nothing here is specific to an objective, a view pipeline or a data source: the loader yields a `Batch`, the
model turns it into a `LossOutput`, and the engine steps on it. `train(cfg)` returns the run folder (see
``run_folder.py`` for what it holds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ssl_toolkit.builders import TrainData, build_model, build_optimizer, build_train_data
from ssl_toolkit.checkpoint import clean_stale, last_checkpoint, save_checkpoint
from ssl_toolkit.config import save_resolved, warmup_steps_for
from ssl_toolkit.data import Batch
from ssl_toolkit.errors import NonFiniteLossError
from ssl_toolkit.export import export_run
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.run_folder import CHECKPOINTS, RECIPE, run_dir_of
from ssl_toolkit.run_log import ProgressLog
from ssl_toolkit.schedule import lr_factor

__all__ = ["NonFiniteLossError", "run_dir_of", "train"]


def _check_world_size(accelerator: Accelerator) -> None:
    expected = os.environ.get("WORLD_SIZE")
    if expected is not None and int(expected) != accelerator.num_processes:
        raise RuntimeError(
            f"WORLD_SIZE={expected} but accelerate sees {accelerator.num_processes} process(es); on CPU use "
            "`accelerate launch --multi_gpu --num_processes N` (`--cpu --num_processes N` starts only one)"
        )


def _build_loader(data: TrainData, cfg: DictConfig) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        data.dataset,
        batch_size=cfg.train.batch_size,
        sampler=data.sampler,
        drop_last=True,  # equal batches on every process (gathered losses, Sinkhorn, queues)
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=data.collate_fn,
        pin_memory=torch.cuda.is_available(),
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
    run_dir: Path
    ckpt_dir: Path
    total_steps: int = 0
    warmup_steps: int = 0

    @property
    def core(self) -> torch.nn.Module:
        """The model without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)


def _prepare(cfg: DictConfig) -> _Run:
    """Accelerator, seed, run folder, data, model and optimizer; resume from ``checkpoints/last``."""
    tc = cfg.train
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum, cpu=tc.cpu)
    _check_world_size(accelerator)
    set_seed(tc.seed)
    run_dir = run_dir_of(cfg)
    ckpt_dir = run_dir / CHECKPOINTS
    if accelerator.is_main_process:
        save_resolved(cfg, run_dir / RECIPE)
        clean_stale(ckpt_dir)
    accelerator.wait_for_everyone()
    data = build_train_data(cfg)
    model = build_model(cfg, data)
    optimizer = build_optimizer(model, tc)
    model, optimizer, loader = accelerator.prepare(model, optimizer, _build_loader(data, cfg))
    run = _Run(cfg, accelerator, model, optimizer, loader, data, run_dir, ckpt_dir)
    resume_from = last_checkpoint(ckpt_dir) if tc.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {run.core.train_step.item()}")
    if len(loader) < tc.grad_accum:
        raise RuntimeError(
            f"only {len(loader)} batch(es) per epoch per process: lower train.batch_size ({tc.batch_size}) "
            "or use more images"
        )
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
        ctx = StepContext(
            step=step,
            progress=step / run.total_steps,
            n_global=run.data.n_global,
            ids=batch.ids,
            view_kinds=run.data.view_kinds,
            extras=batch.extras,
        )
        out = run.model(batch.views, ctx)
        loss_mean = acc.reduce(out.loss.detach(), reduction="mean")  # also keeps every process's guard in step
        if not torch.isfinite(loss_mean):
            raise NonFiniteLossError(
                f"loss is {loss_mean.item()} at step {step} (epoch {epoch}); stopped without writing a "
                f"checkpoint, the last good one is {last_checkpoint(run.ckpt_dir) or 'none'}. Lower "
                "train.lr, raise the temperature or use train.mixed_precision=no"
            )
        acc.backward(out.loss)
        if acc.sync_gradients:
            _set_lr(run, step)
            if run.cfg.train.grad_clip:
                acc.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
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
    )


def _monitor(run: _Run, step: int):
    """The label-free monitor of ``monitor.every`` (main process only), or None."""
    cfg = run.cfg
    if not (cfg.monitor.every and run.accelerator.is_main_process):
        return None
    from ssl_toolkit.monitor import TrainingMonitor

    mc, base = cfg.monitor, run.data.base
    export = partial(export_run, cfg, mean=base.mean, std=base.std, run_dir=run.run_dir)
    return TrainingMonitor(
        base, run.run_dir, step=step, size=cfg.eval.size or cfg.views[0].size, samples=mc.samples,
        knn_bank=mc.knn_bank, collapse_fraction=mc.collapse_fraction, export_best=mc.export_best, export=export,
        seed=cfg.train.seed,
    )  # fmt: skip


def train(cfg: DictConfig) -> Path:
    """Pretrain as the recipe says, resuming from ``checkpoints/last`` when present; return the run folder."""
    run = _prepare(cfg)
    acc, tc, core = run.accelerator, cfg.train, run.core
    step = int(core.train_step)
    progress, monitor = _progress(run, step), _monitor(run, step)
    run.model.train()
    start_epoch, skip = divmod(step * tc.grad_accum, len(run.loader))
    for epoch in range(start_epoch, tc.epochs):
        if step >= run.total_steps:
            break
        run.loader.set_epoch(epoch)
        batches = acc.skip_first_batches(run.loader, skip) if skip else run.loader
        skip = 0
        for batch in batches:
            loss_mean, logs = _forward_backward(run, run.data.finish_batch(batch), step, epoch)
            if not acc.sync_gradients:
                continue
            step += 1
            core.train_step.fill_(step)
            row = _row(run, epoch, loss_mean, logs) if progress.due(step) else {}
            progress.update(step, row, core.objective.histograms() if row and acc.is_main_process else None)
            if monitor is not None and (step % cfg.monitor.every == 0 or step == run.total_steps):
                monitor.check(step, core.encoder, core.projector, acc.device)  # before the checkpoint (resume)
            if step % tc.save_every == 0 or step == run.total_steps:
                save_checkpoint(acc, run.ckpt_dir, step)
            if step >= run.total_steps:
                break
    progress.close()
    if monitor is not None:
        monitor.close()
    if hasattr(run.data.base, "summary"):  # image folders: corrupt files skipped during the run
        acc.print(run.data.base.summary())
    if acc.is_main_process:
        export_run(cfg, core.encoder, mean=run.data.base.mean, std=run.data.base.std, run_dir=run.run_dir, step=step)
    acc.wait_for_everyone()
    acc.end_training()
    return run.run_dir
