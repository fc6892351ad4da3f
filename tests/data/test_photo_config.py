"""Recipe keys of the photo pipeline: data.view_device, data.decode_device, data.max_pixels, train.warmup_fraction."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssl_toolkit import config
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.schedule import warmup_steps_for

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tests" / "tiny.yaml"


def _load(tmp_path: Path, *overrides: str):
    return config.load(TINY, [f"data.root={tmp_path}", *overrides])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.view_device=gpu"], "unknown data.view_device 'gpu'.*accepted: cpu, cuda"),
        (["data.view_device=cuda"], "data.view_device=cuda needs data.view_backend=batched"),
        (["data.view_backend=batched", "data.decode_device=cuda"], "decode_device=cuda needs data.view_device=cuda"),
        (["data.decode_device=tpu"], "unknown data.decode_device"),
        (["data.max_pixels=0"], "data.max_pixels must be a finite number >= 1"),
        (["train.warmup_fraction=1.5"], r"warmup_fraction must be in \[0, 1\)"),
        (["train.warmup_fraction=0.1", "train.warmup_steps=5"], "give one of them"),
        (["train.warmup_steps=-1"], "warmup_steps must be a finite number >= 0"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, *overrides)


def test_defaults_and_accepted_values(tmp_path: Path) -> None:
    cfg = _load(tmp_path)
    assert (cfg.data.view_device, cfg.data.decode_device, cfg.data.max_pixels) == ("cpu", "cpu", 64_000_000)
    cfg = _load(tmp_path, "data.view_backend=batched", "data.view_device=cuda", "data.decode_device=cuda")
    assert cfg.data.decode_device == "cuda"


def test_a_warmup_fraction_replaces_the_warmup_steps(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "train.warmup_fraction=0.25")  # tiny.yaml says warmup_steps: 2; the override wins
    assert cfg.train.warmup_steps == 0 and warmup_steps_for(cfg.train, 40) == 10
    saved = tmp_path / "recipe.yaml"
    config.save_resolved(cfg, saved)
    assert config.load(saved).train.warmup_fraction == 0.25  # the saved recipe (steps 0 + fraction) reloads
    recipe = tmp_path / "fraction.yaml"
    raw = OmegaConf.load(TINY)
    raw.train.pop("warmup_steps")
    raw.train.warmup_fraction = 0.5
    OmegaConf.save(raw, recipe)
    assert config.load(recipe, [f"data.root={tmp_path}"]).train.warmup_steps == 0
    steps = config.load(recipe, [f"data.root={tmp_path}", "train.warmup_steps=5"]).train  # the override wins
    assert (steps.warmup_steps, steps.warmup_fraction) == (5, None)


def test_a_warmup_as_long_as_the_run_is_a_warning(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "train.warmup_steps=50")
    with pytest.warns(UserWarning, match=r"warm-up \(50 steps\) is not shorter than the run \(20 steps\)"):
        assert warmup_steps_for(cfg.train, 20) == 50
