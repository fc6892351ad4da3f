"""Command line: ``ssl-toolkit train | eval | export | report`` (also ``python -m ssl_toolkit``).

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
        seed=cfg.train.seed,
        out_path=run_dir / "metrics.json",
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
        linear_epochs=args.linear_epochs,
        out_path=args.out,
    )
    print(format_table(results))
    run_dir = Path(args.encoder_dir).parent
    if args.out is None and (run_dir / "recipe.yaml").is_file():  # an encoder inside a run folder
        _auto_report(run_dir)
    return 0


def _export(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from ssl_toolkit import config, engine
    from ssl_toolkit.builders import build_base_dataset, build_model
    from ssl_toolkit.checkpoint import last_checkpoint
    from ssl_toolkit.errors import ConfigError

    run_dir = Path(args.run_dir)
    ckpt = last_checkpoint(run_dir / "checkpoints")
    if ckpt is None or not (run_dir / "recipe.yaml").is_file():
        raise ConfigError(f"{run_dir} has no recipe.yaml or checkpoints/last; is it a run folder?")
    cfg = config.load(run_dir / "recipe.yaml")
    model = build_model(cfg)
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    out = engine.export_run(cfg, model.encoder, build_base_dataset(cfg.data), run_dir, int(model.train_step))
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-toolkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="pretrain from a recipe, export the encoder, evaluate it")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/pretrain/simclr_fashion_mnist.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=10")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="k-NN, linear probe and RankMe of an exported encoder")
    p.add_argument("encoder_dir")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist | image_folder")
    p.add_argument("--root", default=None, help="dataset root (image_folder: folder with train/ and test/)")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if it is not on disk")
    p.add_argument("--size", type=int, default=None, help="eval resolution (default: the export's input size)")
    p.add_argument("--no-floors", action="store_true", help="skip the raw-pixel and random-init floors")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--out", default=None, help="metrics.json path (default: beside the encoder folder)")
    p.set_defaults(func=_eval)
    p = sub.add_parser("export", help="export the encoder of a run folder from its last checkpoint")
    p.add_argument("run_dir")
    p.set_defaults(func=_export)
    p = sub.add_parser("report", help="write report.html (curves, monitoring, metrics, views, neighbours)")
    p.add_argument("run_dir", help="a run folder, e.g. runs/simclr_fashion_mnist")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ssl_toolkit.errors import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"ssl-toolkit: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if type(err).__name__ == "NonFiniteLossError":
            print(f"ssl-toolkit: stopped: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
