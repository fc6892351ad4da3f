"""The report's curves: training (``metrics.csv``) and online monitoring (``monitor.csv``), drawn with matplotlib.

One small panel per quantity, three to a row. Runs with few logged points get markers on every point
(a line between three points hides where the points are); a run with a single row gets a table instead of
plots (`ssl_toolkit.report` decides that), so no panel is ever an empty axis. The step of the best
embedding RankMe (the one ``monitor.export_best`` exports as ``encoder_best``) is a dashed vertical line on
the loss and on every monitor panel. Constant series (a fixed temperature) get no panel.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS_UP_TO = 30  # points per series drawn with markers
BEST_COLOUR = "tab:purple"
TEMPERATURE_COLUMNS = ("temperature", "tau_min", "tau_max", "tau_mean")
KNOWN_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", "data_wait", *TEMPERATURE_COLUMNS)
Panel = tuple[str, list[tuple[str, str]], dict]  # title, [(column, legend label)], options


def _points(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(s, v) for s, v in zip(steps, values) if not math.isnan(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _varies(values: list[float]) -> bool:
    finite = [v for v in values if not math.isnan(v)]
    return len(finite) > 1 and max(finite) > min(finite)


def _draw(ax, columns: dict[str, list[float]], series: list[tuple[str, str]], best: tuple[int, float] | None,
          options: dict) -> None:  # fmt: skip
    steps = columns["step"]
    for column, label in series:
        x, y = _points(steps, columns[column])
        scale = options.get("scale", 1.0)
        marker = "o" if len(x) <= MARKERS_UP_TO else None
        ax.plot(x, [v * scale for v in y], marker=marker, markersize=3.5, linewidth=1.4, label=label)
    if options.get("reference") is not None:
        value, label = options["reference"]
        ax.axhline(value, color="0.55", linestyle=":", linewidth=1, label=label)
    if best is not None and options.get("best", False):  # named in the legend of the loss only (the HTML says it)
        label = f"best RankMe, step {best[0]:,}" if options["best"] == "label" else None
        ax.axvline(best[0], color=BEST_COLOUR, linestyle="--", linewidth=1, label=label)
    ax.set_title(options.get("title", ""), fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    if options.get("ylabel"):
        ax.set_ylabel(options["ylabel"], fontsize=8)
    if options.get("log"):
        ax.set_yscale("log")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    if len(ax.get_legend_handles_labels()[1]) > 1:  # a legend only where it tells lines apart
        ax.legend(fontsize=7, frameon=False)


def _figure(columns: dict[str, list[float]], panels: list[Panel], best: tuple[int, float] | None, path: Path) -> Path:
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.7 * n_cols, 2.7 * n_rows), squeeze=False)
    for ax, (title, series, options) in zip(axes.flat, panels):
        _draw(ax, columns, series, best, {**options, "title": title})
    for ax in list(axes.flat)[len(panels) :]:
        ax.remove()  # no empty axes
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_panels(columns: dict[str, list[float]]) -> list[Panel]:
    """Loss, learning rate, a varying temperature, images/s, data wait, and any other logged series."""
    panels: list[Panel] = []
    if "loss" in columns:
        panels.append(("loss", [("loss", "loss")], {"best": "label"}))
    if "lr" in columns:
        panels.append(("learning rate", [("lr", "lr")], {}))
    taus = [c for c in TEMPERATURE_COLUMNS if c in columns and _varies(columns[c])]
    if taus:
        panels.append(("temperature", [(c, c) for c in taus], {}))
    if "images_per_s" in columns:
        panels.append(("images / s", [("images_per_s", "images/s")], {}))
    if "data_wait" in columns:
        from ssl_toolkit.run_log import ProgressLog

        hint = (100 * ProgressLog.WAIT_HINT, f"hint above {ProgressLog.WAIT_HINT:.0%}")
        panels.append(("waiting for data (% of wall time)", [("data_wait", "data wait")],
                       {"scale": 100.0, "reference": hint}))  # fmt: skip
    for column in columns:
        if column not in KNOWN_COLUMNS and _varies(columns[column]):
            panels.append((column.replace("_", " "), [(column, column)], {}))
    return panels


def monitor_panels(columns: dict[str, list[float]]) -> list[Panel]:
    """RankMe (backbone and projector), alpha-ReQ, LiDAR and, with labels, the subset k-NN."""
    panels: list[Panel] = []
    rankmes = [(c, label) for c, label in (("rankme", "backbone"), ("rankme_projector", "projector")) if c in columns]
    if rankmes:
        panels.append(("RankMe (clean subset)", rankmes, {"best": True}))
    if "alpha_req" in columns and any(not math.isnan(v) for v in columns["alpha_req"]):
        panels.append(("alpha-ReQ (backbone)", [("alpha_req", "alpha-ReQ")], {"best": True,
                       "reference": (1.0, "alpha = 1")}))  # fmt: skip
    if "lidar" in columns:
        panels.append(("LiDAR (backbone, augmented views)", [("lidar", "LiDAR")], {"best": True}))
    if "knn_dino" in columns:
        panels.append(("k-NN top-1 % (dino protocol, subset)", [("knn_dino", "k-NN")], {"best": True}))
    return panels


def training_figure(columns: dict[str, list[float]], best: tuple[int, float] | None, path: Path) -> Path | None:
    """``report_curves.png`` from ``metrics.csv`` columns (None when there is nothing to draw)."""
    panels = training_panels(columns)
    return _figure(columns, panels, best, path) if panels else None


def monitor_figure(columns: dict[str, list[float]], best: tuple[int, float] | None, path: Path) -> Path | None:
    """``report_monitor.png`` from ``monitor.csv`` columns (None when there is nothing to draw)."""
    panels = monitor_panels(columns)
    return _figure(columns, panels, best, path) if panels else None
