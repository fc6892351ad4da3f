"""The measured study: every objective at its own learning rate (and temperature), chosen with and without labels.

    python eval/objective_study.py --dry-run       # the plan and its expected duration, nothing runs
    python eval/objective_study.py                 # the study (hours); rerun the same command to resume it
    python eval/objective_study.py --tiny          # minutes: the same pipeline, 512 images, 3 steps a trial

For every objective in the registry (`ssl_toolkit.objectives.OBJECTIVES`) with a recipe
``recipes/pretrain/<name>_fashion_mnist.yaml``, one ``ssl-toolkit sweep`` of that recipe on Fashion-MNIST:

- learning rates `LRS` (GroCo's own grid around the authors' 6.0, 20x the others': docs/objectives.md, "groco"),
- times the temperatures `TAUS` for the InfoNCE objectives (isogclr: its initial per-sample tau, which a
  one-epoch trial barely moves: each sample's tau is updated only when the sample is in a batch, once per epoch),
- each trial ``--trial-steps`` optimizer steps (default 234 = one epoch of 60,000 images at batch 256), the
  warm-up scaled to the same share of the trial as of the full run, evaluated on 10,000 train / all 10,000 test
  images (k-NN, linear, RankMe, alpha-ReQ, LiDAR).

Then one Markdown section for ``eval/RESULTS.md``: per objective and label-free metric, the Spearman correlation
with k-NN across its trials and the k-NN gap of its pick, and each objective's chosen settings (by ``--select``
and by k-NN). Written to ``<out>/STUDY.md`` and printed. Each objective's sweep folder ``<out>/<name>/`` holds
its trials (ordinary run folders), ``sweep.md``/``sweep.html`` and ``winner.yaml``.

Expected duration (``--dry-run`` prints it for the chosen options): 5 InfoNCE objectives x 4 lrs x 2 taus + SwAV
and GroCo x 4 lrs = 48 trials; a trial trains 234 x 256 = 59,904 images, 150-240 s at 250-400 images/s on 2 CPU
cores, plus about 60 s of start-up, evaluation and report: 48 x 210-300 s = 2.8-4.0 hours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "eval"))

from init_gradients import machine  # noqa: E402  (eval/init_gradients.py: CPU model, cores, GPU)

from ssl_toolkit import cli  # noqa: E402
from ssl_toolkit.objectives import OBJECTIVES  # noqa: E402

PRETRAIN = REPO / "recipes" / "pretrain"
LRS = {"groco": (0.375, 1.5, 6.0, 24.0)}  # a factor of 4 around the authors' 6.0 at batch 256
DEFAULT_LRS = (0.1, 0.3, 1.0, 3.0)
TAUS = {"simclr": "temperature", "dcl": "temperature", "dclw": "temperature", "mochi": "temperature",
        "isogclr": "tau_init"}  # fmt: skip
TAU_VALUES = (0.1, 0.2)
TRIAL_STEPS = 234  # one epoch of Fashion-MNIST at batch 256
OVERHEAD_S = 60  # start-up, evaluation (10k + 10k features, LiDAR, linear probe) and report per trial
TINY = ["data.subset=512", "train.batch_size=32", "eval.lidar_samples=32", "eval.linear_epochs=1", "monitor.every=0"]
TITLES = {"rankme": "RankMe", "lidar": "LiDAR", "alpha_req": "alpha-ReQ"}


def plan(tiny: bool) -> list[tuple[str, Path, list[str]]]:
    """(objective, recipe, --param arguments) for every objective with a Fashion-MNIST recipe."""
    rows = []
    for name in OBJECTIVES:
        recipe = PRETRAIN / f"{name}_fashion_mnist.yaml"
        if not recipe.is_file():
            print(f"skipping {name}: no {recipe.relative_to(REPO)}")
            continue
        lrs = LRS.get(name, DEFAULT_LRS)[: 3 if tiny else None]  # 3: a Spearman needs 3 trials
        params = ["--param", "train.lr=" + ",".join(f"{lr:g}" for lr in lrs)]
        if name in TAUS:
            params += [
                "--param",
                f"objective.{TAUS[name]}=" + ",".join(f"{t:g}" for t in TAU_VALUES[: 1 if tiny else None]),
            ]
        rows.append((name, recipe, params))
    return rows


def trial_count(params: list[str]) -> int:
    n = 1
    for value in params[1::2]:
        n *= len(value.split("=", 1)[1].split(","))
    return n


def estimate(rows: list, steps: int, batch: int, img_per_s: tuple[float, float]) -> str:
    trials = sum(trial_count(p) for _, _, p in rows)
    low, high = (trials * (steps * batch / rate + OVERHEAD_S) / 3600 for rate in sorted(img_per_s, reverse=True))
    return (f"{trials} trials x ({steps} steps x {batch} images at {img_per_s[0]:g}-{img_per_s[1]:g} images/s "
            f"+ {OVERHEAD_S} s) = {low:.1f}-{high:.1f} hours")  # fmt: skip


def _cell(stat: dict | None) -> str:
    if not stat:
        return "-"
    rho = "n/a" if stat["spearman"] is None else f"{stat['spearman']:+.2f}"
    gap = "-" if stat["gap"] is None else f"{stat['gap']:.2f}"
    return f"{rho} / {gap}"


def _settings(trial: dict | None, knn: bool = True) -> str:
    if trial is None:
        return "-"
    values = " ".join(
        f"{k.split('.')[-1]} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial["params"].items()
    )
    score = f", k-NN {trial['metrics']['knn_instdisc']:.2f}" if knn and "knn_instdisc" in trial["metrics"] else ""
    return values + score


def recipe_trial(name: str, trials: list[dict]) -> dict | None:
    """The trial run at the recipe's own values of the swept keys (None when the grid does not hold them)."""
    import yaml

    recipe = yaml.safe_load((PRETRAIN / f"{name}_fashion_mnist.yaml").read_text())

    def value(key: str):
        section, _, leaf = key.partition(".")
        return (recipe.get(section) or {}).get(leaf)

    return next((t for t in trials if all(value(k) == v for k, v in t["params"].items())), None)


def table(out: Path, names: list[str], select: str, steps: int, command: str) -> str:
    """The RESULTS.md section from every objective's ``sweep.json``."""
    lines = [f"## Label-free selection per objective (Fashion-MNIST, {steps} steps per trial)", "",
             f"Command: `{command}`. Machine: {machine()}. "
             "Each cell: Spearman correlation of the metric's selection score with k-NN (instdisc) across the "
             "objective's trials / k-NN gap in points between the best trial and the metric's pick (0 = it picks "
             "the best). alpha-ReQ scores -|alpha - 1|.", "",
             "| objective | trials | best k-NN (settings) | recipe's settings | RankMe | LiDAR | alpha-ReQ | chosen by "
             + select + " |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        path = out / name / "sweep.json"
        if not path.is_file():
            lines.append(f"| {name} | not run | | | | | | |")
            continue
        summary = json.loads(path.read_text())
        trials = {t["number"]: t for t in summary["trials"]}
        complete = [t for t in trials.values() if t["state"] == "complete"]
        retried = {t["retry_of"] for t in trials.values() if t.get("retry_of") is not None}
        planned = len(trials) - len(retried)  # an interrupted trial and its retry are one setting
        stats = summary["agreement"]
        best = trials[stats["rankme"]["best"]] if stats else None
        cells = [_cell(stats.get(m)) for m in TITLES]
        own = recipe_trial(name, complete)
        lines.append(f"| {name} | {len(complete)}/{planned} | {_settings(best)} | {_settings(own)} | "
                     f"{' | '.join(cells)} | {_settings(summary['winner'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="study folder (runs/objective_study[_tiny])")
    parser.add_argument("--trial-steps", type=int, default=None, help=f"steps per trial ({TRIAL_STEPS}; tiny 3)")
    parser.add_argument("--select", default="rankme", help="how each objective's settings are chosen (rankme)")
    parser.add_argument("--objectives", nargs="*", default=None, help="only these objectives")
    parser.add_argument("--img-per-s", type=float, nargs=2, default=(250.0, 400.0), help="for the estimate")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
    parser.add_argument(
        "--tiny", action="store_true", help="512 images, batch 32, 3 lrs, 1 tau, 3 steps a trial, small evaluations"
    )
    args = parser.parse_args(argv)
    out = args.out or REPO / "runs" / ("objective_study_tiny" if args.tiny else "objective_study")
    steps = args.trial_steps or (3 if args.tiny else TRIAL_STEPS)
    rows = [r for r in plan(args.tiny) if args.objectives is None or r[0] in args.objectives]
    print(f"plan: {estimate(rows, steps, 32 if args.tiny else 256, tuple(args.img_per_s))}")
    for name, recipe, params in rows:
        print(f"  {name}: {recipe.relative_to(REPO)} {' '.join(params)}")
    if args.dry_run:
        return 0
    for name, recipe, params in rows:
        tiny = [*TINY, "--eval-train", "512", "--eval-test", "256"] if args.tiny else []
        argv_sweep = ["sweep", str(recipe), *tiny, *params, "--select", args.select,
                      "--trial-steps", str(steps), "--out", str(out / name), "--study", f"{name}-study"]  # fmt: skip
        print(f"\n== {name}: ssl-toolkit {' '.join(argv_sweep)}", flush=True)
        code = cli.main(argv_sweep)
        if code != 0:
            print(f"{name}: the sweep exited with {code}; rerun this script to resume it")
            return code
    command = "python eval/objective_study.py" + (" --tiny" if args.tiny else "")
    text = table(out, [r[0] for r in rows], args.select, steps, command)
    (out / "STUDY.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
