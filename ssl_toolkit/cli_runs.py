"""``ssl-toolkit eval | export | report``: commands that read a run folder or an export (never running its code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    _add_eval(sub)
    p = sub.add_parser(
        "export",
        help="export the encoder of a run folder from its last checkpoint",
        description="Write RUN/encoder (model.safetensors + config.json that timm reloads) from "
        "RUN/checkpoints/last; training writes it too, so this is for runs stopped early.",
    )
    p.add_argument("run_dir", help="a run folder, e.g. runs/simclr_fashion_mnist")
    p.set_defaults(func=_export)
    p = sub.add_parser(
        "report",
        help="write RUN/report.html (curves, monitoring, metrics, views, neighbours)",
        description="Write RUN/report.html and its PNGs from the files the run wrote; train does this itself.",
    )
    p.add_argument("run_dir", help="a run folder, e.g. runs/simclr_fashion_mnist")
    p.set_defaults(func=_report)


def auto_report(run_dir: Path) -> Path | None:
    """Write the run report; a failure here is reported in one line and never fails the finished run."""
    from ssl_toolkit.report import write_report

    try:
        return write_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the run itself succeeded
        print(f"ssl-toolkit: warning: the report could not be written: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def run_eval_after_train(cfg: Any, run_dir: Path) -> Path:
    """Evaluate the run's export as ``cfg.eval`` says; print the table; return the metrics file."""
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
    print(format_table(results))
    return run_dir / "metrics.json"


def _report(args: argparse.Namespace) -> int:
    from ssl_toolkit.report import write_report

    args.warning_lines.use_run(Path(args.run_dir))
    print(write_report(args.run_dir))
    return 0


def _check_eval_args(args: argparse.Namespace) -> None:
    """Refuse option values `eval` cannot use, in one line, before the encoder or any data is loaded."""
    from ssl_toolkit.data.datasets import DATASETS
    from ssl_toolkit.errors import ConfigError, check_minimums, did_you_mean

    if args.dataset is not None and args.dataset not in DATASETS:
        raise ConfigError(
            f"unknown --dataset {args.dataset!r}{did_you_mean(args.dataset, DATASETS)}; "
            f"accepted: {', '.join(sorted(DATASETS))}"
        )
    check_minimums((
        ("--size", args.size, 1), ("--max-train", args.max_train, 1), ("--max-test", args.max_test, 1),
        ("--batch-size", args.batch_size, 1), ("--linear-epochs", args.linear_epochs, 1),
        ("--rankme-samples", args.rankme_samples, 2), ("--lidar-samples", args.lidar_samples, 0),
        ("--lidar-views", args.lidar_views, 2),
    ))  # fmt: skip
    bad = [lr for lr in args.linear_lrs if not lr > 0]
    if bad:
        raise ConfigError(f"--linear-lrs must all be > 0, got {bad[0]}")


def _eval(args: argparse.Namespace) -> int:
    from ssl_toolkit.evaluate import evaluate_encoder_dir, format_table

    _check_eval_args(args)
    run_dir = Path(args.encoder_dir).parent
    if (run_dir / "recipe.yaml").is_file():  # an export inside a run: skipped files are listed there once
        args.warning_lines.use_run(run_dir, record=args.dataset is None and args.root is None)
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
    if metrics == run_dir / "metrics.json" and (run_dir / "recipe.yaml").is_file():  # the run's own metrics
        report = auto_report(run_dir)
        if report is not None:
            print(f"report: {report}")
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
    p.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="use a seeded subset of this many train images (k-NN bank, probe training, RankMe)",
    )
    p.add_argument(
        "--max-test",
        type=int,
        default=None,
        help="use a seeded subset of this many test images (k-NN queries, probe test)",
    )
    p.add_argument("--batch-size", type=int, default=d.EVAL_BATCH_SIZE, help="images per encoder forward (%(default)s)")
    p.add_argument(
        "--linear-epochs",
        type=int,
        default=d.LINEAR_EPOCHS,
        help="epochs of the linear probe on cached frozen features (%(default)s)",
    )
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
