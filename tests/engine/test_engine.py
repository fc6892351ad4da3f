"""Engine behaviour on CPU: exact resume, NaN stop without checkpoint, a kill during a save, exports."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_toolkit import config, engine
from ssl_toolkit.checkpoint import last_checkpoint
from tests.data.bank_helpers import write_bank
from tests.data.photo_helpers import make_photo_folder
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"


def _cfg(tmp_path: Path, data: Path, name: str, *extra: str):
    return config.load(
        TINY,
        [
            f"data.root={data}",
            f"train.output_dir={tmp_path / 'runs'}",
            f"train.run_name={name}",
            "eval.after_train=false",
            *extra,
        ],
    )


def _losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; runs with other precision settings need it cleared."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 training JPEGs of 16-40 px, every one of another size."""
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=16, sides=(16, 40))


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Variants for 24 of the 32 training images (two each) and 16 unconditional images."""
    variants = {i: [40 + 3 * i, 140 + 3 * i] for i in range(24)}
    return write_bank(tmp_path_factory.mktemp("bank"), variants, unconditional=list(range(60, 76)), size=12)


GENVIEW = [
    "views=[{name: global, n: 1, size: 16, scale: [0.3, 1.0]}, "
    "{name: generated, n: 1, size: 16, scale: [0.3, 1.0], source: generated, global: true}]",
    "data.generated.mode=genview",
    "data.generated.p_generated=0.75",
]


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.view_backend=per_image"],
        ["data.view_backend=batched"],
        ["data.view_backend=batched", "data.root={photos}"],
        ["data.view_backend=batched", "data.view_device=cuda", "data.root={photos}"],
        ["model.ema=true", "model.ema_momentum=[0.5,0.9]"],
        [*GENVIEW, "data.view_backend=batched"],
        ["train.channels_last=true"],
        ["data.generated.mode=adainf", "data.generated.dup=1", "train.max_steps=8"],
    ],
    ids=[
        "per_image",
        "batched",
        "batched_mixed_sizes",
        "views_in_main_process",
        "ema",
        "genview",
        "channels_last",
        "adainf",
    ],  # fmt: skip
)
def test_resume_after_kill_gives_identical_losses(
    tmp_path: Path, data: Path, bank: Path, photos: Path, monkeypatch, overrides
) -> None:
    overrides = [o.replace("{photos}", str(photos)) for o in overrides]
    if any(o.startswith("data.generated") for o in overrides):
        overrides = [*overrides, f"data.generated.bank={bank}"]
    full = engine.train(_cfg(tmp_path, data, "full", *overrides))
    reference = _losses(full)
    assert len(reference) == 8  # 32 images / batch 8 = 4 steps per epoch, 2 epochs

    real_save = engine.save_checkpoint

    def save_then_die(accelerator, ckpt_dir, step, **kw):
        path = real_save(accelerator, ckpt_dir, step, **kw)
        if step == 3:  # mid-epoch: step 3 of 4 in epoch 0
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(engine, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        engine.train(_cfg(tmp_path, data, "killed", *overrides))
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    resumed = engine.train(_cfg(tmp_path, data, "killed", *overrides))
    assert _losses(resumed) == reference  # bit-identical, steps 1..8
    a = torch.load(full / "checkpoints" / "last" / "optimizer.bin", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last" / "optimizer.bin", weights_only=True)
    for sa, sb in zip(a["state"].values(), b["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    weights_a = load_file(full / "checkpoints" / "last" / "model.safetensors")
    weights_b = load_file(resumed / "checkpoints" / "last" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)  # EMA branch included, when present
    assert any(k.startswith("ema_encoder.") for k in weights_a) == ("model.ema=true" in overrides)
    with (full / "metrics.csv").open() as f:
        fractions = [float(r["is_generated_fraction"]) for r in csv.DictReader(f) if r.get("is_generated_fraction")]
    if "data.generated.mode=genview" in overrides:  # 24 of 32 images have variants, drawn with p 0.75
        assert 0.3 < sum(fractions) / len(fractions) < 0.85
    elif "data.generated.mode=adainf" in overrides:  # 48 variants + 16 unconditional of 96 samples (dup 1)
        assert 0.45 < sum(fractions) / len(fractions) < 0.85
    else:
        assert not fractions
    if any(o.startswith("data.generated") for o in overrides):  # the report draws views with the bank flags
        from ssl_toolkit.report import write_report

        page = write_report(full, n_queries=2, bank_size=16).read_text()
        assert (full / "report_views.png").is_file() and "views unavailable" not in page


def test_nan_loss_stops_before_writing_a_checkpoint(tmp_path: Path, data: Path) -> None:
    cfg = _cfg(
        tmp_path,
        data,
        "nan",
        "objective={name: 'tests.engine.helpers:NanAfter', nan_step: 2}",
        "train.save_every=1",
    )
    # NanAfter turns NaN on the step after 2 completed ones: the third, as metrics.csv numbers it
    with pytest.raises(engine.NonFiniteLossError, match="at step 3 .*step-00000002"):
        engine.train(cfg)
    ckpt = last_checkpoint(tmp_path / "runs" / "nan" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-00000002"
    assert not (tmp_path / "runs" / "nan" / "encoder").exists()


def test_kill_during_save_keeps_last_good_checkpoint(tmp_path: Path, data: Path, monkeypatch) -> None:
    from accelerate import Accelerator

    real = Accelerator.save_state

    def dying_save(self, output_dir=None, **kw):
        if "step-00000006" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        engine.train(_cfg(tmp_path, data, "crash"))
    ckpt_dir = tmp_path / "runs" / "crash" / "checkpoints"
    assert last_checkpoint(ckpt_dir).name == "step-00000003"
    monkeypatch.setattr(Accelerator, "save_state", real)
    run = engine.train(_cfg(tmp_path, data, "crash"))
    assert not list(ckpt_dir.glob(".tmp-*"))
    assert last_checkpoint(ckpt_dir).name == "step-00000008"
    assert (run / "encoder" / "model.safetensors").is_file() and (run / "recipe.yaml").is_file()


def test_world_size_mismatch_is_reported(tmp_path: Path, data: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 but accelerate sees 1"):
        engine.train(_cfg(tmp_path, data, "ws"))


def test_accumulation_and_bf16_autocast_run(tmp_path: Path, data: Path) -> None:
    run = engine.train(
        _cfg(tmp_path, data, "accum", "train.batch_size=4", "train.grad_accum=2", "train.mixed_precision=bf16")
    )
    losses = _losses(run)
    assert len(losses) == 8  # 8 batches of 4 per epoch, 2 per optimizer step, 2 epochs
    assert all(torch.isfinite(torch.tensor(losses)))
    # the tiny recipe's 16 px views reach layer4 as 1x1 maps, where bf16 CPU convolutions can return garbage
    # weight gradients: such steps are skipped, so the weights stay finite and every checkpoint is written
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"step-00000006", "step-00000008"}


def test_a_step_with_non_finite_gradients_is_skipped(tmp_path: Path, data: Path, monkeypatch, recwarn) -> None:
    # PyTorch's bf16 CPU convolution can return garbage weight gradients for 1x1 maps at stride 2 while the loss
    # stays finite; a gradient hook makes step 2's gradients NaN the same way, deterministically
    built, calls = engine.build_model, {"n": 0}

    def poisoned(cfg, data):
        model = built(cfg, data)

        def hook(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 2 else grad

        next(model.encoder.parameters()).register_hook(hook)
        return model

    monkeypatch.setattr(engine, "build_model", poisoned)
    run = engine.train(_cfg(tmp_path, data, "skip", "train.max_steps=4", "train.save_every=2"))
    losses = _losses(run)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    messages = [str(w.message) for w in recwarn]
    assert sum("step 2: the loss is finite but some gradients are not" in m for m in messages) == 1
    assert "1 optimizer step(s) of this run were skipped for non-finite gradients" in messages
    assert not any("not saving a checkpoint" in m for m in messages)  # the weights stayed finite
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"step-00000002", "step-00000004"}


def test_objective_histograms_reach_tensorboard(tmp_path: Path, data: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = engine.train(_cfg(tmp_path, data, "hist", "objective={name: isogclr, dataset_size: 32}"))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    assert "tau" in events.Tags()["histograms"]
    assert {"temperature", "tau_min", "tau_max"} <= set(events.Tags()["scalars"])


def test_quality_weights_reach_the_loss(tmp_path: Path, data: Path, vit_weighter_files) -> None:
    folder, pca = vit_weighter_files
    weights = [f"quality_weights.model_path={folder}", f"quality_weights.pca_path={pca}", "train.max_steps=3"]
    run = engine.train(_cfg(tmp_path, data, "weighted", *weights))
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["sample_weights_max"]) > 1.0 for r in rows)
    with pytest.raises(config.ConfigError, match="does not take per-sample weights"):
        _cfg(tmp_path, data, "swav", *weights, "objective={name: swav, n_prototypes: 8, proj_dim: 16}")
