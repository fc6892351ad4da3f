"""GPU check section: ResNet-50 SimCLR steps at 224 px, the engine's step against the bare step.

Every variant trains on the same synthetic batch made on the device (2 views of 256 images, 224 px), with bf16
autocast and SGD, in the approach of benchmarks/engine_overhead.py:

* ``bare``: timm ``resnet50`` + lightly ``SimCLRProjectionHead`` + ``NTXentLoss`` (in float32, as the
  objectives do) + ``torch.optim.SGD`` (Nesterov, as timm's ``sgd``), channels_last: the physical limit;
* ``engine``: ``SSLModel`` from ``builders.build_model``, the optimizer from ``build_optimizer``, prepared by
  accelerate and stepped as ``engine.train``'s inner loop (accumulate, reduce, the NaN guard's host read,
  backward, learning rate, step, zero_grad, step counter, a log row with ``.item()`` every ``log_every``
  steps), channels_last;
* ``engine_as_train``: the same in the default (contiguous) memory format, as ``engine.train`` runs it;
* ``engine_no_guard_sync``: without the per-step ``if not torch.isfinite(loss)`` (a device-to-host read);
* ``engine_ema`` / ``engine_ema_host_counter``: with the EMA branch; ``SSLModel`` reads two device counters
  every step (``int(ema_step) != int(train_step)``), the second variant decides from a host counter;
* ``bare_compiled`` / ``engine_compiled``: ``torch.compile`` of encoder and projector (first steps compile).

Each variant: warm-up steps, then a block of steps between two synchronisations (one sync per block, so
the host syncs inside a step are what they cost in training).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import timm
import torch
from accelerate import Accelerator
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.models.utils import update_momentum
from torch import Tensor, nn

from ssl_toolkit import config
from ssl_toolkit.builders import build_model, build_optimizer
from ssl_toolkit.model import SSLModel, ema_momentum, resolution_groups
from ssl_toolkit.objectives import StepContext
from ssl_toolkit.schedule import lr_factor

if TYPE_CHECKING:
    from gpu_check import Check


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # bare | engine
    channels_last: bool = True
    compiled: bool = False
    guard_sync: bool = True
    ema: bool = False
    host_ema_check: bool = False


VARIANTS = (
    Variant("bare", "bare"),
    Variant("engine", "engine"),
    Variant("engine_as_train", "engine", channels_last=False),
    Variant("engine_no_guard_sync", "engine", guard_sync=False),
    Variant("engine_ema", "engine", ema=True),
    Variant("engine_ema_host_counter", "engine", ema=True, host_ema_check=True),
    Variant("bare_compiled", "bare", compiled=True),
    Variant("engine_compiled", "engine", compiled=True),
)
FULL = {"backbone": "resnet50", "size": 224, "batch": 256, "hidden": 2048, "out": 128, "warmup": 3, "steps": 10}
TINY = {"backbone": "resnet10t", "size": 32, "batch": 8, "hidden": 64, "out": 32, "warmup": 1, "steps": 2}
LOG_EVERY = 10  # the recipe default: one log row (reduce + .item()) every 10 steps


class HostCounterEMA(SSLModel):
    """``SSLModel`` whose EMA update is decided by a host-side step counter, not by reading device buffers."""

    host_ema_step = -1

    @torch.no_grad()
    def _ema_targets(self, views: list[Tensor], ctx: StepContext) -> tuple[Tensor, ...]:
        if self.host_ema_step != ctx.step:
            m = ema_momentum(ctx.progress, *self.ema_momentum)  # type: ignore[misc]
            update_momentum(self.encoder, self.ema_encoder, m)
            update_momentum(self.projector, self.ema_projector, m)
            self.host_ema_step = ctx.step
        batch, globals_ = views[0].shape[0], views[: ctx.n_global]
        h = torch.cat([self.ema_encoder(torch.cat(globals_[a:b])) for a, b in resolution_groups(globals_)])
        return tuple(self.ema_projector(h).split(batch))


def _recipe(check: Check, sizes: dict[str, Any], ema: bool):
    return config.load(None, [
        f"model.backbone={sizes['backbone']}", f"views=[{{name: global, n: 2, size: {sizes['size']}}}]",
        f"train.batch_size={sizes['batch']}", "train.mixed_precision=bf16",
        "objective={name: simclr, temperature: 0.2}",
        f"model.projector_hidden={sizes['hidden']}", f"model.projector_out={sizes['out']}", f"model.ema={ema}",
        "train.warmup_steps=10", f"train.log_every={LOG_EVERY}", f"train.cpu={check.device.type == 'cpu'}",
        "data.root=null", "eval.root=null",
    ])  # fmt: skip


def _compile(module: nn.Module, check: Check) -> None:
    module.compile(backend="eager" if check.tiny else "inductor")


def bare_step(check: Check, sizes: dict[str, Any], variant: Variant, views: list[Tensor]) -> Callable[[], None]:
    """What a user would write with timm + lightly + torch alone."""
    encoder = timm.create_model(sizes["backbone"], pretrained=False, num_classes=0)
    head = SimCLRProjectionHead(encoder.num_features, sizes["hidden"], sizes["out"], 2)
    model = nn.Sequential(encoder, head).to(check.device).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.compiled:  # encoder and head apart, as in the engine variant: its compile then hits the graph cache
        _compile(encoder, check)
        _compile(head, check)
    criterion = NTXentLoss(temperature=0.2, gather_distributed=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-4, nesterov=True)
    x = torch.cat(views)  # (2B, 3, S, S)

    def step() -> None:
        with torch.autocast(check.device.type, dtype=torch.bfloat16):
            z = model(x)
        z0, z1 = z.float().chunk(2)
        criterion(z0, z1).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def engine_step(check: Check, sizes: dict[str, Any], variant: Variant, views: list[Tensor]) -> Callable[[], None]:
    """One step of ``engine.train``'s inner loop, on a model and optimizer built by ``ssl_toolkit.builders``."""
    cfg = _recipe(check, sizes, variant.ema)
    tc, total = cfg.train, sizes["warmup"] + sizes["steps"]
    model = build_model(cfg)
    if variant.host_ema_check:
        model = HostCounterEMA(encoder=model.encoder, projector=model.projector, objective=model.objective,
                               ema_momentum=list(cfg.model.ema_momentum))  # fmt: skip
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.compiled:
        _compile(model.encoder, check)
        _compile(model.projector, check)
    accelerator = Accelerator(mixed_precision="bf16", cpu=check.device.type == "cpu")
    model, optimizer = accelerator.prepare(model, build_optimizer(model, tc))
    core = accelerator.unwrap_model(model)
    ids = torch.arange(views[0].shape[0], device=views[0].device)
    state = {"step": 0}

    def step() -> None:
        s = state["step"]
        with accelerator.accumulate(model):
            ctx = StepContext(step=s, progress=s / total, n_global=2, ids=ids, view_kinds=("global", "global"))
            out = model(views, ctx)
            loss_mean = accelerator.reduce(out.loss.detach(), reduction="mean")
            if variant.guard_sync and not torch.isfinite(loss_mean):
                raise RuntimeError(f"loss is {loss_mean.item()} at step {s}")
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                factor = lr_factor(s, total_steps=total, warmup_steps=tc.warmup_steps, min_ratio=tc.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        state["step"] = s + 1
        core.train_step.fill_(s + 1)
        if (s + 1) % tc.log_every == 0:  # the engine's log row: reduce + host reads
            logs = {k: accelerator.reduce(v.detach().float(), reduction="mean").item() for k, v in out.logs.items()}
            state["log"] = logs | {"loss": loss_mean.item(), "lr": optimizer.param_groups[0]["lr"]}

    step.accelerator = accelerator  # type: ignore[attr-defined]
    return step


def measure(check: Check, sizes: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """Build, warm up and time one variant; free what it held."""
    cuda = check.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(check.device)
    g = torch.Generator(device=check.device).manual_seed(0)
    shape = (sizes["batch"], 3, sizes["size"], sizes["size"])
    views = [torch.randn(shape, generator=g, device=check.device) for _ in range(2)]  # 2 x (B, 3, S, S)
    if variant.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    t0 = time.perf_counter()
    step = (bare_step if variant.kind == "bare" else engine_step)(check, sizes, variant, views)
    for _ in range(sizes["warmup"]):
        step()
    check.sync()
    t1 = time.perf_counter()
    for _ in range(sizes["steps"]):
        step()
    check.sync()
    seconds = (time.perf_counter() - t1) / sizes["steps"]
    row = {
        "variant": variant.name, "channels_last": variant.channels_last, "compiled": variant.compiled,
        "ms_per_step": 1000 * seconds, "images_per_s": sizes["batch"] / seconds,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(check.device) / 2**20) if cuda else None,
        "build_and_warmup_s": round(t1 - t0, 1),
    }  # fmt: skip
    if hasattr(step, "accelerator"):
        step.accelerator.free_memory()
    return row


def _difference(rows: dict[str, dict[str, Any]], a: str, b: str, what: str) -> str | None:
    if a in rows and b in rows:
        delta = rows[a]["ms_per_step"] - rows[b]["ms_per_step"]
        return f"{what}: {a} - {b} = {delta:.2f} ms per step ({100 * delta / rows[b]['ms_per_step']:.1f} %)."
    return None


def resnet50_step_section(check: Check) -> dict[str, Any]:
    """Every variant in turn; a variant that does not fit the time left is skipped with a note."""
    sizes = TINY if check.tiny else FULL
    rows: dict[str, dict[str, Any]] = {}
    table = []
    for variant in VARIANTS:
        needed = 90.0 if variant.compiled and not check.tiny else 10.0
        if check.left() < needed:
            status = f"skipped: {check.left():.0f} s left, needs ~{needed:.0f}"
            table.append({"variant": variant.name, "status": status})
            continue
        try:
            rows[variant.name] = measure(check, sizes, variant)
            table.append(rows[variant.name] | {"status": "ok"})
        except Exception as err:  # noqa: BLE001 - recorded; the other variants still run
            table.append({"variant": variant.name, "status": f"failed: {type(err).__name__}: {err}"[:300]})
        gc.collect()
        if check.device.type == "cuda":
            torch.cuda.empty_cache()
    bare = rows.get("bare", {}).get("ms_per_step")
    for row in table:
        row["ratio_vs_bare"] = row["ms_per_step"] / bare if bare and "ms_per_step" in row else None
    notes = [
        f"{sizes['backbone']}, {sizes['size']} px, batch {sizes['batch']} x 2 views, bf16 autocast, synthetic images "
        f"on the device; {sizes['steps']} timed steps after {sizes['warmup']} warm-up; "
        f"compile backend {'eager (dry run)' if check.tiny else 'inductor'}.",
        _difference(rows, "engine", "engine_no_guard_sync", "NaN guard host read"),
        _difference(rows, "engine_ema", "engine_ema_host_counter", "EMA step checks (two device reads)"),
        _difference(rows, "engine_as_train", "engine", "contiguous vs channels_last"),
    ]
    failed = any(not str(r.get("status", "")).startswith(("ok", "skipped")) for r in table)
    return {"status": "partial" if failed else "ok", "notes": [n for n in notes if n], "tables": {"Steps": table}}
