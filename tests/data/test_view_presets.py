"""Named multi-crop presets: the view shapes of the reference (SwAV 2x224 + 6x96, CIFAR-like 2x32 + 6x18)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_toolkit import builders, config
from ssl_toolkit.errors import ConfigError
from tests.conftest import reference
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"


@pytest.mark.parametrize(
    "preset, key", [("multicrop", "swav_default_view_shapes"), ("multicrop_small", "cifar_like_view_shapes")]
)
def test_presets_give_the_reference_view_shapes(tmp_path: Path, preset: str, key: str) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2, size=40)
    cfg = config.load(TINY, [f"data.root={data}", f"views={preset}"])
    train = builders.build_train_data(cfg)
    batch = train.collate_fn([train.dataset[i] for i in range(2)])
    assert [list(v.shape[1:]) for v in batch.views] == reference("views_eval_reference.json")["multicrop"][key]
    assert train.n_global == 2 and train.view_kinds == ("global",) * 2 + ("local",) * 6
    assert torch.equal(batch.ids, torch.tensor([0, 1]))


def test_unknown_preset_lists_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multicrop_28"):
        config.load(TINY, [f"data.root={tmp_path}", "views=fancy"])
