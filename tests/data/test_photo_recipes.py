"""The recipes for real photos train end to end on a folder of mixed-size JPEGs and export a reloadable encoder;
views made in the main process (the ``data.view_device=cuda`` path, here on the CPU) train like worker views."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from ssl_toolkit import config, engine
from ssl_toolkit.export import load_encoder
from tests.data.photo_helpers import make_photo_folder

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "pretrain"
TINY_RESNET = "model.backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}"
TINY_VIT = "model.backbone_kwargs={dynamic_img_size: true, embed_dim: 32, depth: 1, num_heads: 2, patch_size: 8}"
# the multicrop preset's structure (2 global + 6 local crops, its scales) at a seventh of the size
TINY_MULTICROP = (
    "views=[{name: global, n: 2, size: 32, scale: [0.14, 1.0]}, {name: local, n: 6, size: 16, scale: [0.05, 0.14]}]"
)
# LARS at the recipes' rates (0.3, 0.6) without warm-up can blow a 8-channel network up in one step of batch 4
STABLE = ["train.lr=0.05", "train.mixed_precision=no"]
CASES = {
    "simclr_image_folder.yaml": [TINY_RESNET, "views=[{name: global, n: 2, size: 40}]", "data.num_workers=2", *STABLE],
    "swav_image_folder.yaml": [
        TINY_RESNET,
        TINY_MULTICROP,
        "objective.proj_dim=16",
        "objective.n_prototypes=24",
        *STABLE,
    ],
    "simclr_vit_image_folder.yaml": [TINY_VIT, TINY_MULTICROP],
}
SMALL = [
    "model.projector_hidden=32",
    "model.projector_out=16",
    "train.batch_size=4",
    "train.epochs=2",
    "train.max_steps=3",
    "train.progress_bar=false",
    "train.log_every=1",
    "eval.after_train=false",
    "monitor.every=0",
]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 training JPEGs of 40-90 px, no two of one size."""
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=6, sides=(40, 90))


def _losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _train(recipe: str, photos: Path, out: Path, *overrides: str) -> Path:
    cfg = config.load(
        RECIPES / recipe,
        [f"data.root={photos}", f"train.output_dir={out}", "data.num_workers=0", *SMALL, *overrides],
    )
    return engine.train(cfg)


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_photo_recipe_trains_and_exports(recipe: str, photos: Path, tmp_path: Path) -> None:
    full = config.load(RECIPES / recipe, [f"data.root={photos}"])
    assert full.data.view_backend == "batched" and full.train.warmup_steps == 0 and full.train.warmup_fraction >= 0
    run = _train(recipe, photos, tmp_path, *CASES[recipe])
    losses = _losses(run)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    encoder = load_encoder(run / "encoder").eval()
    cfg = config.load(run / "recipe.yaml")
    with torch.no_grad():  # every view size of the recipe goes through the reloaded encoder (ViT: local crops)
        for size in sorted({g.size for g in cfg.views}):
            assert encoder(torch.rand(2, 3, size, size)).shape[0] == 2


def test_views_in_the_main_process_train_like_views_in_workers(photos: Path, tmp_path: Path) -> None:
    recipe, tiny = "swav_image_folder.yaml", CASES["swav_image_folder.yaml"]
    in_workers = _train(recipe, photos, tmp_path / "a", *tiny, "train.max_steps=2")
    with pytest.warns(UserWarning, match="view_device=cuda without a GPU"):
        in_main = _train(
            recipe,
            photos,
            tmp_path / "b",
            *tiny,
            "train.max_steps=2",
            "data.view_device=cuda",
            "data.decode_device=cuda",
        )  # JPEGs decoded and views made in the main process: what a GPU run does, on the CPU here
    assert _losses(in_workers) == _losses(in_main)


def test_the_vit_recipe_backbone_takes_global_and_local_crops() -> None:
    from ssl_toolkit.model import build_encoder

    cfg = config.load(RECIPES / "simclr_vit_image_folder.yaml", ["data.root=/"])
    encoder = build_encoder(cfg.model.backbone, backbone_kwargs=dict(cfg.model.backbone_kwargs)).eval()
    with torch.no_grad():
        features = [encoder(torch.rand(1, 3, g.size, g.size)) for g in cfg.views]  # 224 and 96 px
    assert [f.shape for f in features] == [(1, 384), (1, 384)]
