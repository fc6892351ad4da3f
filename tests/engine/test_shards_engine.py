"""Training on WebDataset shards and a local Hugging Face dataset: exact resume after a kill, evaluation,
and the sample order of two processes (accelerate's sharding of the epoch sampler)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from ssl_toolkit import config, engine
from ssl_toolkit.builders import build_train_data
from ssl_toolkit.data.pack import pack_folder
from ssl_toolkit.evaluate import evaluate_encoder_dir
from tests.data.test_hf import folder_as_hf
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same generated images as an image folder, WebDataset shards and a save_to_disk folder."""
    folder = make_image_folder(tmp_path_factory.mktemp("images"))
    shards = tmp_path_factory.mktemp("shards")
    pack_folder(folder, shards, shard_size=7, progress=False)
    hf = tmp_path_factory.mktemp("hf") / "dataset"
    folder_as_hf(folder).save_to_disk(str(hf))
    return {"image_folder": folder, "webdataset": shards, "hf_dataset": hf}


def _cfg(tmp_path: Path, source: str, root: Path, name: str, *extra: str):
    overrides = [f"data.name={source}", f"data.root={root}", f"train.output_dir={tmp_path / 'runs'}"]
    return config.load(TINY, [*overrides, f"train.run_name={name}", "eval.after_train=false", *extra])


def _losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("source", ["webdataset", "hf_dataset"])
def test_resume_after_kill_gives_identical_losses(tmp_path: Path, sources, monkeypatch, source) -> None:
    root, extra = sources[source], ["data.view_backend=batched"] if source == "webdataset" else []
    reference = _losses(engine.train(_cfg(tmp_path, source, root, "full", *extra)))
    assert len(reference) == 8  # 32 images / batch 8 = 4 steps per epoch, 2 epochs
    if source == "webdataset":  # the same images in the same order as the folder: the same run
        assert (
            _losses(engine.train(_cfg(tmp_path, "image_folder", sources["image_folder"], "dir", *extra))) == reference
        )

    real_save = engine.save_checkpoint

    def save_then_die(accelerator, ckpt_dir, step, **kw):
        path = real_save(accelerator, ckpt_dir, step, **kw)
        if step == 3:  # mid-epoch: step 3 of 4 in epoch 0
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(engine, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        engine.train(_cfg(tmp_path, source, root, "killed", *extra))
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    resumed = engine.train(_cfg(tmp_path, source, root, "killed", *extra))
    assert _losses(resumed) == reference  # bit-identical, steps 1..8


@pytest.mark.parametrize("source", ["webdataset", "hf_dataset"])
def test_evaluation_on_the_test_split_equals_the_folder(tmp_path: Path, sources, source: str) -> None:
    run = engine.train(_cfg(tmp_path, source, sources[source], "eval", "train.max_steps=1"))
    kwargs = {"size": 16, "floors": False, "batch_size": 64, "linear_epochs": 2, "rankme_samples": 64}
    got = evaluate_encoder_dir(
        run / "encoder", dataset=source, root=str(sources[source]), out_path=tmp_path / "a.json", **kwargs
    )
    ref = evaluate_encoder_dir(
        run / "encoder", dataset="image_folder", root=str(sources["image_folder"]), out_path=tmp_path / "b.json",
        **kwargs,
    )  # fmt: skip
    assert got["setup"]["test_size"] == 16 and 0.0 <= got["encoder"]["knn_instdisc"] <= 100.0
    assert got["encoder"] == ref["encoder"]


def test_two_processes_split_each_epoch_between_them(tmp_path: Path, sources) -> None:
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    cfg = _cfg(tmp_path, "webdataset", sources["webdataset"], "ranks", "train.batch_size=4")
    data = build_train_data(cfg)
    loader = DataLoader(data.dataset, batch_size=4, sampler=data.sampler, drop_last=True, collate_fn=data.collate_fn)
    per_rank = []
    for rank in range(2):
        prepared = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
        prepared.set_epoch(1)
        per_rank.append(torch.cat([batch.ids for batch in prepared]).tolist())
    data.sampler.set_epoch(1)
    order = [i - 32 for i in data.sampler]  # epoch 1's permutation (indices carry the epoch)
    assert sorted(per_rank[0] + per_rank[1]) == list(range(32)) and not set(per_rank[0]) & set(per_rank[1])
    assert [order[k] for k in range(0, 32, 8)] == per_rank[0][::4]  # rank 0 takes batches 0, 2, 4, ... of it
