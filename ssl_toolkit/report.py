"""Run report: ``report.html`` (self-contained, figures embedded) plus the PNGs, in the run folder.

What a user wants to see of a pretraining run in a minute: are the loss and the learning rate doing what
they should (and the temperature, for objectives that log one); is the representation collapsing (RankMe
and k-NN over training, from the online monitor); how does the final encoder compare with the floors; what
do the views look like; and do nearest neighbours make sense. Each part is drawn from files the run already
wrote (``metrics.csv``, ``monitor.csv``, ``metrics.json``, ``recipe.yaml``, ``encoder/``); a part whose
input is missing is left out with a line saying why. matplotlib (Agg) draws; nothing is downloaded.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

TEMPERATURE_COLUMNS = ("temperature", "tau_min", "tau_max", "tau_mean")


def _read_csv(path: Path) -> dict[str, list[float]]:
    from ssl_toolkit.run_log import read_rows

    rows, _ = read_rows(path)
    return {k: [float(r[k]) for r in rows if r.get(k) not in (None, "")] for k in (rows[0] if rows else {})}


def _curves(run_dir: Path) -> Path | None:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    m = _read_csv(path)
    taus = [c for c in TEMPERATURE_COLUMNS if c in m]
    if all(len(set(m[c])) == 1 for c in taus):  # a constant temperature needs no panel
        taus = []
    panels = [("loss", ["loss"]), ("learning rate", ["lr"])] + ([("temperature", taus)] if taus else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels):
        for c in cols:
            ax.plot(m["step"][: len(m[c])], m[c], label=c)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(cols) > 1:
            ax.legend()
    return _save(fig, run_dir / "report_curves.png")


def _monitor(run_dir: Path) -> Path | None:
    path = run_dir / "monitor.csv"
    if not path.exists():
        return None
    m = _read_csv(path)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), squeeze=False)
    ax = axes[0][0]
    for c in ("rankme", "rankme_projector"):
        ax.plot(m["step"], m[c], marker="o", label=c.replace("_", " "))
    ax.set_title("RankMe (clean subset)")
    ax.set_xlabel("step")
    ax.legend()
    ax = axes[0][1]
    if "knn_dino" in m:
        ax.plot(m["step"], m["knn_dino"], marker="o", color="tab:green")
        ax.set_title("k-NN top-1 % (dino protocol, subset)")
        ax.set_xlabel("step")
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no labels: no k-NN", ha="center")
    return _save(fig, run_dir / "report_monitor.png")


def _to_image(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (x * std[:, None, None] + mean[:, None, None]).clamp(0, 1).permute(1, 2, 0)


def _views(run_dir: Path, cfg, n_samples: int) -> Path:
    from ssl_toolkit.builders import build_train_data

    data = build_train_data(cfg)
    positions = list(iter(data.sampler))[:n_samples]
    batch = data.finish_batch(data.collate_fn([data.dataset[p] for p in positions]))  # views made here
    views, bank_flags = batch.views, batch.extras.get("is_generated")  # flags: with a bank
    mean, std = torch.tensor(data.base.mean), torch.tensor(data.base.std)
    fig, axes = plt.subplots(n_samples, len(views), figsize=(1.3 * len(views), 1.3 * n_samples), squeeze=False)
    for v, view in enumerate(views):
        axes[0][v].set_title(f"{data.view_kinds[v]} {view.shape[-1]}px", fontsize=7)
        for i in range(n_samples):
            axes[i][v].imshow(_to_image(view[i].float(), mean, std).numpy())
            axes[i][v].set_axis_off()
            if v == 0 and bank_flags is not None:  # which samples carry a bank image (GenView: the generated view)
                axes[i][v].text(-0.1, 0.5, "bank" if bool(bank_flags[i]) else "real", fontsize=7, rotation=90,
                                ha="right", va="center", transform=axes[i][v].transAxes)  # fmt: skip
    return _save(fig, run_dir / "report_views.png")


def _neighbours(run_dir: Path, cfg, n_queries: int, bank_size: int) -> Path:
    from ssl_toolkit.builders import seeded_subset
    from ssl_toolkit.data import build_dataset, build_eval_transform
    from ssl_toolkit.eval.features import extract_features
    from ssl_toolkit.eval.knn import search_topk
    from ssl_toolkit.export import load_encoder

    encoder = load_encoder(run_dir / "encoder")
    pcfg = encoder.pretrained_cfg
    name, root = cfg.eval.dataset or cfg.data.name, cfg.eval.root or cfg.data.root
    train = build_dataset(name=name, split="train", root=root)
    try:
        queries = build_dataset(name=name, split="test", root=root)
    except Exception:  # noqa: BLE001 - no test split: queries from train (the bank excludes them)
        queries = train
    bank = seeded_subset(train, bank_size, seed=1)
    picked = seeded_subset(queries, n_queries, seed=2)
    transform = build_eval_transform(size=int(pcfg["input_size"][-1]), mean=pcfg["mean"], std=pcfg["std"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        hb, yb = extract_features(encoder, bank, transform=transform, device=device, progress=False)
        hq, yq = extract_features(encoder, picked, transform=transform, device=device, progress=False)
    _, idx = search_topk(F.normalize(hb, dim=1), F.normalize(hq, dim=1), k=6)
    classes = getattr(train, "classes", None) or []
    label = (lambda y: classes[y] if 0 <= y < len(classes) else str(y)) if classes else str
    fig, axes = plt.subplots(len(picked), 6, figsize=(7.8, 1.45 * len(picked)), squeeze=False)
    for r in range(len(picked)):
        row = [(picked[r][0], int(yq[r]), "query")]
        row += [(bank[int(j)][0], int(yb[int(j)]), f"#{c}") for c, j in enumerate(idx[r][:5].tolist(), start=1)]
        for c, (image, y, tag) in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image.permute(1, 2, 0).numpy())
            ok = c == 0 or y == int(yq[r])
            ax.set_title(f"{tag}: {label(int(y))}", fontsize=6, color="black" if ok else "tab:red")
            ax.set_axis_off()
    fig.suptitle(f"top-5 cosine neighbours among {len(bank)} training images (red: other class)", fontsize=8)
    return _save(fig, run_dir / "report_neighbours.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.name}" src="data:image/png;base64,{data}">'


def write_report(run_dir: str | Path, *, n_view_samples: int = 6, n_queries: int = 6, bank_size: int = 10000) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/report_*.png``; returns the HTML path."""
    from ssl_toolkit import config
    from ssl_toolkit.errors import ConfigError

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise ConfigError(f"{run_dir} has no recipe.yaml; give a run folder (runs/<name>)")
    cfg = config.load(run_dir / "recipe.yaml", allow_import=False)  # a run folder never runs code
    sections: list[tuple[str, str]] = []

    def add(title: str, make, missing: str) -> None:
        try:
            path = make()
        except (ConfigError, FileNotFoundError, OSError) as err:
            path, missing = None, f"{missing} ({err})"
        sections.append((title, _img(path) if path else f"<p>{html.escape(missing)}</p>"))

    add("Training curves", lambda: _curves(run_dir), "no metrics.csv")
    add("Monitoring", lambda: _monitor(run_dir), "no monitor.csv (the recipe had monitor.every = 0)")
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        from ssl_toolkit.eval.run import format_table

        results = json.loads(metrics.read_text())
        defs = "".join(f"<li><b>{k}</b>: {html.escape(v)}</li>" for k, v in results.get("definitions", {}).items())
        sections.append(("Final evaluation", f"<pre>{html.escape(format_table(results))}</pre><ul>{defs}</ul>"))
    else:
        sections.append(("Final evaluation", "<p>no metrics.json (evaluation not run yet)</p>"))
    add("Views as the pipeline made them", lambda: _views(run_dir, cfg, n_view_samples), "views unavailable")
    add(
        "Nearest neighbours",
        lambda: _neighbours(run_dir, cfg, n_queries, bank_size) if (run_dir / "encoder").is_dir() else None,
        "no exported encoder or no labelled dataset",
    )
    body = "".join(f"<h2>{html.escape(t)}</h2>{c}" for t, c in sections)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.name)} report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}img{max-width:100%}"
        "pre{background:#f5f5f5;padding:1em}</style></head><body>"
        f"<h1>{html.escape(cfg.name)}</h1><p>run folder: {html.escape(str(run_dir))}</p>{body}</body></html>"
    )
    out = run_dir / "report.html"
    out.write_text(page)
    return out
