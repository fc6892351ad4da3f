"""Local Hugging Face datasets: save_to_disk and parquet folders read like the image folder they came from."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch

from ssl_toolkit.data import ImageFolder, build_dataset
from ssl_toolkit.data.hf import HFImages
from ssl_toolkit.errors import ConfigError, DataError
from tests.data.shard_helpers import encode, noise_image
from tests.engine.helpers import make_image_folder


def folder_as_hf(folder: Path, *, embed: bool = True):
    """``folder/{train,test}`` as a DatasetDict with an Image and a ClassLabel column, in ImageFolder order."""
    splits = {}
    for split in ("train", "test"):
        ref = ImageFolder(str(folder / split))
        images = [{"bytes": Path(p).read_bytes(), "path": None} if embed else p for p in ref.samples]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=ref.classes)})
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": ref.labels.tolist()}, features=features)
    return datasets.DatasetDict(splits)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), per_class=6)


def _same_items(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(len(a)))


def test_save_to_disk_folder_reads_like_the_image_folder(folder: Path, tmp_path: Path) -> None:
    folder_as_hf(folder).save_to_disk(str(tmp_path / "hf"))
    for split in ("train", "test"):
        ds = build_dataset(name="hf_dataset", split=split, root=str(tmp_path / "hf"))
        ref = ImageFolder(str(folder / split))
        assert _same_items(ds, ref)
        assert ds.classes == ref.classes and ds.num_classes == 2 and ds.labels.tolist() == ref.labels.tolist()
    assert build_dataset(name="hf_dataset", split="val", root=str(tmp_path / "hf")).labels.tolist() == [0] * 3 + [1] * 3
    with pytest.raises(ConfigError, match="local folders only"):
        build_dataset(name="hf_dataset", root=str(tmp_path / "hf"), download=True)


def test_parquet_folder_and_file_paths(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    hf = folder_as_hf(folder)
    for split, table in hf.items():
        table.to_parquet(str(tmp_path / "pq" / f"{split}-00000-of-00001.parquet"))
    ds = build_dataset(name="hf_dataset", split="test", root=str(tmp_path / "pq"))
    assert _same_items(ds, ImageFolder(str(folder / "test"))) and ds.classes == ["class_0", "class_1"]
    paths_only = folder_as_hf(folder, embed=False)["train"]  # cells hold file paths, read from disk
    assert _same_items(HFImages(paths_only), ImageFolder(str(folder / "train")))


def test_one_dataset_without_splits_is_the_train_split(folder: Path, tmp_path: Path) -> None:
    folder_as_hf(folder)["train"].save_to_disk(str(tmp_path / "one"))
    assert len(build_dataset(name="hf_dataset", root=str(tmp_path / "one"))) == 12
    with pytest.raises(DataError, match="without splits"):
        build_dataset(name="hf_dataset", split="test", root=str(tmp_path / "one"))
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(name="hf_dataset", root=str(tmp_path / "nowhere"))


def test_corrupt_rows_unlabelled_rows_and_missing_columns() -> None:
    good = [noise_image(i, 7, 9) for i in range(2)]
    table = datasets.Dataset.from_dict(
        {"img": [encode(good[0]), b"garbage", encode(good[1], "JPEG")], "label": [1, None, 0]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}),
    )
    ds = HFImages(table, name="rows")
    assert ds.labels is None and ds.classes == [] and ds[0][1] == -1  # a missing label: unlabelled
    with pytest.warns(UserWarning, match=r"rows\[1\]") as record:
        image, _ = ds[1]  # replaced by row 2, a JPEG
    assert len(record) == 1 and image.shape == (3, 7, 9) and ds.summary().startswith("1 corrupt")
    with pytest.raises(DataError, match="labelled=True needs a label column"):
        HFImages(table, labelled=True)
    with pytest.raises(DataError, match="no image column"):
        HFImages(datasets.Dataset.from_dict({"pixels": [b"x"], "label": [0]}))


def test_two_workers_read_the_same_rows_as_none(folder: Path, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    folder_as_hf(folder).save_to_disk(str(tmp_path / "hf"))
    ds = build_dataset(name="hf_dataset", root=str(tmp_path / "hf"))
    serial, parallel = (list(DataLoader(ds, batch_size=4, num_workers=w)) for w in (0, 2))
    assert len(serial) == len(parallel) == 3
    for (xa, ya), (xb, yb) in zip(serial, parallel, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
