"""The training loop: accelerate handles processes, devices, precision, accumulation and checkpoints.

Nothing here is specific to an objective: the model returns a `LossOutput` and the engine steps on it.
`train(cfg)` returns the run folder, which holds ``recipe.yaml``, ``metrics.csv``, ``tensorboard/``,
``checkpoints/`` and, at the end, the exported ``encoder/``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssl_toolkit.builders import build_model, build_optimizer, build_train_data
from ssl_toolkit.checkpoint import clean_stale, last_checkpoint, save_checkpoint
from ssl_toolkit.config import save_resolved
from ssl_toolkit.data import collate_views
from ssl_toolkit.export import export_encoder
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.run_log import MetricsLogger
from ssl_toolkit.schedule import lr_factor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped before writing a checkpoint."""


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.train.output_dir) / (cfg.train.run_name or cfg.name)


def _check_world_size(accelerator: Accelerator) -> None:
    expected = os.environ.get("WORLD_SIZE")
    if expected is not None and int(expected) != accelerator.num_processes:
        raise RuntimeError(
            f"WORLD_SIZE={expected} but accelerate sees {accelerator.num_processes} process(es); on CPU use "
            "`accelerate launch --multi_gpu --num_processes N` (`--cpu --num_processes N` starts only one)"
        )


def _build_loader(data: dict, cfg: DictConfig) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        data["dataset"],
        batch_size=cfg.train.batch_size,
        sampler=data["sampler"],
        drop_last=True,  # equal batches on every process (gathered losses, Sinkhorn, queues)
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_views,
        pin_memory=torch.cuda.is_available(),
    )


def train(cfg: DictConfig) -> Path:
    """Pretrain as the recipe says, resuming from ``checkpoints/last`` when present; return the run folder."""
    tc = cfg.train
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum, cpu=tc.cpu)
    _check_world_size(accelerator)
    set_seed(tc.seed)
    run_dir, ckpt_dir = run_dir_of(cfg), run_dir_of(cfg) / "checkpoints"
    if accelerator.is_main_process:
        save_resolved(cfg, run_dir / "recipe.yaml")
        clean_stale(ckpt_dir)
    accelerator.wait_for_everyone()

    data = build_train_data(cfg)
    model = build_model(cfg)
    optimizer = build_optimizer(model, tc)
    loader = _build_loader(data, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    core = accelerator.unwrap_model(model)

    resume_from = last_checkpoint(ckpt_dir) if tc.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {int(core.train_step)}")
    step = int(core.train_step)

    batches_per_epoch = len(loader)
    if batches_per_epoch < tc.grad_accum:
        raise RuntimeError(
            f"only {batches_per_epoch} batch(es) per epoch per process: lower train.batch_size "
            f"({tc.batch_size}) or use more images"
        )
    steps_per_epoch = batches_per_epoch // tc.grad_accum
    total = tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)
    logger = MetricsLogger(run_dir, enabled=accelerator.is_main_process, resume_step=step)
    bar = tqdm(
        total=total,
        initial=step,
        desc="pretrain",
        unit="step",
        dynamic_ncols=True,
        disable=not (tc.progress_bar and accelerator.is_main_process),
    )
    images_per_step = tc.batch_size * tc.grad_accum * accelerator.num_processes
    t_last, step_last = time.perf_counter(), step

    model.train()
    start_epoch, skip = divmod(step * tc.grad_accum, batches_per_epoch)
    for epoch in range(start_epoch, tc.epochs):
        if step >= total:
            break
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for views, ids in batches:
            with accelerator.accumulate(model):
                ctx = StepContext(
                    step=step,
                    progress=step / total,
                    n_global=data["n_global"],
                    ids=ids,
                    view_kinds=data["view_kinds"],
                )
                out = model(views, ctx)
                loss_mean = accelerator.reduce(out.loss.detach(), reduction="mean")
                if not torch.isfinite(loss_mean):
                    raise NonFiniteLossError(
                        f"loss is {loss_mean.item()} at step {step} (epoch {epoch}); stopped without writing a "
                        f"checkpoint, the last good one is {last_checkpoint(ckpt_dir) or 'none'}. Lower "
                        "train.lr, raise the temperature or use train.mixed_precision=no"
                    )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    factor = lr_factor(step, total_steps=total, warmup_steps=tc.warmup_steps, min_ratio=tc.min_lr_ratio)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * factor
                    if tc.grad_clip:
                        accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            core.train_step.fill_(step)
            bar.update(1)
            if step % tc.log_every == 0 or step == total:
                now = time.perf_counter()
                speed = (step - step_last) * images_per_step / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                logs = {
                    k: accelerator.reduce(v.detach().float().to(loss_mean.device), reduction="mean").item()
                    for k, v in out.logs.items()
                }
                row = {
                    "epoch": epoch,
                    "loss": loss_mean.item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": speed,
                    **logs,
                }
                logger.log(step, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{speed:.0f}", lr=f"{row['lr']:.3g}")
            if step % tc.save_every == 0 or step == total:
                save_checkpoint(accelerator, ckpt_dir, step)
            if step >= total:
                break
    bar.close()
    logger.close()
    if hasattr(data["base"], "summary"):  # image folders: corrupt files skipped during the run
        accelerator.print(data["base"].summary())
    if accelerator.is_main_process:
        export_run(cfg, core.encoder, data["base"], run_dir, step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir


def export_run(cfg: DictConfig, encoder: torch.nn.Module, base, run_dir: Path, step: int) -> Path:
    """Export the encoder of a run to ``run_dir/encoder`` with this run's preprocessing."""
    size = cfg.eval.size or cfg.views[0].size
    return export_encoder(
        encoder,
        run_dir / "encoder",
        backbone=cfg.model.backbone,
        backbone_kwargs=OmegaConf.to_container(cfg.model.backbone_kwargs, resolve=True),
        small_input=cfg.model.small_input,
        input_size=(size, size),
        mean=base.mean,
        std=base.std,
        recipe_name=cfg.name,
        recipe_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        extra={
            "objective": OmegaConf.to_container(cfg.objective, resolve=True),
            "train_step": step,
            "dataset": cfg.data.name,
        },
    )
