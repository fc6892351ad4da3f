"""Writing a bank of generated views: shard the work, batch it, validate and write each image, log its row.

Layout: ``<out>/images/<source key>/v<variant>.<ext>`` (``unconditional/<index:06d>/v0`` for unconditional
samples), ``<out>/manifest.jsonl`` (see ``manifest.py``) and ``<out>/generation.json`` (the run's arguments).
Item ``i`` (a source image, or an unconditional sample) belongs to process ``i % world``; every output gets
its own ``torch.Generator`` seeded with ``mix_seeds(seed, i, variant) % 2**63``, so neither the batch size nor
the number of processes changes any image. A run skips every ``(src_id, variant_id)`` already in a manifest
of the bank, so an interrupted run resumes where it stopped. Before a file is written its pixels must be
finite and of the requested size; after, it must decode. Images are saved as RGB, never BGR (AdaInf's
``cv2.imread`` pitfall, spec §3.3). Hand-written: the loop is where sharding, resumption and validation meet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import ConfigError, check_minimums
from ssl_toolkit.generation.images import FORMATS
from ssl_toolkit.generation.loading import (
    check_model_folder,
    model_revision,
    pipeline_class_name,
    resolve_device,
    resolve_dtype,
)
from ssl_toolkit.generation.manifest import ShardWriter, merge_manifests, read_manifest, row_key, write_atomic
from ssl_toolkit.generation.pipelines import GENERATORS, ViewGenerator, load_generator
from ssl_toolkit.generation.settings import GenSettings
from ssl_toolkit.generation.sources import Sources
from ssl_toolkit.generation.work import LevelFn, Run, Scorer, units


@dataclass
class BankResult:
    """What a run did: counts of this process's items, seconds, and why each invalid output was rejected."""

    bank: Path
    generated: int = 0
    skipped: int = 0
    invalid: list[str] = field(default_factory=list)
    seconds: float = 0.0
    merged: bool = False

    @property
    def images_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """Lines for the terminal: counts, speed, bank path, and the first invalid outputs."""
        lines = [
            f"generated {self.generated}, skipped {self.skipped} (already in the manifest), invalid "
            f"{len(self.invalid)}; {self.seconds:.1f} s, {self.images_per_s:.2f} images/s",
            f"bank: {self.bank}",
        ]
        lines += [f"  invalid: {reason}" for reason in self.invalid[:10]]
        if len(self.invalid) > 10:
            lines.append(f"  ... and {len(self.invalid) - 10} more invalid outputs")
        return "\n".join(lines)


def _process_layout(num_shards: int, shard_index: int, device: str | None) -> tuple[int, int, Any]:
    """(global rank, global world, accelerate state or None): ``--num-shards`` splits machines, accelerate
    the processes of one machine, so rank ``shard_index * processes + process`` of ``num_shards * processes``."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index must be in [0, --num-shards), got {shard_index} of {num_shards}")
    state = None
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    if expected > 1:  # under accelerate launch or torchrun
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=(device or "auto") == "cpu" or not torch.cuda.is_available())
        if state.num_processes != expected:
            raise ConfigError(
                f"WORLD_SIZE={expected} but accelerate sees {state.num_processes} process(es); on CPU use "
                "`accelerate launch --multi_gpu --num_processes N` or torchrun"
            )
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    return shard_index * world + rank, num_shards * world, state


def _sum_over_processes(result: BankResult) -> None:
    """Replace this process's counts by the totals over every process of the accelerate world."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (result.generated, result.skipped, result.invalid))
    result.generated = sum(p[0] for p in parts)
    result.skipped = sum(p[1] for p in parts)
    result.invalid = [reason for p in parts for reason in p[2]]


def _adaptive(settings: GenSettings, scorer: Scorer | None, kwargs: dict | None, to_levels: LevelFn | None):
    """The (scorer, ratio -> level) pair of an adaptive run, importing ``foreground`` only for what is missing."""
    if scorer is None:
        from ssl_toolkit.generation.foreground import build_scorer

        scorer = build_scorer(str(settings.scorer), **(kwargs or {}))
    if to_levels is None:
        from ssl_toolkit.generation.foreground import noise_level_from_fg_ratio as to_levels
    return scorer, to_levels


def generate_bank(
    out: str | Path,
    settings: GenSettings,
    *,
    model: str | Path | None,
    source: str | None = None,
    root: str | None = None,
    split: str = "train",
    variants: int = 1,
    limit: int | None = None,
    num_unconditional: int | None = None,
    size: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    image_format: str = "png",
    device: str | None = "auto",
    dtype: str | None = "auto",
    scheduler: str = "auto",
    scorer: Scorer | None = None,
    scorer_kwargs: dict | None = None,
    noise_levels: LevelFn | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    adapter: ViewGenerator | None = None,
    progress: bool = True,
) -> BankResult:
    """Generate this process's share of a bank into ``out`` and merge the manifest when every share is done.

    Args:
        out: bank folder (created).
        settings: from ``settings.resolve_settings``.
        model: local model folder; ``adapter`` (an already loaded one, e.g. reused across calls) wins.
        source, root, split, limit: the source dataset (``Sources``); unused by ``unconditional``.
        variants: outputs per source image; ``num_unconditional``: samples of ``unconditional``.
        size: square output side; None: the source's size for pixel models, the model's or 512 otherwise.
        batch_size, seed, image_format, device, dtype, scheduler: see ``ssl-toolkit generate-views -h``.
        scorer: adaptive noise level: foreground-ratio function (default: ``foreground.build_scorer(
            settings.scorer, **scorer_kwargs)``); ``noise_levels`` maps ratios to levels (default: GenView's bins).
        num_shards, shard_index: split the items across separate runs (merge later with ``merge_manifests``).
        progress: show a progress bar on the main process.

    Raises:
        ConfigError: invalid arguments, a model folder of the wrong layout, or a bank made with other settings.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser().resolve()
    if image_format not in FORMATS:
        raise ConfigError(f"--format {image_format!r} is unknown; accepted: {', '.join(FORMATS)}")
    check_minimums((("--variants", variants, 1), ("--batch-size", batch_size, 1), ("--size", size, 1)))
    if settings.needs_source:
        if num_unconditional is not None:
            raise ConfigError("--num-unconditional only applies to --generator unconditional")
        if not source:
            raise ConfigError(f"--generator {settings.kind} needs --source (fashion_mnist or image_folder)")
    elif num_unconditional is None or num_unconditional < 1 or variants != 1:
        raise ConfigError("--generator unconditional needs --num-unconditional N >= 1 (and no --variants)")
    kind_cls = GENERATORS[settings.kind]
    folder = adapter.model_path if adapter is not None else check_model_folder(model, pixel=kind_cls.pixel)
    revision = model_revision(folder)
    rank, world, state = _process_layout(num_shards, shard_index, device)
    main = state is None or state.process_index == 0
    sources = Sources(source, split=split, root=root, limit=limit) if settings.needs_source else None  # type: ignore[arg-type]
    count = len(sources) if sources is not None else int(num_unconditional)  # type: ignore[arg-type]

    out.mkdir(parents=True, exist_ok=True)
    existing = read_manifest(out)
    ours = {"generator": settings.kind, "pipeline": pipeline_class_name(folder, kind_cls.pipeline_class)}
    ours["model_revision"] = revision
    for row in existing[:1]:
        clash = {k: (row.get(k), v) for k, v in ours.items() if row.get(k) != v}
        if clash:
            desc = "; ".join(f"{k}: bank has {a!r}, this run {b!r}" for k, (a, b) in clash.items())
            raise ConfigError(f"the bank {out} was generated with other settings ({desc}); use another --out")
    done = {row_key(r) for r in existing}
    mine = list(units(sources, count, variants, seed, FORMATS[image_format][1], rank, world))
    pending = [u for u in mine if (u.item if sources is not None else -1, u.variant) not in done]
    result = BankResult(bank=out, skipped=len(mine) - len(pending))
    if main:
        args = {
            "settings": asdict(settings), "model": str(folder), "model_revision": revision, "source": source,
            "root": root, "split": split, "variants": variants, "limit": limit, "num_unconditional": num_unconditional,
            "size": size, "batch_size": batch_size, "seed": seed, "format": image_format, "device": device,
            "dtype": dtype, "scheduler": scheduler, "num_shards": num_shards,
        }  # fmt: skip
        write_atomic(out / "generation.json", (json.dumps(args, indent=2) + "\n").encode())

    writer = ShardWriter(out, rank, world)
    try:
        if pending:
            if adapter is None:
                dev = resolve_device(device)
                if state is not None and dev.type == "cuda" and (device or "auto") in ("auto", "cuda"):
                    dev = state.device  # this process's GPU
                adapter = load_generator(
                    settings, folder, device=dev, dtype=resolve_dtype(dtype, dev), scheduler=scheduler
                )
            score = _adaptive(settings, scorer, scorer_kwargs, noise_levels) if settings.adaptive else None
            run = Run(adapter, sources, writer, size=size, image_format=image_format, revision=revision, score=score)
            run.all(pending, batch_size=batch_size, progress=progress and main, total=len(mine))
            result.generated, result.invalid = run.generated, run.invalid
        writer.finish()
    finally:
        writer.close()
    if state is not None:
        state.wait_for_everyone()
        _sum_over_processes(result)
    if num_shards == 1 and main:  # every process of this world has finished: fold the shards
        merge_manifests(out, require_complete=False)
        result.merged = True
    result.seconds = time.perf_counter() - t0
    return result
