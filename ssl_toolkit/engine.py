"""The training loop: accelerate handles processes, devices, precision, accumulation and checkpoints.

Nothing here is specific to an objective: the model returns a `LossOutput` and the engine steps on it.
`train(cfg)` returns the run folder, which holds ``recipe.yaml``, ``metrics.csv``, ``tensorboard/``,
``checkpoints/`` and, at the end, the exported ``encoder/``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssl_toolkit.builders import build_model, build_optimizer, build_quality_weighter, build_train_data
from ssl_toolkit.checkpoint import clean_stale, last_checkpoint, save_checkpoint
from ssl_toolkit.config import save_resolved
from ssl_toolkit.data import build_eval_transform
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
        collate_fn=data["collate_fn"],
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
    data: dict
    run_dir: Path
    ckpt_dir: Path
    total_steps: int = 0
    weighter: torch.nn.Module | None = None  # frozen quality-weight model, kept beside the trained one


def _prepare(cfg: DictConfig) -> _Run:
    """Accelerator, seed, run folder, data, model and optimizer; resume from ``checkpoints/last``."""
    tc = cfg.train
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum, cpu=tc.cpu)
    _check_world_size(accelerator)
    set_seed(tc.seed)
    run_dir = run_dir_of(cfg)
    ckpt_dir = run_dir / "checkpoints"
    if accelerator.is_main_process:
        save_resolved(cfg, run_dir / "recipe.yaml")
        clean_stale(ckpt_dir)
    accelerator.wait_for_everyone()
    data = build_train_data(cfg)
    model = build_model(cfg)
    optimizer = build_optimizer(model, tc)
    model, optimizer, loader = accelerator.prepare(model, optimizer, _build_loader(data, cfg))
    run = _Run(cfg, accelerator, model, optimizer, loader, data, run_dir, ckpt_dir)
    weighter = build_quality_weighter(cfg)
    run.weighter = None if weighter is None else weighter.to(accelerator.device)
    resume_from = last_checkpoint(ckpt_dir) if tc.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {_core(run).train_step.item()}")
    if len(loader) < tc.grad_accum:
        raise RuntimeError(
            f"only {len(loader)} batch(es) per epoch per process: lower train.batch_size ({tc.batch_size}) "
            "or use more images"
        )
    steps = tc.epochs * (len(loader) // tc.grad_accum)
    run.total_steps = steps if tc.max_steps is None else min(tc.max_steps, steps)
    return run


def _core(run: _Run) -> torch.nn.Module:
    return run.accelerator.unwrap_model(run.model)


def _forward_backward(
    run: _Run, views: list[torch.Tensor], ids: torch.Tensor, step: int, epoch: int, generated: torch.Tensor | None
):
    """One micro-batch: loss, NaN guard, backward and (on accumulation boundaries) the optimizer step."""
    acc, tc = run.accelerator, run.cfg.train
    with acc.accumulate(run.model):
        ctx = StepContext(
            step=step,
            progress=step / run.total_steps,
            n_global=run.data["n_global"],
            ids=ids,
            view_kinds=run.data["view_kinds"],
            generated=generated,
            sample_weights=_sample_weights(run, views),
        )
        out = run.model(views, ctx)
        if ctx.sample_weights is not None:  # how unequal the quality weights are (mean is 1 by construction)
            out.logs["quality_weight_max"] = ctx.sample_weights.max()
        if generated is not None:  # the share of samples that carried a bank image (logged like a loss term)
            out.logs["generated_fraction"] = generated.float().mean()
        loss_mean = acc.reduce(out.loss.detach(), reduction="mean")  # also keeps every process's guard in step
        if not torch.isfinite(loss_mean):
            raise NonFiniteLossError(
                f"loss is {loss_mean.item()} at step {step} (epoch {epoch}); stopped without writing a "
                f"checkpoint, the last good one is {last_checkpoint(run.ckpt_dir) or 'none'}. Lower "
                "train.lr, raise the temperature or use train.mixed_precision=no"
            )
        acc.backward(out.loss)
        if acc.sync_gradients:
            factor = lr_factor(
                step, total_steps=run.total_steps, warmup_steps=tc.warmup_steps, min_ratio=tc.min_lr_ratio
            )
            for group in run.optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            if tc.grad_clip:
                acc.clip_grad_norm_(run.model.parameters(), tc.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss_mean, out.logs


def _sample_weights(run: _Run, views: list[torch.Tensor]) -> torch.Tensor | None:
    """Per-sample loss weights from the quality weighter on the first two (global) views, if one is set."""
    if run.weighter is None:
        return None
    base = run.data["base"]
    return run.weighter(views[0], views[1], mean=base.mean, std=base.std)


class _Progress:
    """Progress bar (main process) and metrics rows every ``log_every`` steps, with images/s."""

    def __init__(self, run: _Run, step: int) -> None:
        tc, acc = run.cfg.train, run.accelerator
        self.run = run
        self.logger = MetricsLogger(run.run_dir, enabled=acc.is_main_process, resume_step=step)
        self.bar = tqdm(
            total=run.total_steps,
            initial=step,
            desc="pretrain",
            unit="step",
            dynamic_ncols=True,
            disable=not (tc.progress_bar and acc.is_main_process),
        )
        self.images_per_step = tc.batch_size * tc.grad_accum * acc.num_processes
        self.t_last, self.step_last = time.perf_counter(), step

    def update(self, step: int, epoch: int, loss_mean: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        self.bar.update(1)
        if step % self.run.cfg.train.log_every and step != self.run.total_steps:
            return
        now = time.perf_counter()
        speed = (step - self.step_last) * self.images_per_step / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last = now, step
        acc = self.run.accelerator
        extra = {
            k: acc.reduce(v.detach().float().to(loss_mean.device), reduction="mean").item() for k, v in logs.items()
        }
        lr = self.run.optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "loss": loss_mean.item(), "lr": lr, "images_per_s": speed, **extra}
        self.logger.log(step, row)
        if acc.is_main_process:
            for name, values in _core(self.run).objective.histograms().items():
                self.logger.histogram(step, name, values)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{speed:.0f}", lr=f"{lr:.3g}")

    def close(self) -> None:
        self.bar.close()
        self.logger.close()


class _RunMonitor:
    """`ssl_toolkit.monitor.Monitor` on the main process: ``monitor.csv``/TensorBoard, warnings, best export."""

    def __init__(self, run: _Run, step: int) -> None:
        from ssl_toolkit.monitor import Monitor

        mc, base = run.cfg.monitor, run.data["base"]
        size = run.cfg.eval.size or run.cfg.views[0].size
        self.run = run
        self.monitor = Monitor(
            base,
            build_eval_transform(size=size, mean=base.mean, std=base.std),
            samples=mc.samples,
            knn_bank=mc.knn_bank,
            collapse_fraction=mc.collapse_fraction,
            seed=run.cfg.train.seed,
        )
        self.logger = MetricsLogger(run.run_dir, enabled=True, resume_step=step, name="monitor")
        best = run.run_dir / "encoder_best" / "config.json"
        if best.exists():  # resumed: keep the best RankMe of the steps before
            saved = json.loads(best.read_text()).get("ssl_toolkit", {}).get("monitor", {})
            self.monitor.best_rankme = float(saved.get("rankme", -math.inf))

    def check(self, step: int) -> None:
        core = _core(self.run)
        out = self.monitor.score(core.encoder, core.projector, self.run.accelerator.device)
        values = {k: float(v) for k, v in out.items()}
        self.logger.log(step, values)
        if out["collapse"]:
            self.run.accelerator.print(
                f"warning: step {step}: RankMe {out['rankme']:.1f} is below {self.monitor.collapse_fraction:.0%} of "
                "the embedding width; the representation may be collapsing (check the learning rate, temperature "
                "and augmentations)"
            )
        if out["best"] and self.run.cfg.monitor.export_best:
            export_run(
                self.run.cfg, core.encoder, self.run.data["base"], self.run.run_dir, step,
                folder="encoder_best", monitor={"step": step, **values},
            )  # fmt: skip

    def close(self) -> None:
        self.logger.close()


def train(cfg: DictConfig) -> Path:
    """Pretrain as the recipe says, resuming from ``checkpoints/last`` when present; return the run folder."""
    run = _prepare(cfg)
    acc, tc = run.accelerator, cfg.train
    core = _core(run)
    step = int(core.train_step)
    progress = _Progress(run, step)
    monitor = _RunMonitor(run, step) if cfg.monitor.every and acc.is_main_process else None
    run.model.train()
    start_epoch, skip = divmod(step * tc.grad_accum, len(run.loader))
    for epoch in range(start_epoch, tc.epochs):
        if step >= run.total_steps:
            break
        run.loader.set_epoch(epoch)
        batches = acc.skip_first_batches(run.loader, skip) if skip else run.loader
        skip = 0
        for views, ids, *flags in batches:  # flags: is_generated (B,) when a bank of generated images is mixed in
            loss_mean, logs = _forward_backward(run, views, ids, step, epoch, flags[0] if flags else None)
            if not acc.sync_gradients:
                continue
            step += 1
            core.train_step.fill_(step)
            progress.update(step, epoch, loss_mean, logs)
            if monitor is not None and (step % cfg.monitor.every == 0 or step == run.total_steps):
                monitor.check(step)  # before the checkpoint, so a resumed run sees the same state
            if step % tc.save_every == 0 or step == run.total_steps:
                save_checkpoint(acc, run.ckpt_dir, step)
            if step >= run.total_steps:
                break
    progress.close()
    if monitor is not None:
        monitor.close()
    if hasattr(run.data["base"], "summary"):  # image folders: corrupt files skipped during the run
        acc.print(run.data["base"].summary())
    if acc.is_main_process:
        export_run(cfg, core.encoder, run.data["base"], run.run_dir, step)
    acc.wait_for_everyone()
    acc.end_training()
    return run.run_dir


def export_run(
    cfg: DictConfig,
    encoder: torch.nn.Module,
    base,
    run_dir: Path,
    step: int,
    *,
    folder: str = "encoder",
    monitor: dict | None = None,
) -> Path:
    """Export the encoder of a run to ``run_dir/<folder>`` with this run's preprocessing."""
    size = cfg.eval.size or cfg.views[0].size
    return export_encoder(
        encoder,
        run_dir / folder,
        backbone=cfg.model.backbone,
        backbone_kwargs=OmegaConf.to_container(cfg.model.backbone_kwargs, resolve=True),
        input_size=(size, size),
        mean=base.mean,
        std=base.std,
        recipe_name=cfg.name,
        recipe_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        extra={
            "objective": OmegaConf.to_container(cfg.objective, resolve=True),
            "train_step": step,
            "dataset": cfg.data.name,
            **({"monitor": monitor} if monitor is not None else {}),
        },
    )
