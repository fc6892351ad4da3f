"""The report's image grids: training views beside their source image, and nearest neighbours of queries.

Views are made by the run's own pipeline (`ssl_toolkit.builders.build_train_data`, epoch 0, the first
positions of the sampler), so they are exactly what the encoder saw at the start of training; each row
starts with the source image they were cut from, at its own aspect ratio, with its size.

Neighbours: cosine top-5 of the exported encoder's clean features. Queries come from the test split when
the data has a labelled one, else from the training images; in that case the bank is drawn from the *other*
training images, so a query is never its own neighbour. With labels, captions name the class and a
neighbour of another class is red; without labels, captions give the cosine similarity only and there is no
legend about classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import Dataset, Subset  # noqa: E402

NEIGHBOURS = 5


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _denormalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """A normalised view (3, H, W) back to an (H, W, 3) image in [0, 1]."""
    return (x.float() * std[:, None, None] + mean[:, None, None]).clamp(0, 1).permute(1, 2, 0)


def _hwc(image: Tensor) -> Tensor:
    return image.permute(1, 2, 0)


def _frame(ax) -> None:
    """No ticks; a blue frame marks a source image or a query."""
    for spine in ax.spines.values():
        spine.set_edgecolor("tab:blue")
        spine.set_linewidth(1.5)


def views_figure(cfg: Any, path: Path, n_samples: int = 6) -> Path:
    """``report_views.png``: each training sample's source image, then its views; two samples a row when
    they fit (up to 5 views each)."""
    from ssl_toolkit.builders import build_train_data
    from ssl_toolkit.data.generated import source_of

    data = build_train_data(cfg)
    positions = list(iter(data.sampler))[:n_samples]  # epoch 0: position i is image i of the loader's dataset
    batch = data.finish_batch(data.collate_fn([data.dataset[p] for p in positions]))  # views made now
    images = getattr(data.dataset, "base", data.base)  # the (subset of the) images the views are cut from
    with torch.random.fork_rng(devices=[]):  # a bank image may be drawn at random when read
        sources = [source_of(images[p][0], "real") for p in positions]
    flags = batch.extras.get("is_generated")
    mean, std = torch.tensor(data.base.mean), torch.tensor(data.base.std)
    block = len(batch.views) + 1  # source + views
    per_row = 2 if block <= 6 and len(positions) > 1 else 1
    rows = -(-len(positions) // per_row)
    ratios = ([1.0] * block + [0.35]) * per_row
    fig, axes = plt.subplots(rows, len(ratios) - 1, figsize=(1.45 * (block * per_row + 0.35 * (per_row - 1)),
                             1.6 * rows), squeeze=False, gridspec_kw={"width_ratios": ratios[:-1], "wspace": 0.06,
                             "hspace": 0.3})  # fmt: skip
    for ax in axes.flat:
        ax.set_axis_off()
    for r, source in enumerate(sources):
        row, first = divmod(r, per_row)
        cells = axes[row][first * (block + 1) : first * (block + 1) + block]
        tag = "" if flags is None else (" (bank)" if bool(flags[r]) else " (real)")
        pictures = [(_hwc(source), f"source {source.shape[-1]}x{source.shape[-2]}{tag}")]
        pictures += [(_denormalise(view[r], mean, std), f"{data.view_kinds[v]} {view.shape[-1]} px")
                     for v, view in enumerate(batch.views)]  # fmt: skip
        for c, (ax, (picture, title)) in enumerate(zip(cells, pictures)):
            ax.set_axis_on()
            ax.imshow(picture.numpy())
            ax.set_title(title, fontsize=6.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                _frame(ax)
    return _save(fig, path)


@dataclass
class Neighbours:
    """Queries and their nearest neighbours, ready to draw.

    Attributes:
        queries: (query image, caption) pairs; images uint8 (3, H, W).
        rows: per query, its neighbours as (image, caption, of another class).
        query_ids, neighbour_ids: dataset indices (queries in ``query_split``, neighbours in train).
        query_split: "test", or "train" when there is no labelled test split.
        caption: one sentence saying what the figure shows.
    """

    queries: list[tuple[Tensor, str]]
    rows: list[list[tuple[Tensor, str, bool]]]
    query_ids: list[int]
    neighbour_ids: list[list[int]]
    query_split: str
    caption: str


def _split_sets(train: Dataset, test: Dataset | None, n_queries: int, bank_size: int) -> tuple[Subset, Subset]:
    """Queries and bank; drawn from disjoint training images when there is no labelled test split."""
    g = torch.Generator().manual_seed(2)
    if test is not None:
        queries = torch.randperm(len(test), generator=g)[:n_queries].tolist()
        bank = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:bank_size].tolist()
        return Subset(test, queries), Subset(train, bank)
    order = torch.randperm(len(train), generator=g).tolist()
    n_queries = min(n_queries, max(1, len(order) // 2))
    return Subset(train, order[:n_queries]), Subset(train, order[n_queries : n_queries + bank_size])


def _datasets(cfg: Any) -> tuple[Dataset, Dataset | None, list[str]]:
    """Training images, a labelled test split (or None) and class names, of the data the run evaluates on."""
    from ssl_toolkit.data import build_dataset
    from ssl_toolkit.errors import ConfigError

    name, root = cfg.eval.dataset or cfg.data.name, cfg.eval.root or cfg.data.root
    train = build_dataset(name=name, split="train", root=root, labelled=cfg.data.labelled)
    classes = list(getattr(train, "classes", None) or [])
    if train.labels is None or not bool((train.labels >= 0).any()):
        return train, None, []
    try:
        test = build_dataset(name=name, split="test", root=root, labelled=cfg.data.labelled)
    except ConfigError:  # DataError included: no test/ (or val/) split
        return train, None, classes
    return train, (test if test.labels is not None and bool((test.labels >= 0).any()) else None), classes


def find_neighbours(encoder: nn.Module, cfg: Any, *, n_queries: int = 6, bank_size: int = 10000) -> Neighbours:
    """Top-5 cosine neighbours of the exported ``encoder``'s clean features for a few seeded queries."""
    import torch.nn.functional as F

    from ssl_toolkit.data import build_eval_transform
    from ssl_toolkit.eval.features import extract_features
    from ssl_toolkit.eval.knn import search_topk

    pcfg = encoder.pretrained_cfg
    train, test, classes = _datasets(cfg)
    labelled = test is not None or bool(classes)
    queries, bank = _split_sets(train, test, n_queries, bank_size)
    transform = build_eval_transform(size=int(pcfg["input_size"][-1]), mean=pcfg["mean"], std=pcfg["std"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hb, yb = extract_features(encoder, bank, transform=transform, device=device, progress=False)
    hq, yq = extract_features(encoder, queries, transform=transform, device=device, progress=False)
    k = min(NEIGHBOURS, len(bank))
    sims, idx = search_topk(F.normalize(hb, dim=1), F.normalize(hq, dim=1), k=k)
    name = (lambda y: classes[y] if 0 <= y < len(classes) else str(y)) if classes else str
    rows = [
        [(bank[j][0], f"{name(int(yb[j]))} {s:.3f}" if labelled else f"#{c}  cos {s:.3f}",
          labelled and int(yb[j]) != int(yq[r])) for c, (j, s) in enumerate(zip(idx[r].tolist(), sims[r].tolist()), 1)]
        for r in range(len(queries))
    ]  # fmt: skip
    where = "training images" if test is not None else "other training images (the queries are left out of it)"
    legend = "; a neighbour of another class is captioned in red" if labelled else ""
    split = "test" if test is not None else "train"
    caption = (f"Framed: {len(queries)} {'test' if test is not None else 'training'} images as queries; beside "
               f"each, its top-{k} neighbours by cosine similarity of the encoder's features among {len(bank):,} "
               f"{where}{legend}.")  # fmt: skip
    return Neighbours(
        queries=[(queries[r][0], f"query: {name(int(yq[r]))}" if labelled else "query") for r in range(len(queries))],
        rows=rows, query_ids=[queries.indices[r] for r in range(len(queries))],
        neighbour_ids=[[bank.indices[j] for j in idx[r].tolist()] for r in range(len(queries))],
        query_split=split, caption=caption,
    )  # fmt: skip


def neighbours_figure(found: Neighbours, path: Path) -> Path:
    """``report_neighbours.png``: each query (framed), then its neighbours with their captions."""
    k = max(len(row) for row in found.rows)
    fig, axes = plt.subplots(len(found.rows), k + 1, figsize=(1.35 * (k + 1), 1.5 * len(found.rows)), squeeze=False,
                             gridspec_kw={"wspace": 0.08, "hspace": 0.3})  # fmt: skip
    for r, ((query, title), row) in enumerate(zip(found.queries, found.rows)):
        axes[r][0].imshow(_hwc(query).numpy())
        axes[r][0].set_title(title, fontsize=6.5)
        _frame(axes[r][0])
        for c, (image, caption, other) in enumerate(row, start=1):
            axes[r][c].imshow(_hwc(image).numpy())
            axes[r][c].set_title(caption, fontsize=6.5, color="tab:red" if other else "black")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)
