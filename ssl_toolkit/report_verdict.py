"""The report's verdict: each metric of ``metrics.json`` read against the floors it can be compared with.

``ssl-toolkit eval`` scores the encoder next to two floors computed by the same code on the same data
(``docs/evaluation.md``, "Floors"): ``raw_pixels`` (flattened pixels) and ``random_init`` (the same
architecture with random weights). A pretrained encoder is worth having when it beats both:

- k-NN and linear probe (higher is better, comparable with both floors): green "clears both floors", amber
  "clears random-init only" (or "raw pixels only"), red "below both floors"; a tie does not clear a floor.
- RankMe and LiDAR are effective ranks meant for comparing runs of one method (RankMe and LiDAR papers), not
  floors: a trained encoder often uses fewer directions than random weights and is better for it. So RankMe
  gets a verdict only on collapse: red "collapsing" below the monitor's collapse fraction (5 %) of the
  embedding width, green "not collapsed" above it; LiDAR is shown without a colour. Both show the
  random-init value for scale (raw pixels have another width and no LiDAR).
- dead dimensions (lower is better): green at or below random-init's share, amber above it.
- alpha-ReQ has no better direction (the paper finds good probes near 1, flat spectra below, collapse
  above), and the mean feature norm is scale-dependent: both are shown without a colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GOOD, WARN, BAD, INFO = "good", "warn", "bad", "info"
FLOORS = ("raw_pixels", "random_init")
LABEL_BASED = ("knn_instdisc", "knn_dino", "linear")
LABEL_FREE = ("rankme", "alpha_req", "lidar", "dead_fraction", "norm_mean")
TITLES = {
    "knn_instdisc": "k-NN, instdisc protocol (k=200, T=0.1)",
    "knn_dino": "k-NN, dino protocol (k=20, T=0.07)",
    "linear": "linear probe",
    "rankme": "RankMe (effective rank)",
    "alpha_req": "alpha-ReQ (eigenspectrum decay)",
    "lidar": "LiDAR (effective rank of the view LDA)",
    "dead_fraction": "dead dimensions",
    "norm_mean": "mean feature norm",
}
SHORT_TITLES = {"knn_instdisc": "k-NN (instdisc)", "knn_dino": "k-NN (dino)", "linear": "linear probe",
                "rankme": "RankMe", "alpha_req": "alpha-ReQ", "lidar": "LiDAR", "dead_fraction": "dead dimensions",
                "norm_mean": "feature norm"}  # fmt: skip
DEFINITION_KEYS = {"knn_instdisc": "knn", "knn_dino": "knn", "dead_fraction": "embedding_stats",
                   "norm_mean": "embedding_stats"}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """One metric: the encoder's value, the floors' values, a colour class and the words for it."""

    key: str
    title: str
    encoder: float
    floors: dict[str, float | None]
    colour: str
    words: str

    @property
    def short_title(self) -> str:
        return SHORT_TITLES.get(self.key, self.title)

    def formatted(self, value: float | None) -> str:
        return format_value(self.key, value)


def format_value(key: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key in LABEL_BASED:
        return f"{value:.2f} %"
    if key == "dead_fraction":
        return f"{value:.1%}"
    if key == "alpha_req":
        return f"{value:.3f}"
    if key == "norm_mean":
        return f"{value:.3g}"
    return f"{value:.1f}"


def _number(metrics: Any, key: str) -> float | None:
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _against_both(enc: float, floors: dict[str, float]) -> tuple[str, str]:
    """``floors``: the floors computed, by display name; a tie does not clear a floor."""
    if not floors:
        return INFO, "no floors computed"
    cleared = [name for name, floor in floors.items() if enc > floor]
    if len(cleared) == len(floors):
        return GOOD, "clears both floors" if len(floors) == 2 else f"clears {cleared[0]} (the only floor computed)"
    if cleared:
        return WARN, f"clears {cleared[0]} only"
    if all(enc < floor for floor in floors.values()):
        return BAD, "below both floors" if len(floors) == 2 else f"below {next(iter(floors))}"
    return WARN, "level with the floors: no measurable gain"


def _rank_like(key: str, enc: float, rand: float | None, width: int | None, collapse: float) -> tuple[str, str]:
    scale = f"random init {rand:.1f}" if rand is not None else "no random-init floor"
    if key == "rankme" and width:
        if enc < collapse * width:
            return BAD, f"collapsing: {enc:.1f} of {width} dimensions (< {collapse:.0%}); {scale}"
        return GOOD, f"not collapsed: {enc:.1f} of {width} dimensions (>= {collapse:.0%}); {scale}"
    return INFO, f"higher is better within one method; {scale}"


def verdict(key: str, results: dict[str, Any], *, width: int | None = None, collapse: float = 0.05) -> Verdict | None:
    """The verdict on ``key`` in ``results`` (a ``metrics.json``), or None when the encoder lacks it.

    Args:
        key: a metric key (``knn_dino``, ``rankme``, ...).
        results: ``{"encoder": {...}, "raw_pixels": {...}, "random_init": {...}}``.
        width: the encoder's feature width (``num_features`` of the export), for the collapse check.
        collapse: RankMe below this fraction of ``width`` is "collapsing" (``monitor.collapse_fraction``).
    """
    if not isinstance(results.get("encoder"), dict) or key not in results["encoder"]:
        return None
    enc = _number(results["encoder"], key)  # None: not defined (alpha-ReQ of a narrow or collapsed matrix)
    floors = {name: _number(results.get(name), key) for name in FLOORS if isinstance(results.get(name), dict)}
    raw, rand = floors.get("raw_pixels"), floors.get("random_init")
    computed = {name: v for name, v in (("raw pixels", raw), ("random-init", rand)) if v is not None}
    if enc is None:
        colour, words = INFO, "undefined" + (": fewer than 13 usable dimensions" if key == "alpha_req" else "")
    elif key in LABEL_BASED:
        colour, words = _against_both(enc, computed)
    elif key in ("rankme", "lidar"):
        colour, words = _rank_like(key, enc, rand, width, collapse)
    elif key == "dead_fraction":
        colour, words = (
            (INFO, "no random-init floor")
            if rand is None
            else ((GOOD, "no more than random-init") if enc <= rand else (WARN, "more than random-init"))
        )
    elif key == "alpha_req":
        colour, words = INFO, "near 1 in the paper's best encoders (lower: flat spectrum; higher: towards collapse)"
    else:
        colour, words = INFO, "scale-dependent; for comparison only"
    return Verdict(key, TITLES.get(key, key), enc if enc is not None else math.nan, floors, colour, words)


def verdicts(results: dict[str, Any], *, width: int | None = None, collapse: float = 0.05) -> list[Verdict]:
    """Every metric the encoder has: the label-based ones (when labels existed), then the label-free ones."""
    rows = [verdict(k, results, width=width, collapse=collapse) for k in (*LABEL_BASED, *LABEL_FREE)]
    return [row for row in rows if row is not None]


def definition(key: str, results: dict[str, Any]) -> str | None:
    """The one-line definition ``metrics.json`` carries for ``key``."""
    text = (results.get("definitions") or {}).get(DEFINITION_KEYS.get(key, key))
    return text if isinstance(text, str) else None
