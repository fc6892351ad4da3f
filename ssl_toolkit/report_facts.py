"""What the report knows about a run, read from its folder as data: nothing is built, imported or executed.

Sources, best first: ``run.json`` (written by ``ssl-toolkit train`` at its start and end: dataset, steps, wall
time, images/s, machine), then ``metrics.csv`` / ``monitor.csv`` (the logged rows), ``metrics.json`` (the
final evaluation and its ``setup``), the export's ``config.json`` and ``recipe.yaml``. A fact none of them
holds is shown as "unknown". The recipe is read twice: as plain YAML for the header (always works) and
through `ssl_toolkit.config.load` with ``allow_import=False`` for the parts that need data (views,
neighbours); when that validation fails (a run folder copied from another machine whose ``data.root`` is
gone) ``recipe_problem`` says why and those parts are skipped with that reason.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"


@dataclass
class RunFiles:
    """The readable files of a run folder (each None or empty when absent or unreadable)."""

    run_dir: Path
    recipe: dict[str, Any] = field(default_factory=dict)  # recipe.yaml as plain data
    cfg: Any = None  # the validated recipe (DictConfig), or None when it does not validate here
    recipe_problem: str | None = None  # why ``cfg`` is None
    run_json: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)  # metrics.csv columns
    monitor: dict[str, list[float]] = field(default_factory=dict)  # monitor.csv columns
    evaluation: dict[str, Any] | None = None  # metrics.json
    export: dict[str, Any] | None = None  # encoder/config.json
    best_export: dict[str, Any] | None = None  # encoder_best/config.json "ssl_toolkit.monitor"
    problems: list[str] = field(default_factory=list)  # files present but unreadable

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """``recipe[section][key]`` of the plain recipe, or ``default``."""
        value = self.recipe.get(section)
        return value.get(key, default) if isinstance(value, dict) else default


def _columns(path: Path) -> dict[str, list[float]]:
    """A metrics CSV as ``column -> values`` (every row, NaN where a cell is empty); ``step`` first."""
    from ssl_toolkit.run_log import read_rows

    rows, fields = read_rows(path)
    columns: dict[str, list[float]] = {name: [] for name in fields or []}
    for row in rows:
        for name in columns:
            cell = row.get(name)
            columns[name].append(float(cell) if cell not in (None, "") else math.nan)
    return columns if rows else {}


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{path.name} could not be read ({err})")
        return None
    return data if isinstance(data, dict) else None


def read_run(run_dir: Path) -> RunFiles:
    """Read every file the report uses; a missing or broken file leaves its field empty."""
    from omegaconf import OmegaConf

    from ssl_toolkit import config
    from ssl_toolkit.errors import ConfigError

    files = RunFiles(run_dir=run_dir)
    try:
        plain = OmegaConf.to_container(OmegaConf.load(run_dir / "recipe.yaml"), resolve=False)
        files.recipe = plain if isinstance(plain, dict) else {}
        files.cfg = config.load(run_dir / "recipe.yaml", allow_import=False)  # validates; runs no code
    except ConfigError as err:
        files.recipe_problem = str(err)
    except Exception as err:  # noqa: BLE001 - a damaged recipe.yaml: the rest of the report still renders
        files.recipe_problem = f"recipe.yaml could not be read ({type(err).__name__}: {err})"
    files.run_json = _json(run_dir / "run.json", files.problems) or {}
    for name in ("metrics", "monitor"):
        path = run_dir / f"{name}.csv"
        if path.is_file():
            try:
                setattr(files, name, _columns(path))
            except (OSError, ValueError) as err:
                files.problems.append(f"{path.name} could not be read ({err})")
    files.evaluation = _json(run_dir / "metrics.json", files.problems)
    files.export = _json(run_dir / "encoder" / "config.json", files.problems)
    best = _json(run_dir / "encoder_best" / "config.json", files.problems)
    files.best_export = (best or {}).get("ssl_toolkit", {}).get("monitor")
    return files


def finite(values: list[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def best_rankme(files: RunFiles) -> tuple[int, float] | None:
    """The step and value of the best embedding RankMe in ``monitor.csv`` (the ``encoder_best`` step)."""
    steps, values = files.monitor.get("step", []), files.monitor.get("rankme", [])
    pairs = [(v, int(s)) for s, v in zip(steps, values) if not math.isnan(v)]
    if not pairs:
        return None
    value, step = max(pairs, key=lambda p: (p[0], -p[1]))  # the first step reaching the best value
    return step, value


def data_wait(files: RunFiles) -> float | None:
    """Mean share of wall time spent waiting for data, over the logged windows after the first (which
    holds the data-loader workers' start-up), or over the only one."""
    values = finite(files.metrics.get("data_wait", []))
    if not values:
        return None
    return statistics.fmean(values[1:] if len(values) > 1 else values)


def labelled(files: RunFiles) -> bool | None:
    """Whether the run's data has labels: run.json, else metrics.json, else a k-NN column in monitor.csv."""
    if isinstance(files.run_json.get("labelled"), bool):
        return files.run_json["labelled"]
    setup = (files.evaluation or {}).get("setup")
    if isinstance(setup, dict) and isinstance(setup.get("labelled"), bool):
        return setup["labelled"]
    if files.monitor:
        return "knn_dino" in files.monitor
    return None


def embedding_width(files: RunFiles) -> int | None:
    width = (files.export or {}).get("num_features")
    return int(width) if isinstance(width, int | float) and width else None


def duration(seconds: float) -> str:
    """``3 h 05 min``, ``12 min 40 s`` or ``8.2 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def views_line(groups: Any) -> str | None:
    """``2x224 + 6x96`` from the recipe's view groups."""
    if not isinstance(groups, list) or not groups:
        return None
    try:
        return " + ".join(f"{int(g.get('n', 1))}x{int(g['size'])}" for g in groups)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _known(value: Any) -> bool:
    return value not in (None, "", [])


def _first(*values: Any) -> Any:
    return next((v for v in values if _known(v)), None)


def _speed(files: RunFiles) -> str:
    if isinstance(files.run_json.get("images_per_s"), int | float):
        return f"{files.run_json['images_per_s']:,.0f}"
    values = finite(files.metrics.get("images_per_s", []))
    if not values:
        return UNKNOWN
    return f"{statistics.median(values[1:] if len(values) > 1 else values):,.0f} (median of metrics.csv)"


def _data(files: RunFiles, rj: dict[str, Any]) -> tuple[str, str]:
    dataset = _first(rj.get("dataset"), files.get("data", "name")) or UNKNOWN
    root = _first(rj.get("root"), files.get("data", "root"))
    images = rj.get("train_images")
    is_labelled, classes = labelled(files), rj.get("classes")
    if not _known(classes):
        names = ((files.evaluation or {}).get("setup") or {}).get("classes")
        classes = len(names) if isinstance(names, list) and names else None
    kind = "unlabelled" if is_labelled is False else (f"{classes} classes" if classes else "labelled")
    kind = kind if is_labelled is not None else "labels unknown"
    count = f"{images:,} training images, " if isinstance(images, int) else ""
    skipped = rj.get("skipped_files")
    skipped_text = f", {skipped} unreadable files skipped" if isinstance(skipped, int) and skipped else ""
    unknown = "" if isinstance(images, int) else " (image count unknown)"
    return f"{dataset}" + (f" at {root}" if root else ""), f"{count}{kind}{skipped_text}{unknown}"


def _steps(files: RunFiles, rj: dict[str, Any]) -> tuple[str, str]:
    steps = files.metrics.get("step", [])
    step = _first(rj.get("step"), int(steps[-1]) if steps else None)
    total = rj.get("total_steps")
    step_text = (f"{step:,}" if isinstance(step, int) else UNKNOWN) + (f" of {total:,}" if total else "")
    epochs = _first(rj.get("epochs"), files.get("train", "epochs"))
    per_epoch = rj.get("steps_per_epoch")
    epoch_text = (str(epochs) if epochs is not None else UNKNOWN) + (
        f" ({per_epoch:,} steps each)" if per_epoch else ""
    )
    return step_text, epoch_text


def header_facts(files: RunFiles) -> list[tuple[str, str]]:
    """The report's header: ``(label, value)`` pairs, "unknown" where no file says."""
    rj = files.run_json
    data, images = _data(files, rj)
    step_text, epoch_text = _steps(files, rj)
    size = _first(rj.get("image_size"), (files.recipe.get("views") or [{}])[0].get("size") if files.recipe else None)
    wall = rj.get("wall_s")
    wall_text = duration(float(wall)) if isinstance(wall, int | float) else UNKNOWN
    if rj.get("resumed_from") is not None and isinstance(wall, int | float):
        wall_text += f" (this invocation, resumed from step {rj['resumed_from']:,})"
    wait = data_wait(files)
    device = ", ".join(
        str(part)
        for part in (rj.get("device"), rj.get("precision"), _processes(rj.get("processes")))
        if _known(part)
    )  # fmt: skip
    objective = files.get("objective", "name")
    model = " + ".join(str(p) for p in (files.get("model", "backbone"), objective) if p) or UNKNOWN
    status = "finished " + str(rj["finished"]) if rj.get("finished") else ("not finished" if rj else UNKNOWN)
    return [
        ("dataset", data),
        ("images", images),
        ("image size", f"{size} px" if size else UNKNOWN),
        ("views", _first(rj.get("views"), views_line(files.recipe.get("views"))) or UNKNOWN),
        ("model", model),
        ("steps", step_text),
        ("epochs", epoch_text),
        ("wall time", wall_text),
        ("images/s", _speed(files)),
        ("waiting for data", f"{wait:.0%} of the time" if wait is not None else UNKNOWN),
        ("device", device or UNKNOWN),
        ("machine", str(rj.get("machine") or UNKNOWN)),
        ("started", str(rj.get("started") or UNKNOWN)),
        ("status", status),
    ]


def _processes(n: Any) -> str | None:
    return f"{n} process{'es' if n != 1 else ''}" if isinstance(n, int) else None
