"""The run report: a verdict against the floors, label-free first for unlabelled data, no self-neighbours, tables
for one-point runs, and "unavailable: <reason>" instead of a traceback when a run folder's data is gone."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssl_toolkit import config, engine
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.evaluate import evaluate_encoder_dir
from ssl_toolkit.export import load_encoder
from ssl_toolkit.report import write_report
from ssl_toolkit.report_images import find_neighbours
from ssl_toolkit.report_verdict import BAD, GOOD, INFO, WARN, verdict
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tests" / "tiny.yaml"
MONITOR = ["monitor.every=3", "monitor.samples=24", "monitor.knn_bank=16", "monitor.lidar_samples=12",
           "monitor.lidar_views=2", "monitor.export_best=true"]  # fmt: skip


def _train(data: Path, out: Path, name: str, *extra: str) -> Path:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    overrides = [f"data.root={data}", f"train.output_dir={out}", f"train.run_name={name}", "eval.after_train=false"]
    return engine.train(config.load(TINY, [*overrides, *extra]))


def _evaluate(run: Path) -> None:
    evaluate_encoder_dir(run / "encoder", linear_epochs=2, lidar_samples=16, lidar_views=2, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A labelled run (train/ and test/ class folders) and an unlabelled one (one flat folder), both monitored
    and evaluated as ``ssl-toolkit train`` would."""
    base = tmp_path_factory.mktemp("report_runs")
    labelled = make_image_folder(base / "labelled")
    flat = base / "flat"
    flat.mkdir()
    for path in sorted((labelled / "train").rglob("*.png")):
        shutil.copy(path, flat / f"{path.parent.name}_{path.name}")
    tau = "objective={name: simclr, temperature: {kind: cosine, start: 0.5, end: 0.1}}"
    runs = {
        "labelled": _train(labelled, base / "runs", "labelled", *MONITOR, tau),
        "unlabelled": _train(flat, base / "runs", "unlabelled", *MONITOR),
    }
    for run in runs.values():
        _evaluate(run)
    return runs


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _text(page: str) -> str:
    """The page without its embedded images (whose base64 may hold any short string)."""
    return re.sub(r"data:image/png;base64,[^\"]+", "", page)


def _column(path: Path, name: str) -> list[float]:
    with path.open() as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def test_labelled_report_gives_a_verdict_and_marks_the_best_rankme(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(runs["labelled"], tmp_path)
    page = write_report(run, n_queries=3, bank_size=16).read_text()
    assert page.count("data:image/png;base64,") == 4  # curves (with the τ panel), monitor, views, neighbours
    assert page.index("Verdict: the encoder against the floors") < page.index("<h2>Training")
    assert "k-NN, dino protocol" in page and "linear probe" in page and 'class="pill ' in page
    rankmes, steps = _column(run / "monitor.csv", "rankme"), _column(run / "monitor.csv", "step")
    best = int(steps[rankmes.index(max(rankmes))])
    assert f"Best embedding RankMe {max(rankmes):.1f} at step {best:,} and exported to encoder_best/" in page
    assert "Monitoring: RankMe, alpha-ReQ, LiDAR, k-NN" in page
    assert "image_folder at" in page and "2x16" in page and "resnet10t + simclr" in page
    assert "<b>wall time</b>unknown" not in page and "<b>machine</b>unknown" not in page  # from run.json
    found = find_neighbours(load_encoder(run / "encoder"), config.load(run / "recipe.yaml"), n_queries=3, bank_size=16)
    assert found.query_split == "test"
    assert all(title.startswith("query: class_") for _, title in found.queries)
    assert all(caption.startswith("class_") for row in found.rows for _, caption, _ in row)


def test_unlabelled_report_is_label_free_first_without_classes_or_self_neighbours(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(runs["unlabelled"], tmp_path)
    page = write_report(run, n_queries=4, bank_size=16).read_text()
    order = [page.index(f"<h2>{title}") for title in ("Label-free metrics", "Monitoring", "Training", "Views")]
    assert order == sorted(order)
    for card in ("RankMe", "alpha-ReQ", "LiDAR", "dead dimensions"):
        assert f'<div class="t">{card}</div>' in page
    text = _text(page)
    assert "k-NN" not in text and "knn" not in text and "class_" not in text and "linear probe" not in text
    assert "the training images have no labels" in page
    assert "knn_dino" not in (run / "monitor.csv").read_text().splitlines()[0]
    found = find_neighbours(load_encoder(run / "encoder"), config.load(run / "recipe.yaml"), n_queries=4, bank_size=16)
    assert found.query_split == "train" and len(found.queries) == 4
    for (query, title), ids, query_id, row in zip(found.queries, found.neighbour_ids, found.query_ids, found.rows):
        assert title == "query" and query_id not in ids
        assert not any(torch.equal(query, image) for image, _, _ in row)  # not even as a copy of itself
        assert all(caption.startswith("#") and "class" not in caption and not other for _, caption, other in row)


def test_a_run_with_one_logged_point_gets_tables_not_empty_axes(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images")
    run = _train(data, tmp_path / "runs", "one", "train.max_steps=1", *MONITOR)
    page = write_report(run, n_queries=2, bank_size=8).read_text()
    assert page.count("One logged row (step 1)") == 2  # metrics.csv and monitor.csv
    assert not (run / "report_curves.png").exists() and not (run / "report_monitor.png").exists()
    assert "no metrics.json" in page and "(dashed line)" not in page  # no figure, no line to point at
    assert "Input-bound" not in page  # one window (start-up included) is no evidence


def test_a_run_folder_whose_data_is_gone_renders_the_rest(runs: dict[str, Path], tmp_path: Path) -> None:
    from ssl_toolkit.cli import main

    run = _copy(runs["labelled"], tmp_path)
    recipe = OmegaConf.load(run / "recipe.yaml")
    recipe.data.root = str(tmp_path / "elsewhere")  # copied from another machine
    OmegaConf.save(recipe, run / "recipe.yaml")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert page.count(f"unavailable: data.root does not exist: {tmp_path / 'elsewhere'}") == 2  # views, neighbours
    assert page.count("data:image/png;base64,") == 2  # curves and monitor still drawn
    assert "clears" in page or "below" in page or "level" in page  # the verdict is still there


def _metrics(encoder: dict, raw: dict | None = None, rand: dict | None = None) -> dict:
    out = {"encoder": encoder}
    out.update({"raw_pixels": raw} if raw is not None else {})
    out.update({"random_init": rand} if rand is not None else {})
    return out


@pytest.mark.parametrize(
    ("enc", "raw", "rand", "colour", "words"),
    [
        (80.0, 70.0, 60.0, GOOD, "clears both floors"),
        (65.0, 70.0, 60.0, WARN, "clears random-init only"),
        (65.0, 60.0, 70.0, WARN, "clears raw pixels only"),
        (50.0, 70.0, 60.0, BAD, "below both floors"),
        (70.0, 70.0, 60.0, WARN, "clears random-init only"),  # a tie does not clear a floor
        (60.0, 60.0, 60.0, WARN, "level with the floors: no measurable gain"),
    ],
)
def test_label_based_verdicts_against_hand_made_floors(enc, raw, rand, colour, words) -> None:
    row = verdict("knn_dino", _metrics({"knn_dino": enc}, {"knn_dino": raw}, {"knn_dino": rand}))
    assert (row.colour, row.words) == (colour, words)


def test_label_free_verdicts() -> None:
    m = _metrics(
        {"rankme": 30.0, "lidar": 5.0, "alpha_req": None, "dead_fraction": 0.2},
        {"rankme": 500.0, "dead_fraction": 0.0},
        {"rankme": 20.0, "lidar": 9.0, "dead_fraction": 0.1},
    )
    assert verdict("rankme", m, width=64).colour == GOOD  # 30 of 64 dimensions: not collapsed
    assert verdict("rankme", m, width=1024).colour == BAD  # 30 of 1024 dimensions is below 5 %: collapsing
    assert verdict("rankme", m, width=1024, collapse=0.01).colour == GOOD
    assert verdict("rankme", m).colour == INFO  # width unknown: no collapse check, no floor verdict
    assert verdict("lidar", m).colour == INFO and "random init 9.0" in verdict("lidar", m).words
    assert verdict("dead_fraction", m).colour == WARN
    assert verdict("alpha_req", m).colour == INFO and "undefined" in verdict("alpha_req", m).words
    assert verdict("knn_dino", m) is None  # no labels, no row
    assert verdict("knn_dino", _metrics({"knn_dino": 50.0})).words == "no floors computed"
    assert verdict("knn_dino", _metrics({"knn_dino": 50.0}, rand={"knn_dino": 40.0})).colour == GOOD


def _input_bound(metrics_csv: Path, wait: float) -> None:
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["data_wait"] = str(wait)
    with metrics_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_report_of_hand_made_files_colours_each_metric_and_reads_run_json(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """One report over hand-written metrics.json, run.json and an input-bound metrics.csv (one render: the
    suite stays fast); the header without run.json is checked in the labelled test above."""
    run = _copy(runs["labelled"], tmp_path)
    metrics = _metrics(
        {"knn_instdisc": 80.0, "knn_dino": 65.0, "linear": 50.0, "rankme": 40.0, "alpha_req": 1.1, "lidar": 3.0},
        {"knn_instdisc": 70.0, "knn_dino": 70.0, "linear": 60.0, "rankme": 300.0},
        {"knn_instdisc": 60.0, "knn_dino": 60.0, "linear": 55.0, "rankme": 20.0, "lidar": 9.0},
    )
    (run / "metrics.json").write_text(json.dumps(metrics))
    run_json = {"started": "2025-01-02T03:04:05", "finished": "2025-01-02T04:05:06", "wall_s": 3661.0, "step": 8,
                "total_steps": 8, "epochs": 2, "steps_per_epoch": 4, "images_per_s": 1234.5, "dataset": "image_folder",
                "root": "/data/photos", "train_images": 12345, "labelled": True, "classes": 2, "skipped_files": 3,
                "image_size": 16, "views": "2x16", "device": "cuda:0 NVIDIA H200", "precision": "bf16",
                "processes": 1, "machine": "AMD EPYC, 16 cores, Linux", "resumed_from": None,
                "encoder": str(run / "encoder")}  # fmt: skip
    (run / "run.json").write_text(json.dumps(run_json))
    _input_bound(run / "metrics.csv", 0.6)
    page = write_report(run, n_queries=2, bank_size=8).read_text()
    expected = [(GOOD, "clears both floors"), (WARN, "clears random-init only"), (BAD, "below both floors"),
                (GOOD, "not collapsed: 40.0 of 64"), (INFO, "higher is better within one method")]  # fmt: skip
    for colour, words in expected:
        assert f'<span class="pill {colour}">{words}' in page
    for text in ("image_folder at /data/photos", "12,345 training images, 2 classes, 3 unreadable files skipped",
                 "8 of 8", "2 (4 steps each)", "1 h 01 min", "1,234", "cuda:0 NVIDIA H200, bf16, 1 process",
                 "AMD EPYC, 16 cores, Linux", "finished 2025-01-02T04:05:06"):  # fmt: skip
        assert text in page
    assert "Input-bound: training waited for data 60% of the time" in page
    assert "<b>waiting for data</b>60% of the time" in page


def test_report_of_a_folder_that_is_not_a_run_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no recipe.yaml"):
        write_report(tmp_path)
