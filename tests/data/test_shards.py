"""WebDataset shards: packing a folder, reading by index, the index cache, corrupt samples, patterns, workers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_toolkit import cli, config
from ssl_toolkit.builders import build_train_data
from ssl_toolkit.data import ImageFolder, build_dataset, shard_index
from ssl_toolkit.data.pack import pack_folder
from ssl_toolkit.data.shards import WebDatasetShards, shard_paths
from ssl_toolkit.errors import ConfigError, DataError
from tests.data.shard_helpers import encode, make_mixed_folder, noise_image, write_shard
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def shards(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    pack_folder(folder, out, shard_size=10, progress=False)
    return out


def _same_items(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(len(a)))


def test_packed_splits_read_like_the_folder(folder: Path, shards: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        ds = build_dataset(name="webdataset", split=split, root=str(shards))
        ref = ImageFolder(str(folder / split))
        assert _same_items(ds, ref)  # same files, same order, same decoding, same labels
        assert ds.labels.tolist() == ref.labels.tolist() and ds.classes == ref.classes == ["class_0", "class_1"]
        assert ds.num_classes == 2 and ds.mean == ref.mean and ds.std == ref.std
    assert [Path(p).name for p in shard_paths(str(shards))] == [f"shard-00000{k}.tar" for k in range(4)]
    assert len(shard_paths(str(shards), "test")) == 2 and (shards / "train" / "classes.txt").is_file()
    again = tmp_path / "again"
    pack_folder(folder, again, shard_size=10, progress=False)  # tar members get mtime 0: same bytes
    for a, b in zip(sorted(shards.rglob("*.tar")), sorted(again.rglob("*.tar")), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_the_index_is_cached_and_rebuilt_when_a_shard_changes(tmp_path: Path, monkeypatch) -> None:
    paths = [
        str(write_shard(tmp_path / f"s-{k}.tar", [{"__key__": f"{k}{i}", "png": encode(noise_image(i, 6, 6))}
                                                   for i in range(2 + k)]))
        for k in range(2)
    ]  # fmt: skip
    assert len(WebDatasetShards(paths)) == 5
    assert shard_index.index_path(paths).is_file()
    real_build = shard_index.build_index
    monkeypatch.setattr(shard_index, "build_index", lambda shards: pytest.fail("the cached index was not used"))
    assert len(WebDatasetShards(paths)) == 5
    write_shard(tmp_path / "s-1.tar", [{"__key__": "x", "png": encode(noise_image(7, 5, 5))}])
    monkeypatch.setattr(shard_index, "build_index", real_build)
    ds = WebDatasetShards(paths)
    assert len(ds) == 3 and torch.equal(ds[2][0], torch.from_numpy(noise_image(7, 5, 5)).permute(2, 0, 1))

    def read_only(path, index):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(shard_index, "_write_cache", read_only)
    shard_index.index_path(paths).unlink()
    with pytest.warns(UserWarning, match="cannot cache the shard index"):
        assert len(WebDatasetShards(paths)) == 3


def test_flat_unlabelled_folder_of_mixed_sizes(tmp_path: Path) -> None:
    images = make_mixed_folder(tmp_path / "flat")
    result = pack_folder(images, tmp_path / "out", progress=False)
    assert result.classes == [] and result.splits[0].samples == 6 and result.splits[0].name == ""
    ds = build_dataset(name="webdataset", root=str(tmp_path / "out"))
    assert ds.labels is None and ds.num_classes is None and ds.classes == []
    assert _same_items(ds, ImageFolder(str(images)))  # JPEG and PNG, sizes 10x14 ... 25x19
    assert {tuple(ds[i][0].shape) for i in range(6)} == {(3, 10 + 3 * i, 14 + i) for i in range(6)}
    with pytest.raises(DataError, match="needs .*train and .*test"):
        build_dataset(name="webdataset", split="test", root=str(tmp_path / "out"))


def test_cli_pack_skips_corrupt_files_and_refuses_a_used_folder(tmp_path: Path, capsys) -> None:
    images = make_mixed_folder(tmp_path / "flat", corrupt=True)
    out = tmp_path / "out"
    assert cli.main(["pack", str(images), "--out", str(out), "--shard-size", "4"]) == 0
    captured = capsys.readouterr()  # the command line prints each skipped file as one line (cli_warnings.py)
    skipped = [line for line in captured.err.splitlines() if line.startswith("ssl-toolkit: skipped ")]
    assert len(skipped) == 2 and "zz_garbage.png" in skipped[0] and "zz_truncated.jpg" in skipped[1]
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("packed 6 images in 2 shard(s)") and "2 corrupt or unreadable files skipped" in summary
    assert len(build_dataset(name="webdataset", root=str(out))) == 6
    assert cli.main(["pack", str(images), "--out", str(out)]) == 2
    assert "already holds .tar shards" in capsys.readouterr().err


def test_corrupt_and_imageless_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    good = [noise_image(i, 8, 8) for i in range(3)]
    shard = write_shard(
        tmp_path / "s.tar",
        [
            {"__key__": "a", "png": encode(good[0]), "cls": 0},
            {"__key__": "b", "jpg": b"\xff\xd8\xff broken jpeg", "cls": 1},
            {"__key__": "c", "json": b"{}", "cls": 1},  # no image member at all
            {"__key__": "d", "png": encode(good[1]), "label": "1"},
            {"__key__": "e", "png": encode(good[2]), "cls": 0},
        ],
    )
    with pytest.warns(UserWarning, match=r"s\.tar:c"):
        ds = WebDatasetShards([str(shard)])
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 1, 0] and ds.classes == ["0", "1"]
    with pytest.warns(UserWarning, match=r"s\.tar:b\.jpg") as record:
        image, label = ds[1]  # replaced by the next readable sample
    assert len(record) == 1 and torch.equal(image, torch.from_numpy(good[1]).permute(2, 0, 1)) and label == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per sample, not per access
        assert ds[1][1] == 1
    assert ds.summary().startswith("2 corrupt or unreadable samples skipped")
    with pytest.raises(DataError, match="labelled=True needs a cls/label"):
        WebDatasetShards([str(write_shard(tmp_path / "u.tar", [{"__key__": "a", "png": encode(good[0])}]))],
                         labelled=True)  # fmt: skip
    bad = write_shard(tmp_path / "bad.tar", [{"__key__": "a", "png": encode(good[0]), "cls": "cat"}])
    with pytest.raises(DataError, match="is not an integer"):
        WebDatasetShards([str(bad)])


def test_patterns_splits_and_errors(shards: Path, tmp_path: Path) -> None:
    braces = str(shards / "{split}" / "shard-{000000..000001}.tar")
    assert len(build_dataset(name="webdataset", split="test", root=braces)) == 16
    assert len(build_dataset(name="webdataset", root=str(shards / "train" / "shard-*.tar"))) == 32
    assert len(shard_paths(str(shards / "train" / "shard-00000{0,1}.tar"))) == 2
    with pytest.raises(DataError, match=r"write \{split\} in it"):
        shard_paths(str(shards / "train" / "shard-*.tar"), "test")
    with pytest.raises(DataError, match="not found"):
        shard_paths(str(shards / "train" / "shard-{000000..000009}.tar"))
    import tarfile

    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tar:
        tar.add(sorted((shards / "train").glob("*.tar"))[0], arcname="x.png")
    with pytest.raises(DataError, match="uncompressed"):
        WebDatasetShards([str(tmp_path / "c.tar.gz")])
    base = [f"train.output_dir={tmp_path}", "data.name=webdataset"]
    assert config.load(TINY, [*base, f"data.root={braces}"]).data.root == braces  # a pattern is not a path
    with pytest.raises(ConfigError, match="data.name=webdataset needs data.root"):
        config.load(TINY, base)
    with pytest.raises(ConfigError, match="cannot be downloaded"):
        build_dataset(name="webdataset", root=str(shards), download=True)


@pytest.mark.parametrize("backend", ["per_image", "batched"])
def test_two_workers_give_the_same_batches_as_none(shards: Path, tmp_path: Path, backend: str) -> None:
    cfg = config.load(
        TINY,
        [f"train.output_dir={tmp_path}", "data.name=webdataset", f"data.root={shards}", f"data.view_backend={backend}"],
    )
    data = build_train_data(cfg)
    data.sampler.set_epoch(1)

    def batches(workers: int) -> list:
        loader = DataLoader(
            data.dataset, batch_size=8, sampler=data.sampler, num_workers=workers, collate_fn=data.collate_fn
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a.ids, b.ids) and all(torch.equal(x, y) for x, y in zip(a.views, b.views, strict=True))
    assert sorted(torch.cat([b.ids for b in serial]).tolist()) == list(range(32))
