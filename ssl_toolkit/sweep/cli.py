"""``ssl-toolkit sweep``: the command line of a sweep (``add_parser`` registers it; nothing heavy is imported here)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ssl_toolkit.errors import ConfigError, check_minimums, did_you_mean

SELECT = ("rankme", "lidar", "alpha_req", "knn")  # = ssl_toolkit.sweep.agreement.SELECT (a test checks it)
EVAL_TRAIN = 10_000  # = ssl_toolkit.sweep.trial.EVAL_TRAIN (a test checks it)

DESCRIPTION = """Run RECIPE once per trial for --trial-steps steps with the --param values, on Optuna (grid or TPE),
evaluate every trial (k-NN when the data has labels; RankMe, LiDAR, alpha-ReQ always), choose by --select, and
report how well each label-free metric agrees with k-NN. Each trial is an ordinary run folder in OUT/trials/. The
study lives in --storage: rerunning the same command resumes it (completed trials are kept, unfinished ones are
retried from their checkpoint), and several processes or machines given the same storage share its trials.
Outputs in OUT: winner.yaml, sweep.md, sweep.html, trials.csv, sweep.json, metrics_vs_knn.png (docs/sweep.md)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sweep`` on the ``ssl-toolkit`` subcommands."""
    p = subparsers.add_parser(
        "sweep", help="choose hyper-parameters over short trials with label-free metrics (Optuna)",
        description=DESCRIPTION,
    )  # fmt: skip
    p.add_argument("recipe", help="a shipped recipe's name (ssl-toolkit list recipes), e.g. simclr_fashion_mnist, "
                   "or a recipe file")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value overrides for every trial, e.g. data.subset=20000")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=V1,V2,...",
        help="a swept key: a list of values (grid and tpe) or LOW..HIGH[:log] (tpe); repeat for more keys",
    )  # fmt: skip
    p.add_argument("--select", required=True, help=f"how the winner is chosen: {' | '.join(SELECT)}")
    p.add_argument("--trial-steps", type=int, required=True, help="optimizer steps per trial (train.max_steps)")
    p.add_argument("--sampler", default="grid", help="grid (every combination, default) | tpe (Optuna's TPE)")
    p.add_argument("--trials", type=int, default=None, help="tpe: trials to run (10); grid: at most this many points")
    p.add_argument("--storage", default=None, help="Optuna database URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", default=None, help="study name in the storage (default: RECIPE's name + '-sweep')")
    p.add_argument("--out", default=None, help="output folder (default: runs/sweeps/STUDY)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (give each tpe worker its own)")
    p.add_argument(
        "--eval-train", type=int, default=EVAL_TRAIN,
        help="train images per trial evaluation: k-NN bank, RankMe, alpha-ReQ (%(default)s; 0 = all)",
    )  # fmt: skip
    p.add_argument("--eval-test", type=int, default=0, help="test images per trial evaluation (default 0 = all)")
    p.add_argument(
        "--keep-warmup", action="store_true",
        help="keep train.warmup_steps as the recipe gives it (default: the same share of the trial as of the run)",
    )  # fmt: skip
    p.set_defaults(func=run_command)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.select not in SELECT:
        raise ConfigError(f"unknown --select {args.select!r}{did_you_mean(args.select, SELECT)}; accepted: "
                          f"{', '.join(SELECT)}")  # fmt: skip
    check_minimums((("--trial-steps", args.trial_steps, 1), ("--trials", args.trials, 1),
                    ("--eval-train", args.eval_train, 0), ("--eval-test", args.eval_test, 0)))  # fmt: skip


def build_spec(args: argparse.Namespace):  # noqa: ANN201 - returns ssl_toolkit.sweep.study.SweepSpec
    """The checked `SweepSpec` of the command line (every value loaded into the recipe once)."""
    from ssl_toolkit import config
    from ssl_toolkit.recipe_files import resolve_recipe
    from ssl_toolkit.sweep.space import parse_space
    from ssl_toolkit.sweep.study import SweepSpec
    from ssl_toolkit.sweep.trial import has_labels

    _check(args)
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("ssl-toolkit sweep needs Optuna: pip install 'ssl-toolkit[optuna]'")
    args.recipe = str(resolve_recipe(args.recipe))  # a shipped recipe's name, as `train` takes it
    cfg = config.load(args.recipe, args.overrides)
    params = parse_space(args.param, recipe=args.recipe, overrides=list(args.overrides), sampler=args.sampler)
    if args.select == "knn" and not has_labels(cfg):
        raise ConfigError(
            f"--select knn needs labels, and {cfg.eval.dataset or cfg.data.name} at {cfg.eval.root or cfg.data.root} "
            "has none (or no labelled test split); choose without labels: --select rankme | lidar | alpha_req"
        )
    study = args.study or f"{cfg.name}-sweep"
    return SweepSpec(
        recipe=args.recipe, params=params, select=args.select, trial_steps=args.trial_steps,
        out=Path(args.out or Path("runs") / "sweeps" / study), overrides=list(args.overrides), sampler=args.sampler,
        trials=args.trials, storage=args.storage, study=study, seed=args.seed, eval_train=args.eval_train or None,
        eval_test=args.eval_test or None, scale_warmup=not args.keep_warmup,
    )  # fmt: skip


def run_command(args: argparse.Namespace) -> int:
    from ssl_toolkit.sweep.runner import run_sweep

    spec = build_spec(args)
    try:
        run_sweep(spec)
    except KeyboardInterrupt:
        print(f"ssl-toolkit: sweep interrupted; rerun the same command to resume (study {spec.study} in "
              f"{spec.storage_url})", file=sys.stderr)  # fmt: skip
        return 130
    return 0
