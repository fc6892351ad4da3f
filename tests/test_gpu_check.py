"""The GPU check's CPU dry run: ``benchmarks/gpu_check.py OUT --device cpu --tiny`` keeps the script runnable
between GPU loans. Every section runs or says why not, every objective trains with finite losses, and the
device and CPU paths of k-NN and RankMe agree."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_toolkit import config
from ssl_toolkit.builders import build_base_dataset
from ssl_toolkit.objectives import OBJECTIVES

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402
from gpu_check_step import VARIANTS  # noqa: E402
from gpu_check_train import DEFAULT_RECIPE, data_overrides  # noqa: E402

SECTION_NAMES = [name for name, _, _ in gpu_check.SECTIONS]


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), str(out), "--device", "cpu", "--tiny", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run(out, "--data", "generated")  # the same on every machine, with or without Fashion-MNIST
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


@pytest.mark.slow
def test_every_section_ran_or_says_why_not(dry_run: tuple[dict, str]) -> None:
    doc, md = dry_run
    assert list(doc["sections"]) == SECTION_NAMES
    for name, record in doc["sections"].items():
        assert record["status"] in ("ok", "skipped", "not_available"), f"{name}: {record.get('traceback')}"
        assert record["status"] == "ok" or record["reason"], name
        assert f"#### {name}: {record['status']}" in md
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["gpu"] is None
    assert doc["meta"]["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]


@pytest.mark.slow
def test_every_objective_trains_with_finite_losses(dry_run: tuple[dict, str]) -> None:
    section = dry_run[0]["sections"]["objectives"]
    rows = {row["objective"]: row for row in section["tables"]["Objectives"]}
    assert set(rows) == set(OBJECTIVES)
    for name, row in rows.items():
        losses = section["losses"][name]
        assert row["status"] == "ok" and row["encoder_exported"], (name, losses)
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses), (name, losses)
        assert row["loss_last"] == losses[-1] and row["steps"] == 2


@pytest.mark.slow
def test_default_job_and_eval_paths(dry_run: tuple[dict, str]) -> None:
    sections = dry_run[0]["sections"]
    job = sections["default_job"]["tables"]
    assert job["Run"][0]["returncode"] == 0 and job["Run"][0]["steps"] == 2 and job["Run"][0]["report"]
    assert {row["model"] for row in job["Evaluation (top-1 %, RankMe)"]} == {"encoder", "raw_pixels", "random_init"}
    knn, rank = sections["knn_rankme"]["tables"]["k-NN"], sections["knn_rankme"]["tables"]["RankMe"]
    assert knn[1]["identical_predictions_%"] == 100.0 and knn[0]["top1_vs_true_class_%"] > 50
    assert rank[1]["abs_difference"] < 1e-6 and 10 < rank[0]["rankme"] < 64
    steps = {row["variant"]: row for row in sections["resnet50_step"]["tables"]["Steps"]}
    assert set(steps) == {v.name for v in VARIANTS}
    assert all(row["status"] == "ok" and row["ms_per_step"] > 0 for row in steps.values())


def test_spent_budget_skips_every_section_with_a_reason(tmp_path: Path) -> None:
    assert gpu_check.main([str(tmp_path), "--device", "cpu", "--tiny", "--budget-s", "0"]) == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(doc["sections"]) == SECTION_NAMES
    assert all(r["status"] == "skipped" and "budget" in r["reason"] for r in doc["sections"].values())
    assert "time budget spent" in (tmp_path / "gpu_check.md").read_text()


def test_a_failing_section_is_recorded_with_its_traceback(tmp_path: Path) -> None:
    check = gpu_check.Check(torch.device("cpu"), True, tmp_path, tmp_path, None)

    def broken(_check: gpu_check.Check) -> dict:
        raise ValueError("planted failure")

    record = gpu_check.run_section("broken", broken, check)
    assert record["status"] == "failed" and record["error"] == "ValueError: planted failure"
    assert "Traceback" in record["traceback"] and "planted failure" in record["traceback"]
    assert gpu_check.run_section("fine", lambda _c: {"notes": ["x"]}, check)["status"] == "ok"


def test_generated_images_stand_in_for_fashion_mnist(tmp_path: Path) -> None:
    check = gpu_check.Check(torch.device("cpu"), True, tmp_path, tmp_path, None, data="generated")
    overrides, described = data_overrides(check)
    train = build_base_dataset(config.load(DEFAULT_RECIPE, overrides).data)
    assert "generated" in described and len(train) == 80
    assert train.labels.unique().tolist() == list(range(10)) and tuple(train[0][0].shape) == (3, 28, 28)
