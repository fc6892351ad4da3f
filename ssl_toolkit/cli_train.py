"""``ssl-toolkit train``: pretrain from a recipe, export the encoder, evaluate it, write the report.

``--help`` lists the recipe sections with their most used keys and defaults (read from the schema in
``config.py``, so it cannot drift); ``--print-config`` prints the resolved, validated recipe and builds nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import textwrap
from pathlib import Path
from typing import Any

# section -> (schema class in config.py, most used keys, what the section is)
SECTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "data": ("DataConfig", ("name", "root", "labelled", "subset", "num_workers", "view_backend"),
             "the images: fashion_mnist | image_folder | webdataset | hf_dataset (docs/data.md)"),
    "model": ("ModelConfig", ("backbone", "small_input", "backbone_kwargs", "projector_out", "ema"),
              "a timm encoder + projection head (ssl-toolkit list backbones)"),
    "train": ("TrainConfig", ("epochs", "max_steps", "batch_size", "lr", "optimizer", "mixed_precision",
                              "channels_last", "compile", "output_dir", "run_name", "log_with"),
              "optimisation, precision, run folder <output_dir>/<run_name or name>, trackers (docs/cli.md)"),
    "eval": ("EvalConfig", ("after_train", "max_train", "max_test", "linear_epochs"),
             "evaluation of the export after training (docs/evaluation.md)"),
    "monitor": ("MonitorConfig", ("every", "export_best"), "label-free checks every N steps during training"),
}  # fmt: skip


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", "")


def recipe_help() -> str:
    """The recipe sections with their most used keys and defaults, for ``train --help``."""
    from ssl_toolkit import config

    def defaults(cls_name: str) -> dict[str, Any]:
        fields = dataclasses.fields(getattr(config, cls_name))
        return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory() for f in fields}

    lines = [
        "recipe sections (key=default; override any key on the command line as section.key=value):",
        "  name       the run's name; the run folder is train.output_dir/<train.run_name or name>",
        "  views      a preset (ssl-toolkit list presets) or view groups, e.g.",
        "             'views=[{name: global, n: 2, size: 32}, {name: local, n: 4, size: 16}]'",
        "             group keys: name n size global augment scale strength jitter_p gray_p blur_p source",
        "  objective  {name: simclr, temperature: 0.2}; keys per objective: ssl-toolkit list objectives",
    ]
    for section, (cls_name, keys, what) in SECTIONS.items():
        values = defaults(cls_name)
        text = " ".join(f"{k}={_yaml_value(values[k])}" for k in keys)
        wrapped = textwrap.wrap(text, width=96, initial_indent=f"  {section:<10} ", subsequent_indent=" " * 13)
        lines += [*wrapped, f"             {what}"]
    lines += [
        "",
        "examples:",
        "  ssl-toolkit train simclr_fashion_mnist train.epochs=1",
        "  ssl-toolkit train simclr_image_folder data.root=/photos    # your photos: ResNet-50, 224 px",
        "  ssl-toolkit train simclr_fashion_mnist name=mine data.name=image_folder data.root=/photos \\",
        "      'views=[{name: global, n: 2, size: 96}]' model.small_input=false",
        "  ssl-toolkit train my_recipe.yaml --print-config > resolved.yaml",
        "",
        "A run resumes from RUN/checkpoints/last when it exists. Commands, run folder, run.json and trackers:",
        "docs/cli.md in the source repository.",
    ]
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain from a recipe, export the encoder, evaluate it, write the report",
        description="Pretrain as RECIPE says (defaults < the recipe file < key=value overrides), export the\n"
        "encoder to RUN/encoder, evaluate it (eval.after_train) and write RUN/report.html.",
        epilog=recipe_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="a shipped recipe's name (ssl-toolkit list recipes), e.g. simclr_fashion_mnist, "
                   "or a YAML file")  # fmt: skip
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="recipe overrides in YAML, e.g. train.epochs=10 train.lr=1e-3 data.root=/photos",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved recipe (validated) as YAML and exit; nothing is built or written",
    )
    p.set_defaults(func=run_train)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def run_train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from ssl_toolkit import config
    from ssl_toolkit.recipe_files import resolve_recipe
    from ssl_toolkit.run_folder import run_dir_of

    path = resolve_recipe(args.recipe)
    cfg = config.load(path, args.overrides)  # validated before anything heavy is built
    if args.print_config:
        given = " ".join(shlex.quote(o) for o in args.overrides)
        print(f"# {cfg.name}: {path}{' + ' + given if given else ''} (resolved, validated)")
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    args.warning_lines.use_run(run_dir_of(cfg))
    from ssl_toolkit import engine

    run_dir = engine.train(cfg)
    if not _is_main_process():
        return 0
    from ssl_toolkit.cli_runs import auto_report, run_eval_after_train

    metrics = run_eval_after_train(cfg, run_dir) if cfg.eval.after_train else None
    report = auto_report(run_dir)
    _publish(cfg, run_dir, metrics, report)
    from ssl_toolkit.run_summary import end_lines

    print("\n" + "\n".join(end_lines(run_dir, metrics=metrics, report=report, next_commands=_next(args, cfg, run_dir))))
    return 0


def _next(args: argparse.Namespace, cfg: Any, run_dir: Path) -> list[str]:
    """What to run next: evaluate (when training did not), then train longer (which resumes): twice the epochs,
    or twice ``train.max_steps`` when that capped the run (more epochs would not add a step)."""
    from ssl_toolkit.run_summary import read_run_json

    info, steps = read_run_json(run_dir), cfg.train.get("max_steps")
    capped = steps and steps < info.get("epochs", cfg.train.epochs) * info.get("steps_per_epoch", steps + 1)
    longer = f"train.max_steps={2 * steps}" if capped else f"train.epochs={2 * cfg.train.epochs}"
    key = longer.split("=")[0] + "="
    again = " ".join(shlex.quote(a) for a in (args.recipe, *args.overrides) if not a.startswith(key))
    out = [] if cfg.eval.after_train else [f"ssl-toolkit eval {shlex.quote(str(run_dir / 'encoder'))}"]
    return [*out, f"ssl-toolkit train {again} {longer}   (trains longer: resumes)"]


def _publish(cfg: Any, run_dir: Path, metrics: Path | None, report: Path | None) -> None:
    """Final metrics and the report to the run's trackers; a failure is one line, the run itself succeeded."""
    import sys

    from ssl_toolkit.run_summary import read_run_json
    from ssl_toolkit.trackers import publish

    if not cfg.train.log_with:
        return
    values = final_values(metrics)
    info = read_run_json(run_dir)
    files = [report, *sorted(run_dir.glob("report_*.png"))] if report is not None else []
    try:
        publish(cfg, run_dir, values, int(info.get("step") or 0), files)
    except Exception as err:  # noqa: BLE001 - a tracker's failure must not fail a finished run
        print(f"ssl-toolkit: warning: the trackers did not take the final metrics: {type(err).__name__}: {err}",
              file=sys.stderr)  # fmt: skip


def final_values(metrics: Path | None) -> dict[str, float]:
    """``eval/<model>/<metric>`` numbers of a metrics file (encoder and floors), for the trackers."""
    import json

    if metrics is None or not metrics.is_file():
        return {}
    results = json.loads(metrics.read_text())
    return {
        f"eval/{model}/{key}": float(value)
        for model, scores in results.items()
        if isinstance(scores, dict) and model not in ("setup", "definitions")
        for key, value in scores.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
