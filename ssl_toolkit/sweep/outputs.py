"""What a sweep writes beside its study: the winner's recipe, the trial table, the agreement, a plot and a page.

In ``--out``:

- ``winner.yaml``: the resolved recipe of the trial ``--select`` picks, at the recipe's own budget (the trial
  budget only chose it): ``ssl-toolkit train <out>/winner.yaml`` trains it.
- ``trials.csv`` and ``sweep.json``: every trial (values, state, metrics, error, seconds, run folder), and in the
  JSON the definition, the winner and the agreement of each label-free metric with k-NN
  (`ssl_toolkit.sweep.agreement`).
- ``sweep.md``: the same as Markdown tables; ``metrics_vs_knn.png``: each label-free metric against k-NN, one
  point per trial, the metric's pick and the best k-NN trial marked; ``sweep.html``: the tables and the plot in
  one self-contained page.

Everything is rebuilt from the storage each time, so any worker (and a rerun of a finished sweep) writes the
whole study's results.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssl_toolkit.sweep.agreement import KNN_KEY, LABEL_FREE, agreement, pick
from ssl_toolkit.sweep.space import format_value
from ssl_toolkit.sweep.study import SweepSpec
from ssl_toolkit.sweep.trial import TRIAL_METRICS, trial_overrides

TITLES = {"knn_instdisc": "k-NN instdisc", "knn_dino": "k-NN dino", "linear": "linear", "rankme": "RankMe",
          "alpha_req": "alpha-ReQ", "lidar": "LiDAR", "dead_fraction": "dead dims"}  # fmt: skip
PLOT = "metrics_vs_knn.png"


def records(study: Any) -> list[dict[str, Any]]:
    """Every trial of the study as plain data (retried attempts included, with ``retry_of``)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        out.append({
            "number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
            "metrics": dict(t.user_attrs.get("metrics", {})), "error": t.user_attrs.get("error"),
            "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir"),
            "retry_of": t.system_attrs.get("failed_trial"),
        })  # fmt: skip
    return out


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if key.startswith(("knn", "linear")) else f"{value:.4g}"
    return str(value)


def trial_table(trials: list[dict[str, Any]], keys: list[str]) -> list[list[str]]:
    """Header and rows: trial, values, state, the metrics, minutes."""
    metrics = [k for k in TRIAL_METRICS if any(k in t["metrics"] for t in trials)]
    rows = [["trial", *keys, "state", *(TITLES[k] for k in metrics), "min"]]
    for t in trials:
        state = t["state"] + (f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
        state += f": {t['error']}" if t["error"] else ""
        minutes = "-" if t["seconds"] is None else f"{t['seconds'] / 60:.1f}"
        values = [format_value(t["params"][k]) if k in t["params"] else "-" for k in keys]
        rows.append([str(t["number"]), *values, state, *(_cell(t["metrics"].get(k), k) for k in metrics), minutes])
    return rows


def agreement_table(stats: dict[str, dict[str, Any]], trials: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Header and rows: per label-free metric, Spearman with k-NN, its pick and the k-NN gap to the best trial."""
    rows = [["metric", "Spearman with k-NN", "trials", "pick", "pick's k-NN", "best k-NN", "gap (points)"]]
    for metric, s in stats.items():
        chosen = "-" if s["pick"] is None else f"{s['pick']} ({_values(trials[s['pick']])})"
        rho = "n/a" if s["spearman"] is None else f"{s['spearman']:+.2f}"  # < 3 trials, or a constant column
        rows.append([TITLES[metric], rho, str(s["n"]), chosen, _cell(s["pick_knn"], "knn"),
                     f"{s['best_knn']:.2f} (trial {s['best']})", _cell(s["gap"], "knn")])  # fmt: skip
    return rows


def _values(trial: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in trial["params"].items())


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot(trials: list[dict[str, Any]], stats: dict[str, dict[str, Any]], path: Path) -> Path:
    """Each label-free metric (x) against k-NN (y), one point per completed trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LABEL_FREE), figsize=(4.2 * len(LABEL_FREE), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], LABEL_FREE):
        points = [(t["metrics"][metric], t["metrics"][KNN_KEY], t["number"]) for t in trials
                  if t["metrics"].get(metric) is not None and t["metrics"].get(KNN_KEY) is not None]  # fmt: skip
        for x, y, n in points:
            ax.scatter(x, y, color="tab:blue", s=24)
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
        s = stats.get(metric, {})
        marks = (("pick", "o", "tab:red", f"{metric}'s pick"), ("best", "*", "tab:green", "best k-NN"))
        for key, marker, colour, label in marks:
            hit = [(x, y) for x, y, n in points if n == s.get(key)]
            if hit:
                ax.scatter(*hit[0], marker=marker, s=160, facecolors="none", edgecolors=colour, label=label)
        if metric == "alpha_req":
            ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)  # the selection targets alpha = 1
        rho = "n/a" if s.get("spearman") is None else f"{s['spearman']:+.2f}"
        gap = "n/a" if s.get("gap") is None else f"{s['gap']:.2f}"
        ax.set(xlabel=TITLES[metric], ylabel="k-NN instdisc top-1 %", title=f"Spearman {rho}, gap {gap} pts")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_winner(spec: SweepSpec, winner: dict[str, Any], path: Path) -> Path:
    """The winner's resolved recipe (the sweep's recipe and overrides with its values), with a header saying so."""
    from omegaconf import OmegaConf

    from ssl_toolkit import config

    cfg = config.load(spec.recipe, [*spec.overrides, *trial_overrides(winner["params"])])
    header = (
        f"# The winner of sweep {spec.study or 'sweep'} ({spec.storage_url}): trial {winner['number']}, "
        f"{_values(winner)},\n# chosen by {spec.select} after {spec.trial_steps} steps per trial; at the recipe's "
        f"own budget here. Train it: ssl-toolkit train {path}\n"
    )
    path.write_text(header + OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_outputs(study: Any, spec: SweepSpec, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write every file of the module docstring into ``spec.out``; returns the ``sweep.json`` content."""
    trials = records(study)
    complete = [t for t in trials if t["state"] == "complete"]
    stats = agreement(complete)
    winner = pick(complete, spec.select)
    keys = [p.key for p in spec.params]
    out = spec.out
    summary = {"definition": study.user_attrs.get("definition"), "select": spec.select,
               "winner": winner, "agreement": stats, "trials": trials}  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    rows = trial_table(trials, keys)
    with (out / "trials.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    by_number = {t["number"]: t for t in trials}
    parts = [f"# Sweep {spec.study or 'sweep'}: {spec.recipe}", "",
             f"{len(complete)} of {len(trials)} trials complete, {spec.trial_steps} steps each; "
             f"selection by {spec.select}.", "", markdown(rows), ""]  # fmt: skip
    if stats:
        parts += ["## Label-free choice against k-NN", "", markdown(agreement_table(stats, by_number)), "",
                  f"![each metric against k-NN]({PLOT})", ""]  # fmt: skip
        plot(complete, stats, out / PLOT)
    else:
        parts += ["No k-NN (the data has no labels): no agreement to report.", ""]
    if winner is not None:
        write_winner(spec, winner, out / "winner.yaml")
        parts += [f"Winner ({spec.select}): trial {winner['number']}, {_values(winner)} -> `winner.yaml`", ""]
        log(f"winner by {spec.select}: trial {winner['number']} ({_values(winner)}) -> {out / 'winner.yaml'}")
    (out / "sweep.md").write_text("\n".join(parts))
    _write_html(out, parts_title=parts[0][2:], rows=rows, stats=stats, by_number=by_number, winner=winner, spec=spec)
    log(f"results: {out / 'sweep.md'}, {out / 'sweep.html'}")
    return summary


def _write_html(out: Path, *, parts_title: str, rows: list[list[str]], stats: dict, by_number: dict,
                winner: dict | None, spec: SweepSpec) -> None:  # fmt: skip
    body = [f"<h1>{html.escape(parts_title)}</h1>", html_table(rows)]
    if stats:
        image = base64.b64encode((out / PLOT).read_bytes()).decode()
        body += ["<h2>Label-free choice against k-NN</h2>", html_table(agreement_table(stats, by_number)),
                 f'<img alt="each metric against k-NN" src="data:image/png;base64,{image}">']  # fmt: skip
    if winner is not None:
        body.append(f"<p>Winner ({html.escape(spec.select)}): trial {winner['number']}, "
                    f"{html.escape(_values(winner))}: <code>winner.yaml</code></p>")  # fmt: skip
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;" \
            "padding:2px 6px;text-align:right}img{max-width:100%}"  # fmt: skip
    (out / "sweep.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(parts_title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
