"""Run report: ``report.html`` (self-contained, figures embedded) plus the PNGs, in the run folder.

What a user wants to know of a pretraining run in a minute, top to bottom: what ran (dataset, image size,
steps, epochs, wall time, images/s, machine, whether it waited for data); whether the encoder is worth
having (a coloured verdict per metric against the raw-pixel and random-init floors, `report_verdict`);
how training went (loss, learning rate, temperature, throughput, data wait) and whether the representation
collapsed (RankMe, alpha-ReQ, LiDAR and subset k-NN from the online monitor, the best-RankMe step marked);
what the views look like beside their source image; whether nearest neighbours make sense. For unlabelled
data the label-free metrics come first and nothing speaks of classes.

Everything is read from files the run wrote (`report_facts`); the recipe is read as data and never runs code.
A part whose input is missing or unusable (no ``monitor.csv``, no export, a ``data.root`` that does not
exist on this machine) says "unavailable: <reason>" and the rest renders: the report never ends in a
traceback. matplotlib (Agg) draws; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_toolkit import report_html as H
from ssl_toolkit.report_facts import (
    RunFiles,
    best_rankme,
    data_wait,
    embedding_width,
    finite,
    header_facts,
    labelled,
    read_run,
)
from ssl_toolkit.report_verdict import DEFINITION_KEYS, FLOORS, LABEL_BASED, definition, verdicts

CARDS_LABELLED = ("knn_dino", "linear", "rankme", "lidar")
CARDS_LABEL_FREE = ("rankme", "alpha_req", "lidar", "dead_fraction")


def _guard(make: Callable[[], str]) -> str:
    """A section's HTML, or one line saying why it could not be made (never a traceback)."""
    from ssl_toolkit.errors import ConfigError

    try:
        return make()
    except ConfigError as err:  # DataError included: a message written for the user
        return H.unavailable(str(err))
    except Exception as err:  # noqa: BLE001 - one broken part must not cost the rest of the report
        return H.unavailable(f"{type(err).__name__}: {err}")


def _needs_recipe(files: RunFiles, make: Callable[[], str]) -> str:
    if files.cfg is None:
        return H.unavailable(files.recipe_problem or "recipe.yaml could not be read")
    return _guard(make)


def _evaluation(files: RunFiles, is_labelled: bool | None) -> str:
    results = files.evaluation
    if results is None:
        return H.unavailable(
            "no metrics.json: the encoder has not been evaluated yet (ssl-toolkit eval RUN_DIR/encoder)"
        )
    from ssl_toolkit.eval.run import format_table

    width = embedding_width(files)
    collapse = files.get("monitor", "collapse_fraction", 0.05)
    rows = verdicts(results, width=width, collapse=collapse)
    has_labels = any(row.key in LABEL_BASED for row in rows)
    chosen = CARDS_LABELLED if has_labels else CARDS_LABEL_FREE
    by_key = {row.key: row for row in rows}
    parts = [H.cards([by_key[k] for k in chosen if k in by_key], width)]
    setup = results.get("setup") or {}
    if not has_labels:
        reason = setup.get("label_free_reason") or ("the data has no labels" if is_labelled is False else None)
        parts.append(H.note("Label-free evaluation" + (f": {reason}." if reason else ".") + " RankMe, alpha-ReQ "
                            "and LiDAR compare runs of one method (learning rate, temperature, checkpoint); they "
                            "are not scores across methods or feature widths.", "info"))  # fmt: skip
    definitions = {row.key: text for row in rows if (text := definition(row.key, results))}
    parts.append(H.verdict_table(rows, definitions))
    others = sorted(p.name for p in files.run_dir.glob("metrics-*.json"))
    if others:
        parts.append(f"<p>Evaluations on other data: {H.esc(', '.join(others))}.</p>")
    table = format_table(results)
    parts.append(f"<details><summary>as printed by ssl-toolkit eval</summary><pre>{H.esc(table)}</pre></details>")
    shown = {DEFINITION_KEYS.get(row.key, row.key) for row in rows} | {f for f in FLOORS if f in results}
    all_definitions = results.get("definitions") or {}
    parts.append(H.definitions_list({k: v for k, v in all_definitions.items() if k in shown}))  # only what applies
    return "".join(parts)


def _curves(files: RunFiles, name: str, missing: str, draw: Callable, best: tuple[int, float] | None) -> str:
    columns = getattr(files, name)
    if not columns:
        return H.unavailable(missing)
    if len(columns["step"]) < 2:  # one point: a table, not an axis with a dot
        return f"<p>One logged row (step {columns['step'][0]:,.0f}):</p>{H.values_table(columns)}"
    path = draw(columns, best, files.run_dir / f"report_{'curves' if name == 'metrics' else 'monitor'}.png")
    return H.image(path) if path is not None else H.unavailable(f"{name}.csv has no column to plot")


def _training(files: RunFiles, best: tuple[int, float] | None) -> str:
    from ssl_toolkit.report_plots import training_figure

    return _curves(files, "metrics", "no metrics.csv (no step was logged)", training_figure, best)


def _monitoring(files: RunFiles, best: tuple[int, float] | None) -> str:
    from ssl_toolkit.report_plots import monitor_figure

    missing = ("no monitor.csv (the recipe had monitor.every = 0; set monitor.every=N to follow RankMe, alpha-ReQ "
               "and LiDAR during training)")  # fmt: skip
    html = _curves(files, "monitor", missing, monitor_figure, best)
    if best is not None:
        exported = " and exported to encoder_best/" if files.best_export else ""
        line = " (dashed line)" if len(files.monitor.get("step", [])) > 1 else ""
        html = f"<p>Best embedding RankMe {best[1]:.1f} at step {best[0]:,}{exported}{line}.</p>" + html
    return html


def _header_notes(files: RunFiles) -> str:
    from ssl_toolkit.run_log import ProgressLog

    notes = [H.note(problem, "warn") for problem in files.problems]
    if files.recipe_problem:
        notes.append(H.note(f"The recipe does not validate on this machine ({files.recipe_problem}); the parts "
                            "that need the data are skipped.", "warn"))  # fmt: skip
    wait, windows = data_wait(files), len(finite(files.metrics.get("data_wait", [])))
    if wait is not None and wait > ProgressLog.WAIT_HINT and windows > 1:  # the first window holds the start-up
        workers = files.get("data", "num_workers")
        notes.append(H.note(
            f"Input-bound: training waited for data {wait:.0%} of the time. Raise data.num_workers (now "
            f"{workers if workers is not None else 'unknown'}), make views on the GPU (data.view_device=cuda) or "
            "read shards (ssl-toolkit pack).", "warn",
        ))  # fmt: skip
    return "".join(notes)


def _views(files: RunFiles, n_samples: int) -> str:
    from ssl_toolkit.report_images import views_figure

    return H.image(views_figure(files.cfg, files.run_dir / "report_views.png", n_samples))


def _neighbours(files: RunFiles, n_queries: int, bank_size: int) -> str:
    from ssl_toolkit.export import load_encoder
    from ssl_toolkit.report_images import find_neighbours, neighbours_figure

    if not (files.run_dir / "encoder").is_dir():
        return H.unavailable("no exported encoder (encoder/ is missing)")
    found = find_neighbours(load_encoder(files.run_dir / "encoder"), files.cfg, n_queries=n_queries,
                            bank_size=bank_size)  # fmt: skip
    return f"<p>{H.esc(found.caption)}</p>{H.image(neighbours_figure(found, files.run_dir / 'report_neighbours.png'))}"


def write_report(run_dir: str | Path, *, n_view_samples: int = 6, n_queries: int = 6, bank_size: int = 10000) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/report_*.png``; returns the HTML path.

    Args:
        run_dir: a run folder (holds ``recipe.yaml``).
        n_view_samples: training samples whose views are shown.
        n_queries: nearest-neighbour queries.
        bank_size: training images searched for neighbours.

    Raises:
        ConfigError: ``run_dir`` is not a run folder. Anything else becomes an "unavailable" line.
    """
    from ssl_toolkit.errors import ConfigError

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise ConfigError(f"{run_dir} has no recipe.yaml; give a run folder (runs/<name>)")
    for old in run_dir.glob("report_*.png"):  # figures of an earlier report that may not be drawn again
        old.unlink()
    files = read_run(run_dir)
    is_labelled, best = labelled(files), best_rankme(files)
    verdict = _guard(lambda: _evaluation(files, is_labelled))
    training = ("Training", _guard(lambda: _training(files, best)))
    monitor_title = "Monitoring: RankMe, alpha-ReQ, LiDAR" + (", k-NN" if is_labelled else "")
    monitoring = (monitor_title, _guard(lambda: _monitoring(files, best)))
    pictures = [
        ("Views beside their source image", _needs_recipe(files, lambda: _views(files, n_view_samples))),
        ("Nearest neighbours", _needs_recipe(files, lambda: _neighbours(files, n_queries, bank_size))),
    ]
    if is_labelled is False:  # label-free data: its metrics and the monitor first
        sections = [("Label-free metrics: the encoder against random init", verdict), monitoring, training]
    else:
        sections = [("Verdict: the encoder against the floors", verdict), training, monitoring]
    header = _guard(lambda: H.facts(header_facts(files)) + _header_notes(files))
    title = str(files.recipe.get("name") or run_dir.name)
    out = run_dir / "report.html"
    out.write_text(H.page(title, f"run folder {run_dir}", header, [*sections, *pictures]))
    return out
