"""Trackers through accelerate (``train.log_with``), for real: MLflow against a local SQLite store, W&B offline
(when installed) and TensorBoard, on the tiny recipe through the command line, with a resume in between."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ssl_toolkit import cli, config, trackers
from ssl_toolkit.errors import ConfigError
from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tests" / "tiny.yaml"
HAS_WANDB = importlib.util.find_spec("wandb") is not None


def test_tracker_names_are_accelerates() -> None:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert set(trackers.TRACKER_PACKAGES) == set(LOGGER_TYPE_TO_CLASS)


@pytest.mark.parametrize(
    ("log_with", "match"),
    [
        ("[mlfow]", r"unknown tracker 'mlfow' in train.log_with \(did you mean 'mlflow'\?\)"),
        ("[tensorboard,tensorboard]", "names a tracker twice"),
        ("[comet_ml]", "'comet_ml' is not installed; install it or remove it from train.log_with"),
    ],
)
def test_log_with_is_validated(log_with: str, match: str, tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "comet_ml" else real(name, *a))
    with pytest.raises(ConfigError, match=match):
        config.load(TINY, [f"data.root={tmp_path}", f"train.log_with={log_with}"])
    assert config.load(TINY, [f"data.root={tmp_path}", "train.log_with=[]"]).train.log_with == []


def test_flat_config_is_scalars_by_dotted_key(tmp_path: Path) -> None:
    cfg = config.load(TINY, [f"data.root={tmp_path}"])
    flat = trackers.flat_config(cfg)
    assert flat["train.lr"] == 0.05 and flat["objective.name"] == "simclr" and flat["train.max_steps"] == "null"
    assert json.loads(flat["views"])[0]["size"] == 16 and json.loads(flat["train.log_with"]) == ["tensorboard"]
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory):
    """Two ``ssl-toolkit train tiny`` invocations (4 steps, then resumed to 8 with evaluation), every tracker on."""
    from accelerate.state import AcceleratorState

    base = tmp_path_factory.mktemp("tracked")
    data = make_image_folder(base / "images")
    log_with = ["tensorboard", "mlflow", *(["wandb"] if HAS_WANDB else [])]
    common = [f"data.root={data}", f"train.output_dir={base / 'runs'}", f"train.log_with=[{','.join(log_with)}]"]
    evaluation = ["eval.floors=false", "eval.linear_epochs=1", "eval.lidar_samples=0", "eval.rankme_samples=32"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # MLflow puts the artifacts of a store given by URI under ./mlruns
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        for key in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(key, str(base / "wandb_home"))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")  # W&B would wrap this process's stdout and stderr
        codes, ids = [], []
        for extra in (["train.max_steps=4", "eval.after_train=false"], evaluation):
            AcceleratorState._reset_state(reset_partial_state=True)
            codes.append(cli.main(["train", "tiny", *common, *extra]))
            ids.append(trackers.read_ids(base / "runs" / "tiny"))
        AcceleratorState._reset_state(reset_partial_state=True)
    return {"run": base / "runs" / "tiny", "db": base / "mlflow.db", "codes": codes, "ids": ids}


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_and_artifacts(tracked_run: dict) -> None:
    import mlflow

    assert tracked_run["codes"] == [0, 0]
    first, second = tracked_run["ids"]
    assert first["mlflow"] == second["mlflow"], "the resume started another MLflow run"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracked_run['db']}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.run_id for r in runs] == [first["mlflow"]]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["objective.name"] == "simclr"
    assert run.data.params["model.backbone"] == "resnet10t"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 9))  # 4 steps, then 4 more after the resume
    metrics = json.loads((tracked_run["run"] / "metrics.json").read_text())
    assert run.data.metrics["eval/encoder/knn_instdisc"] == pytest.approx(metrics["encoder"]["knn_instdisc"])
    assert run.data.metrics["train/images_per_s"] > 0 and "lr" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "encoder")}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"encoder/model.safetensors", "encoder/config.json", "report/report.html"} <= artifacts


@pytest.mark.slow
def test_tensorboard_has_every_step_and_the_final_metrics(tracked_run: dict) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer().AddRunsFromDirectory(str(tracked_run["run"] / "tensorboard"))
    events.Reload()
    steps = {e.step for run in events.Runs() if "loss" in events.GetAccumulator(run).Tags()["scalars"]
             for e in events.Scalars(run, "loss")}  # fmt: skip
    assert steps == set(range(1, 9))
    final = [
        run for run in events.Runs() if "eval/encoder/knn_instdisc" in events.GetAccumulator(run).Tags()["scalars"]
    ]
    assert final, "the final metrics did not reach TensorBoard"
    assert not any((tracked_run["run"] / "tensorboard").glob("*/tensorboard"))  # written where the run says


@pytest.mark.slow
@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'ssl-toolkit[track]')")
def test_wandb_offline_run_holds_config_history_and_report(tracked_run: dict) -> None:
    first, second = tracked_run["ids"]
    assert first["wandb"] == second["wandb"]
    offline = sorted((tracked_run["run"] / "wandb").glob(f"offline-run-*-{first['wandb']}"))
    # per invocation one folder for the training and one for the report and final metrics; W&B names them to
    # the second, so two starts within one second can share a folder (one log then replaces the other): check
    # what the run as a whole holds, not which folder holds it
    assert len(offline) >= 2, offline
    logs = b"".join(log.read_bytes() for folder in offline for log in folder.glob("*.wandb"))
    assert b"train.lr" in logs and b"loss" in logs
    assert b"report.html" in logs and b"eval/encoder/knn_instdisc" in logs


@pytest.mark.slow
def test_a_failed_run_ends_its_mlflow_run_as_failed(tmp_path: Path, monkeypatch) -> None:
    import mlflow
    from accelerate.state import AcceleratorState

    from ssl_toolkit import engine
    from ssl_toolkit.errors import NonFiniteLossError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = make_image_folder(tmp_path / "images", per_class=8)
    cfg = config.load(TINY, [f"data.root={data}", f"train.output_dir={tmp_path / 'runs'}", "eval.after_train=false",
                             "objective={name: 'tests.engine.helpers:NanAfter', nan_step: 1}",
                             "train.log_with=[mlflow]"])  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(NonFiniteLossError):
        engine.train(cfg)
    AcceleratorState._reset_state(reset_partial_state=True)
    run_id = trackers.read_ids(tmp_path / "runs" / "tiny")["mlflow"]
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and mlflow.active_run() is None
    assert trackers.active(tmp_path / "runs" / "tiny") is None


def test_a_tracker_that_cannot_start_is_one_line_exit_2(tmp_path: Path, monkeypatch, capfd) -> None:
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    data = make_image_folder(tmp_path / "images", per_class=8)
    AcceleratorState._reset_state(reset_partial_state=True)
    capfd.readouterr()
    rc = cli.main(["train", "tiny", f"data.root={data}", f"train.output_dir={tmp_path / 'runs'}",
                   "train.log_with=[mlflow]", "eval.after_train=false"])  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("ssl-toolkit: error: the trackers ['mlflow'] did not start: "), err
    assert "Traceback" not in "\n".join(err)
