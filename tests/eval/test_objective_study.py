"""eval/objective_study.py: the plan covers every objective with a Fashion-MNIST recipe, and the RESULTS table
reads sweep.json files as the sweep writes them (a retried trial counted once, the recipe's own trial found)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("objective_study", REPO / "eval" / "objective_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trial(number: int, lr: float, tau: float, knn: float | None, rankme: float | None, retry_of=None) -> dict:
    metrics = {} if knn is None else {"knn_instdisc": knn, "rankme": rankme}
    state = "fail" if knn is None else "complete"
    params = {"train.lr": lr, "objective.temperature": tau}
    return {"number": number, "state": state, "params": params, "metrics": metrics, "retry_of": retry_of}


def test_the_plan_sweeps_every_objective_with_a_recipe(study) -> None:
    rows = study.plan(tiny=False)
    names = [name for name, _, _ in rows]
    recipes = {p.name.removesuffix("_fashion_mnist.yaml") for p in (REPO / "recipes" / "pretrain").glob("*.yaml")}
    assert set(names) == {n for n in study.OBJECTIVES if n in recipes}
    assert sum(study.trial_count(params) for _, _, params in rows) == 5 * 4 * 2 + 2 * 4  # 48, as documented
    groco = next(params for name, _, params in rows if name == "groco")
    assert groco == ["--param", "train.lr=0.375,1.5,6,24"]  # around the authors' 6.0, no temperature


def test_table_counts_a_retried_trial_once_and_finds_the_recipes_trial(study, tmp_path: Path) -> None:
    trials = [
        _trial(0, 0.3, 0.2, None, None),  # interrupted ...
        _trial(1, 0.3, 0.2, 74.66, 60.0, retry_of=0),  # ... and retried: the recipe's own settings
        _trial(2, 0.1, 0.2, 72.00, 80.0),
        _trial(3, 1.0, 0.2, 70.00, 30.0),
    ]
    agreement = {"rankme": {"spearman": -0.5, "gap": 2.66, "best": 1, "pick": 2}}
    summary = {"trials": trials, "agreement": agreement, "winner": trials[2]}
    (tmp_path / "mochi").mkdir()
    (tmp_path / "mochi" / "sweep.json").write_text(json.dumps(summary))
    text = study.table(tmp_path, ["mochi", "dcl"], "rankme", 234, "python eval/objective_study.py")
    row = next(line for line in text.splitlines() if line.startswith("| mochi "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3/3"
    assert cells[2] == "lr 0.3 temperature 0.2, k-NN 74.66"  # the best by k-NN
    assert cells[3] == "lr 0.3 temperature 0.2, k-NN 74.66"  # mochi_fashion_mnist.yaml: lr 0.3, tau 0.2
    assert cells[4] == "-0.50 / 2.66"
    assert cells[-1] == "lr 0.1 temperature 0.2, k-NN 72.00"  # chosen by RankMe
    assert "| dcl | not run |" in text
