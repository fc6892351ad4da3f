"""How each label-free metric would choose among a sweep's trials, and how well that agrees with k-NN.

Selection scores (higher is better), one per ``--select`` choice:

- ``rankme``, ``lidar``: the metric itself (Garrido et al. 2023; Thilak et al. 2023: more effective dimensions,
  better).
- ``alpha_req``: ``-|alpha - 1|``: Agrawal et al. (2022) find the best downstream accuracy where the eigenspectrum
  decays like ``i^-1``; a smaller alpha is a whiter (noisier) spectrum, a larger one a collapsing one.
- ``knn``: k-NN top-1 of the InstDisc protocol (k = 200, T = 0.1; ``knn_instdisc`` in ``metrics.json``), the label
  reference the label-free choices are compared with.

Agreement, over the completed trials that have both numbers: the Spearman rank correlation between a metric's
selection score and k-NN (the Pearson correlation of the ranks, tied values given their average rank), and the
*gap*: k-NN of the best trial minus k-NN of the trial the metric picks (0 = it picks the best; in points of
accuracy). The pick is the highest score, the earliest trial on a tie. All of these compare
runs of one method; across methods the metrics are not comparable (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

LABEL_FREE = ("rankme", "lidar", "alpha_req")
SELECT = (*LABEL_FREE, "knn")
KNN_KEY = "knn_instdisc"  # metrics.json key of the label reference
METRIC_KEYS = {"rankme": "rankme", "lidar": "lidar", "alpha_req": "alpha_req", "knn": KNN_KEY}


def selection_score(select: str, metrics: dict[str, Any]) -> float | None:
    """The score ``select`` ranks a trial by (higher is better), or None when the trial lacks the metric."""
    value = metrics.get(METRIC_KEYS[select])
    if value is None or not math.isfinite(float(value)):
        return None
    return -abs(float(value) - 1.0) if select == "alpha_req" else float(value)


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the average of their ranks (``[10, 20, 20] -> [1, 2.5, 2.5]``)."""
    v = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(v))
    ranks[np.argsort(v, kind="stable")] = np.arange(1, len(v) + 1)
    _, group = np.unique(v, return_inverse=True)
    return (np.bincount(group, weights=ranks) / np.bincount(group))[group]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: the Pearson correlation of the average ranks; None for fewer than 3 pairs or
    a constant sequence (undefined).

    Written out (six lines of numpy) because scipy is not a dependency and torchmetrics' ``spearman_corrcoef``
    adds an epsilon to its denominator (it returns -0.9999985 for a perfect anti-correlation of three points).
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs equally long sequences, got {len(x)} and {len(y)}")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def pick(trials: list[dict[str, Any]], select: str) -> dict[str, Any] | None:
    """The trial ``select`` would choose (highest score, earliest on a tie), or None when none has the metric."""
    scored = [(selection_score(select, t["metrics"]), t) for t in trials]
    scored = [(s, t) for s, t in scored if s is not None]
    if not scored:
        return None
    best = max(s for s, _ in scored)
    return min((t for s, t in scored if s == best), key=lambda t: t["number"])


def agreement(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per label-free metric: Spearman with k-NN, its pick, the pick's k-NN and the gap to the best k-NN.

    Args:
        trials: completed trials, each ``{"number": int, "metrics": {...}}`` (``metrics.json``'s encoder row).

    Returns:
        ``{metric: {"spearman", "n", "pick", "pick_knn", "best", "best_knn", "gap"}}`` (values None when undefined);
        empty when no trial has a k-NN number (no labels).
    """
    labelled = [t for t in trials if selection_score("knn", t["metrics"]) is not None]
    best = pick(labelled, "knn")
    if best is None:
        return {}
    best_knn = float(best["metrics"][KNN_KEY])
    out = {}
    for metric in LABEL_FREE:
        pairs = [(selection_score(metric, t["metrics"]), float(t["metrics"][KNN_KEY])) for t in labelled]
        pairs = [(s, k) for s, k in pairs if s is not None]
        chosen = pick(labelled, metric)
        chosen_knn = None if chosen is None else float(chosen["metrics"][KNN_KEY])
        out[metric] = {
            "spearman": spearman([s for s, _ in pairs], [k for _, k in pairs]),
            "n": len(pairs),
            "pick": None if chosen is None else chosen["number"],
            "pick_knn": chosen_knn,
            "best": best["number"],
            "best_knn": best_knn,
            "gap": None if chosen_knn is None else best_knn - chosen_knn,
        }
    return out
