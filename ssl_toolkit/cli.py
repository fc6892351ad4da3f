"""Command line: ``ssl-toolkit train | eval | export | report | generate-views | fit-foreground-pca``.

``python -m ssl_toolkit ...`` is the same.

Recipe problems exit with status 2 and one line naming the problem and the accepted values; a run that
stops on a NaN loss exits with status 1 and says at which step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _train(args: argparse.Namespace) -> int:
    from ssl_toolkit import config

    cfg = config.load(args.recipe, args.overrides)  # validated before anything heavy is built
    from ssl_toolkit import engine

    t0 = time.perf_counter()
    run_dir = engine.train(cfg)
    train_s = time.perf_counter() - t0
    if not (cfg.eval.after_train and _is_main_process()):
        return 0
    from ssl_toolkit.evaluate import evaluate_encoder_dir, format_table

    e = cfg.eval
    results = evaluate_encoder_dir(
        run_dir / "encoder",
        dataset=e.dataset or cfg.data.name,
        root=e.root or cfg.data.root,
        download=cfg.data.download,
        size=e.size,
        floors=e.floors,
        max_train=e.max_train,
        max_test=e.max_test,
        batch_size=e.batch_size,
        linear_epochs=e.linear_epochs,
        linear_lrs=list(e.linear_lrs),
        rankme_samples=e.rankme_samples,
        lidar_samples=e.lidar_samples,
        lidar_views=e.lidar_views,
        seed=cfg.train.seed,
        out_path=run_dir / "metrics.json",
        log=print,
    )
    total_s = time.perf_counter() - t0
    print(f"\n{cfg.name}: {run_dir}  (pretrain {train_s / 60:.1f} min, total {total_s / 60:.1f} min)")
    print(format_table(results))
    print(f"metrics: {run_dir / 'metrics.json'}")
    _auto_report(run_dir)
    return 0


def _auto_report(run_dir: Path) -> None:
    """Write the run report; a failure here is reported in one line and never fails the finished run."""
    from ssl_toolkit.report import write_report

    try:
        print(f"report: {write_report(run_dir)}")
    except Exception as err:  # noqa: BLE001 - the run itself succeeded
        print(f"ssl-toolkit: warning: the report could not be written: {type(err).__name__}: {err}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    from ssl_toolkit.report import write_report

    print(write_report(args.run_dir))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ssl_toolkit.evaluate import evaluate_encoder_dir, format_table

    results = evaluate_encoder_dir(
        args.encoder_dir,
        dataset=args.dataset,
        root=args.root,
        download=args.download,
        size=args.size,
        floors=not args.no_floors,
        max_train=args.max_train,
        max_test=args.max_test,
        batch_size=args.batch_size,
        linear_epochs=args.linear_epochs,
        linear_lrs=args.linear_lrs,
        rankme_samples=args.rankme_samples,
        lidar_samples=args.lidar_samples,
        lidar_views=args.lidar_views,
        seed=args.seed,
        out_path=args.out,
        log=print,
    )
    print(format_table(results))
    metrics = Path(results["setup"]["metrics_path"])
    print(f"metrics: {metrics}")
    run_dir = Path(args.encoder_dir).parent
    if metrics == run_dir / "metrics.json" and (run_dir / "recipe.yaml").is_file():  # the run's own metrics
        _auto_report(run_dir)
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from ssl_toolkit.eval import defaults as d  # plain constants: no torch import for --help

    p = sub.add_parser(
        "eval",
        help="k-NN, linear probe, RankMe, alpha-ReQ and LiDAR of an exported encoder (label-free without labels)",
        description="Score an exported encoder and two floors (raw pixels, random init). The dataset, root and "
        "size default to those recorded with the export; other data is written to metrics-<dataset>.json, "
        "never over the run's metrics.json. Definitions: docs/evaluation.md.",
    )
    p.add_argument("encoder_dir", help="an export folder (config.json + model.safetensors), e.g. runs/NAME/encoder")
    p.add_argument(
        "--dataset",
        default=None,
        help="fashion_mnist | image_folder | webdataset | hf_dataset (default: the export's own)",
    )
    p.add_argument(
        "--root", default=None, help="dataset root (image_folder: folder with train/ and test/, or a flat folder "
        "for a label-free evaluation; default: the export's own)"
    )  # fmt: skip
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if it is not on disk")
    p.add_argument("--size", type=int, default=None, help="eval resolution in px (default: the export's input size)")
    p.add_argument("--no-floors", action="store_true", help="skip the raw-pixel and random-init floors")
    p.add_argument("--max-train", type=int, default=None, help="evaluate on a seeded subset of this many train images")
    p.add_argument("--max-test", type=int, default=None, help="... and of this many test images")
    p.add_argument("--batch-size", type=int, default=d.EVAL_BATCH_SIZE, help="images per encoder forward (%(default)s)")
    p.add_argument("--linear-epochs", type=int, default=d.LINEAR_EPOCHS, help="linear-probe epochs (%(default)s)")
    p.add_argument(
        "--linear-lrs", type=float, nargs="+", default=list(d.LINEAR_LRS),
        help="linear-probe learning-rate grid, each with and without BatchNorm (%(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--rankme-samples", type=int, default=d.RANKME_SAMPLES,
        help="train features for RankMe, alpha-ReQ and the embedding statistics (%(default)s)",
    )  # fmt: skip
    p.add_argument("--lidar-samples", type=int, default=d.LIDAR_SAMPLES, help="train images for LiDAR (%(default)s)")
    p.add_argument("--lidar-views", type=int, default=d.LIDAR_VIEWS, help="simclr views per LiDAR image (%(default)s)")
    p.add_argument("--seed", type=int, default=d.SEED, help="seeds subsets, views and the probe (%(default)s)")
    p.add_argument(
        "--out", default=None, help="metrics file (default: RUN/metrics.json for the run's own data, "
        "RUN/metrics-<dataset>.json for other data)"
    )  # fmt: skip
    p.set_defaults(func=_eval)


def _export(args: argparse.Namespace) -> int:
    from ssl_toolkit import config
    from ssl_toolkit.checkpoint import last_checkpoint
    from ssl_toolkit.data.datasets import NORMALIZATION
    from ssl_toolkit.errors import ConfigError
    from ssl_toolkit.export import export_checkpoint
    from ssl_toolkit.run_folder import CHECKPOINTS, RECIPE

    run_dir = Path(args.run_dir)
    ckpt = last_checkpoint(run_dir / CHECKPOINTS)
    if ckpt is None or not (run_dir / RECIPE).is_file():
        raise ConfigError(f"{run_dir} has no {RECIPE} or {CHECKPOINTS}/last; is it a run folder?")
    cfg = config.load(run_dir / RECIPE, allow_import=False)  # a run folder never runs code
    mean, std = NORMALIZATION[cfg.data.name]
    print(export_checkpoint(cfg, ckpt, mean=mean, std=std, run_dir=run_dir))
    return 0


def _generate_views(args: argparse.Namespace) -> int:
    from ssl_toolkit.generation import generate_bank, merge_manifests, read_manifest, resolve_settings

    if args.merge_only:
        path = merge_manifests(args.out)
        print(f"merged {len(read_manifest(args.out))} rows into {path}")
        return 0
    settings = resolve_settings(
        args.generator,
        steps=args.steps,
        guidance=args.guidance,
        noise_level=args.noise_level,
        strength=args.strength,
        prompt=args.prompt,
        scorer=args.scorer,
    )
    given = {"model_path": args.scorer_model, "pca_path": args.scorer_pca, "arch": args.scorer_arch}
    scorer_kwargs = {k: v for k, v in given.items() if v is not None}
    from ssl_toolkit.errors import ConfigError

    if scorer_kwargs and not settings.adaptive:
        raise ConfigError("--scorer-model/--scorer-pca/--scorer-arch only apply with --noise-level adaptive")
    if settings.scorer == "clip_pca" and (args.scorer_model is None or args.scorer_pca is None):
        raise ConfigError(
            "--scorer clip_pca (the default adaptive scorer) needs --scorer-model PATH and --scorer-pca PATH "
            "(a local timm model and its foreground PCA); or use --scorer saliency"
        )
    result = generate_bank(
        args.out,
        settings,
        model=args.model,
        source=args.source if settings.needs_source else None,
        root=args.root,
        split=args.split,
        variants=args.variants,
        limit=args.limit,
        num_unconditional=args.num_unconditional,
        size=args.size,
        batch_size=args.batch_size,
        seed=args.seed,
        image_format=args.format,
        device=args.device,
        dtype=args.dtype,
        scheduler=args.scheduler,
        scorer_kwargs=scorer_kwargs,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
    )
    if _is_main_process():
        print(result.summary())
        if args.num_shards > 1:
            print(f"shard {args.shard_index} of {args.num_shards} done; when all are, run: "
                  f"ssl-toolkit generate-views --merge-only --out {args.out}")  # fmt: skip
    return 1 if result.invalid else 0


def _fit_foreground_pca(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ssl_toolkit.generation.foreground import fit_foreground_pca_from_images, save_foreground_pca
    from ssl_toolkit.generation.sources import Sources

    sources = Sources(args.source, split=args.split, root=args.root, limit=args.limit)
    if len(sources) == 0:
        from ssl_toolkit.errors import ConfigError

        raise ConfigError(f"no source images in {args.source} ({args.root or 'default root'}), split {args.split}")
    side = args.size or max(sources.image(0).size)  # one side so batches stack; the model resizes again
    batches = []  # uint8 (B, 3, side, side); read twice by the fit (covariance, then alpha)
    for start in range(0, len(sources), args.batch_size):
        arrays = [
            np.asarray(sources.image(i).convert("RGB").resize((side, side)), dtype=np.uint8)
            for i in range(start, min(start + args.batch_size, len(sources)))
        ]
        batches.append(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())
    pca = fit_foreground_pca_from_images(
        args.model, batches, arch=args.arch, fg_fraction=args.fg_fraction, device=args.device
    )
    path = save_foreground_pca(args.out, pca)
    print(f"foreground PCA of {pca.model_name or args.model} on {len(sources)} images "
          f"(alpha {pca.alpha:.4g}, fg_fraction {pca.fg_fraction}) -> {path}")  # fmt: skip
    return 0


def _pack(args: argparse.Namespace) -> int:
    from ssl_toolkit.data.pack import pack_folder

    labelled = {"auto": None, "yes": True, "no": False}[args.labels]
    result = pack_folder(args.folder, args.out, shard_size=args.shard_size, max_bytes=args.max_bytes, labelled=labelled)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-toolkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="pretrain from a recipe, export the encoder, evaluate it")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/pretrain/simclr_fashion_mnist.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=10")
    p.set_defaults(func=_train)
    _add_eval(sub)
    p = sub.add_parser("export", help="export the encoder of a run folder from its last checkpoint")
    p.add_argument("run_dir")
    p.set_defaults(func=_export)
    p = sub.add_parser("report", help="write report.html (curves, monitoring, metrics, views, neighbours)")
    p.add_argument("run_dir", help="a run folder, e.g. runs/simclr_fashion_mnist")
    p.set_defaults(func=_report)
    _add_generate_views(sub)
    _add_fit_foreground_pca(sub)
    _add_pack(sub)
    from ssl_toolkit.sweep.cli import add_parser as add_sweep  # ssl-toolkit sweep (its own module)

    add_sweep(sub)
    return parser


def _add_generate_views(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate-views",
        help="write a bank of generated variants of a dataset (diffusers; local model folders only)",
        description="Generate variants of every source image (or unconditional samples) into BANK/images/ with "
        "one manifest row per image; resumable, shardable (accelerate launch, or --num-shards/--shard-index).",
    )
    p.add_argument("--out", required=True, help="bank folder")
    p.add_argument("--merge-only", action="store_true", help="only merge the manifest shards of --out")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | image_folder")
    p.add_argument("--root", default=None, help="dataset root (image_folder: the folder of images)")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="only the first N source images (trials)")
    p.add_argument("--generator", default="unclip", help="unclip | variation | img2img | pixel_img2img | unconditional")
    p.add_argument("--model", default=None, help="local model folder (save_pretrained layout or an HF snapshot)")
    p.add_argument("--variants", type=int, default=1, help="variants per source image")
    p.add_argument("--num-unconditional", type=int, default=None, help="samples to draw (unconditional)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default per generator; unclip 20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unclip 10)")
    p.add_argument("--noise-level", default=None, help="unclip embedding noise: an int in [0, 999] or 'adaptive'")
    p.add_argument("--scorer", default=None, help="adaptive noise level: saliency | clip_pca (default)")
    p.add_argument("--scorer-model", default=None, help="clip_pca: timm export folder or weights file")
    p.add_argument("--scorer-pca", default=None, help="clip_pca: PCA file fitted on that model's tokens")
    p.add_argument("--scorer-arch", default=None, help="clip_pca: timm model name, for a weights file")
    p.add_argument("--strength", type=float, default=None, help="SDEdit (img2img kinds): latent noise in (0, 1]")
    p.add_argument("--prompt", default=None, help="text prompt (unclip, img2img; default empty)")
    p.add_argument("--size", type=int, default=None, help="square output side (default: source size / 512)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="png", help="png (lossless, default) | webp | jpeg (quality 95)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on cuda, fp32 on cpu) | fp32 | fp16 | bf16")
    p.add_argument("--scheduler", default="auto", help="auto (the model's) | ddim | ddpm")
    p.add_argument("--num-shards", type=int, default=1, help="split the items across this many separate runs")
    p.add_argument("--shard-index", type=int, default=0, help="which of --num-shards this run is")
    p.set_defaults(func=_generate_views)


def _add_fit_foreground_pca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-foreground-pca",
        help="fit GenView's foreground PCA of a local timm model (for --scorer clip_pca and quality_weights)",
        description="Project the patch tokens of a local timm model (a CLIP ViT in GenView) on their first "
        "principal vector, oriented so that central tokens score higher, with alpha the (1 - fg_fraction) "
        "quantile; writes a safetensors file for generate-views --scorer-pca and quality_weights.pca_path.",
    )
    p.add_argument("--model", required=True, help="timm export folder (save_for_hf) or weights file (+ --arch)")
    p.add_argument("--arch", default=None, help="timm model name with tag, for a weights file")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | image_folder")
    p.add_argument("--root", default=None, help="dataset root (image_folder: the folder of images)")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=10_000, help="fit on the first N images (GenView: 10,000)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="common side to stack images of different sizes "
        "(default: the first image's); the model then resizes to its own input size",
    )
    p.add_argument("--fg-fraction", type=float, default=0.4, help="share of tokens above alpha (GenView: ~0.4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.set_defaults(func=_fit_foreground_pca)


def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="write an image folder as WebDataset tar shards (train with data.name=webdataset data.root=OUT)",
        description="Write the images of FOLDER (class sub-folders become labels, train/ and test/ or val/ "
        "become separate shard sets) as uncompressed WebDataset shards with their original bytes; corrupt "
        "files are skipped and counted; the shard index is built at the end.",
    )
    p.add_argument("folder", help="image folder (as for data.name=image_folder)")
    p.add_argument("--out", required=True, help="output folder for the shards (must not hold shards yet)")
    p.add_argument("--shard-size", type=int, default=10_000, help="at most this many images per shard")
    p.add_argument("--max-bytes", type=float, default=1e9, help="close a shard once it holds this many bytes")
    p.add_argument("--labels", choices=("auto", "yes", "no"), default="auto", help="auto: class sub-folders")
    p.set_defaults(func=_pack)


def main(argv: list[str] | None = None) -> int:
    from ssl_toolkit.errors import ConfigError, TrainingStopped

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"ssl-toolkit: error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"ssl-toolkit: stopped: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
