"""The GPU view path on a GPU: nvJPEG decoding, views on the device, a training run (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_toolkit.data import ImageFolder, build_view_transforms
from ssl_toolkit.data.batched_collate import BatchViewCollate
from ssl_toolkit.data.decode import decode_batch, decode_file, encoded_jpeg
from ssl_toolkit.data.image_folder import JpegBytes
from tests.data.photo_helpers import make_photo_folder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=8, sides=(60, 140), test=2)


def test_nvjpeg_decodes_like_libjpeg_turbo(photos: Path) -> None:
    files = sorted((photos / "train").rglob("*.jpg"))
    on_gpu = decode_batch([encoded_jpeg(f) for f in files], "cuda")
    for file, image in zip(files, on_gpu):
        reference = decode_file(file)
        assert image.device.type == "cuda" and image.shape == reference.shape
        assert (image.cpu().float() - reference.float()).abs().mean() < 1.5  # IDCTs differ by a level or so


def test_views_on_the_gpu_match_the_workers_views(photos: Path) -> None:
    folder = ImageFolder(str(photos / "train"))
    groups = [{"name": "global", "n": 2, "size": 64}, {"name": "local", "n": 2, "size": 32, "scale": [0.05, 0.3]}]
    transforms, _, _ = build_view_transforms(groups, mean=MEAN, std=STD, batched=True)
    on_cpu = BatchViewCollate(transforms, n=len(folder), seed=3)
    deferred = BatchViewCollate(transforms, n=len(folder), seed=3, defer=True)
    items = [(JpegBytes(folder)[i][0], i, i) for i in range(8)]
    reference = on_cpu([(folder[i][0], i, i) for i in range(8)])
    batch = deferred.finish(deferred(items).pin_memory().to("cuda", non_blocking=True))
    for a, b in zip(reference.views, batch.views):
        assert b.device.type == "cuda" and a.shape == b.shape
        difference = (a - b.cpu()).abs()
        assert difference.mean() < 0.03 and difference.max() < 1.0  # decoders and roundings differ slightly


def test_a_run_with_views_and_decoding_on_the_gpu(photos: Path, tmp_path: Path) -> None:
    import csv
    import math

    from accelerate.state import AcceleratorState

    from ssl_toolkit import config, engine

    AcceleratorState._reset_state(reset_partial_state=True)
    tiny = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"
    cfg = config.load(
        tiny,
        [f"data.root={photos}", f"train.output_dir={tmp_path}", "eval.after_train=false", "train.max_steps=3",
         "data.view_backend=batched", "data.view_device=cuda", "data.decode_device=cuda", "data.num_workers=2"],
    )  # fmt: skip
    run = engine.train(cfg)
    with (run / "metrics.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
