"""`ssl_toolkit.sweep.agreement`: selection scores, Spearman and k-NN gaps against hand computations and pandas."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ssl_toolkit.sweep import cli as sweep_cli
from ssl_toolkit.sweep import trial as sweep_trial
from ssl_toolkit.sweep.agreement import SELECT, agreement, average_ranks, pick, selection_score, spearman


def _trials(rows: list[dict]) -> list[dict]:
    return [{"number": i, "metrics": m} for i, m in enumerate(rows)]


def test_spearman_with_ties_by_hand_and_by_pandas() -> None:
    x, y = [3.0, 1.0, 2.0, 2.0, 5.0], [10.0, 30.0, 20.0, 25.0, 50.0]
    assert average_ranks(x).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]  # the two 2.0s share ranks 2 and 3
    # ranks [4, 1, 2.5, 2.5, 5] and [1, 4, 2, 3, 5], both of mean 3: covariance sum 0.5, squares 9.5 and 10
    assert spearman(x, y) == pytest.approx(0.5 / math.sqrt(9.5 * 10), abs=1e-12)
    frame = pd.DataFrame({"x": x, "y": y})  # pandas' own (Cython) rank correlation
    assert spearman(x, y) == pytest.approx(frame.corr(method="spearman").loc["x", "y"], abs=1e-12)
    assert spearman([1, 2, 3], [30, 20, 10]) == -1.0  # exact, where torchmetrics gives -0.9999985


def test_spearman_is_undefined_for_short_or_constant_sequences() -> None:
    assert spearman([1.0, 2.0], [2.0, 1.0]) is None
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    with pytest.raises(ValueError, match="equally long"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_selection_scores() -> None:
    metrics = {"rankme": 12.0, "lidar": 4.0, "alpha_req": 1.3, "knn_instdisc": 81.5}
    assert selection_score("rankme", metrics) == 12.0 and selection_score("lidar", metrics) == 4.0
    assert selection_score("alpha_req", metrics) == pytest.approx(-0.3)  # distance to the ideal decay 1
    assert selection_score("alpha_req", {"alpha_req": 0.8}) == pytest.approx(-0.2)
    assert selection_score("knn", metrics) == 81.5
    assert selection_score("lidar", {"rankme": 3.0}) is None and selection_score("rankme", {"rankme": math.nan}) is None


def test_agreement_picks_and_gaps_by_hand() -> None:
    trials = _trials([
        {"knn_instdisc": 80.0, "rankme": 10.0, "lidar": 5.0, "alpha_req": 0.5},
        {"knn_instdisc": 85.0, "rankme": 12.0, "lidar": 5.0, "alpha_req": 1.1},
        {"knn_instdisc": 83.0, "rankme": 15.0, "lidar": 3.0, "alpha_req": 2.0},
    ])  # fmt: skip
    stats = agreement(trials)
    # RankMe picks trial 2 (k-NN 83) where trial 1 has 85; ranks [1, 2, 3] against [1, 3, 2]: rho 0.5
    assert stats["rankme"] == {"spearman": pytest.approx(0.5), "n": 3, "pick": 2, "pick_knn": 83.0, "best": 1,
                               "best_knn": 85.0, "gap": 2.0}  # fmt: skip
    # alpha-ReQ scores -0.5, -0.1, -1.0: picks trial 1, the best
    assert stats["alpha_req"]["pick"] == 1 and stats["alpha_req"]["gap"] == 0.0
    # LiDAR ties trials 0 and 1: the earliest wins; ranks [2.5, 2.5, 1] against [1, 3, 2]
    assert stats["lidar"]["pick"] == 0 and stats["lidar"]["gap"] == 5.0
    assert stats["lidar"]["spearman"] == pytest.approx(spearman([5.0, 5.0, 3.0], [80.0, 85.0, 83.0]))
    assert pick(trials, "knn")["number"] == 1


def test_agreement_skips_missing_metrics_and_needs_labels() -> None:
    trials = _trials([{"knn_instdisc": 70.0, "rankme": 2.0}, {"knn_instdisc": 75.0, "rankme": 1.0, "lidar": 9.0}])
    stats = agreement(trials)
    assert stats["lidar"]["n"] == 1 and stats["lidar"]["pick"] == 1 and stats["lidar"]["gap"] == 0.0
    assert stats["alpha_req"]["pick"] is None and stats["alpha_req"]["gap"] is None
    assert agreement(_trials([{"rankme": 3.0}])) == {}  # no labels: nothing to agree with


def test_the_command_lines_constants_match_the_modules() -> None:
    assert sweep_cli.SELECT == SELECT  # the parser does not import the modules that define them
    assert sweep_cli.EVAL_TRAIN == sweep_trial.EVAL_TRAIN
