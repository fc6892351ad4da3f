"""Exported encoders: exact reload through timm and `load_encoder`, this run's preprocessing, safe files.

The encoder is trained for a few random SGD steps first, so that weights and BatchNorm running statistics
differ from their initial values: a reload that silently fell back to a fresh model would not match.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from torch import nn

import ssl_toolkit.export as export_module
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.export import export_encoder, load_encoder
from ssl_toolkit.model import build_encoder

BACKBONE = "resnet10t"
KWARGS = {"channels": [8, 16, 32, 64], "stem_width": 8}
SIZE = 16
MEAN = (0.2860, 0.2860, 0.2860)  # Fashion-MNIST statistics: clearly not ImageNet's
STD = (0.3530, 0.3530, 0.3530)


def _perturb(encoder: nn.Module, *, steps: int = 3, seed: int = 0) -> nn.Module:
    """A few SGD steps in train mode on random images: moves weights and BN running stats off their init."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(encoder.parameters(), lr=0.1, momentum=0.9)
    encoder.train()
    with torch.enable_grad():
        for _ in range(steps):
            x = torch.randn(8, 3, SIZE, SIZE, generator=g)
            loss = (encoder(x) - 1.0).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
    return encoder.eval()


def _export(encoder: nn.Module, out: Path, *, backbone: str = BACKBONE) -> Path:
    return export_encoder(
        encoder,
        out,
        backbone=backbone,
        backbone_kwargs=KWARGS,
        input_size=(SIZE, SIZE),
        mean=MEAN,
        std=STD,
        recipe_name="test_export",
        recipe_yaml="name: test_export\n",
    )


def _images(seed: int = 1) -> torch.Tensor:
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    encoder = _perturb(build_encoder(BACKBONE, backbone_kwargs=KWARGS))
    fresh = build_encoder(BACKBONE, backbone_kwargs=KWARGS)
    bn = encoder.bn1
    assert not torch.equal(bn.running_mean, fresh.bn1.running_mean)  # the steps really changed BN stats
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    return encoder


@pytest.fixture(scope="module")
def exported(trained: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(trained, tmp_path_factory.mktemp("export") / "encoder")


@torch.no_grad()
def test_timm_local_dir_reload_is_exact(trained: nn.Module, exported: Path) -> None:
    model = timm.create_model(f"local-dir:{exported}", pretrained=True, num_classes=0).eval()
    x = _images()
    assert torch.equal(model(x), trained(x))
    # A freshly initialised model of the same architecture must not match (the check can fail).
    assert not torch.equal(timm.create_model(BACKBONE, num_classes=0, **KWARGS).eval()(x), trained(x))


@torch.no_grad()
def test_load_encoder_is_exact_and_in_eval_mode(trained: nn.Module, exported: Path) -> None:
    model = load_encoder(exported)
    assert not model.training
    x = _images()
    assert torch.equal(model(x), trained(x))


def test_pretrained_cfg_describes_this_run(exported: Path) -> None:
    config = json.loads((exported / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert config["architecture"] == BACKBONE
    assert config["model_args"] == KWARGS
    assert cfg["input_size"] == [3, SIZE, SIZE]
    assert cfg["mean"] == pytest.approx(MEAN) and cfg["std"] == pytest.approx(STD)
    assert "hf_hub_id" not in cfg and "url" not in cfg
    assert tuple(cfg["mean"]) != pytest.approx(IMAGENET_DEFAULT_MEAN)
    # timm's own preprocessing resolution of the reloaded model sees this run's values, not ImageNet's.
    data_cfg = resolve_model_data_config(timm.create_model(f"local-dir:{exported}", pretrained=True, num_classes=0))
    assert tuple(data_cfg["input_size"]) == (3, SIZE, SIZE)
    assert data_cfg["mean"] == pytest.approx(MEAN) and data_cfg["std"] == pytest.approx(STD)
    assert tuple(data_cfg["std"]) != pytest.approx(IMAGENET_DEFAULT_STD)
    assert load_encoder(exported).pretrained_cfg["mean"] == pytest.approx(MEAN)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet10"])
@torch.no_grad()
def test_small_input_export_reloads_exactly(tmp_path: Path, backbone: str) -> None:
    # resnet10t has a deep (Sequential) stem, so the small-input variant needs a plain 7x7-stem ResNet.
    torch.manual_seed(1)
    encoder = _perturb(build_encoder(backbone, small_input=True, backbone_kwargs=KWARGS))
    assert len(encoder.layer1) == (1 if backbone == "resnet10" else 2)
    out = _export(encoder, tmp_path / "small", backbone=backbone)
    assert json.loads((out / "config.json").read_text())["architecture"] == f"{backbone}_small_input"
    x = _images()
    for model in (load_encoder(out), timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()):
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert isinstance(model.maxpool, nn.Identity)
        assert torch.equal(model(x), encoder(x))


def test_small_input_is_refused_for_other_backbones() -> None:
    with pytest.raises(ConfigError, match="available for resnet10, resnet18, resnet34, resnet50"):
        build_encoder("resnet10t", small_input=True)


def test_not_an_export_folder_is_config_error(tmp_path: Path, exported: Path) -> None:
    with pytest.raises(ConfigError, match="not an exported encoder"):
        load_encoder(tmp_path)
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text((exported / "config.json").read_text())
    with pytest.raises(ConfigError, match="model.safetensors"):
        load_encoder(only_config)
    with pytest.raises(ConfigError):
        load_encoder(tmp_path / "missing")


def test_export_writes_no_pickle(exported: Path) -> None:
    files = sorted(p.name for p in exported.rglob("*"))
    assert files == ["config.json", "model.safetensors", "recipe.yaml"]
    weights = (exported / "model.safetensors").read_bytes()
    assert not weights.startswith(b"PK") and not weights.startswith(b"\x80")  # torch.save zip / raw pickle


@torch.no_grad()
def test_reexport_replaces_folder_without_leftovers(tmp_path: Path) -> None:
    first = _perturb(build_encoder(BACKBONE, backbone_kwargs=KWARGS), seed=2)
    second = _perturb(build_encoder(BACKBONE, backbone_kwargs=KWARGS), seed=3)
    out = _export(first, tmp_path / "encoder")
    (out / "stale.txt").write_text("from the first export")
    assert _export(second, tmp_path / "encoder") == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # no temp or "-old" folders
    assert not (out / "stale.txt").exists()
    x = _images()
    assert torch.equal(load_encoder(out)(x), second(x))
    assert not torch.equal(load_encoder(out)(x), first(x))


@torch.no_grad()
def test_failed_reexport_keeps_old_export_and_cleans_up(
    tmp_path: Path, trained: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _export(trained, tmp_path / "encoder")

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _export(trained, tmp_path / "encoder")
    x = _images()
    assert torch.equal(load_encoder(out)(x), trained(x))  # the previous export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]


@torch.no_grad()
def test_stride_two_small_input_stem_exports_through_model_args(tmp_path: Path) -> None:
    kwargs = {**KWARGS, "stem_stride": 2}
    encoder = _perturb(build_encoder("resnet18", small_input=True, backbone_kwargs=kwargs))
    assert encoder.conv1.stride == (2, 2)
    out = export_encoder(
        encoder,
        tmp_path / "s2",
        backbone="resnet18",
        backbone_kwargs=kwargs,
        input_size=(SIZE, SIZE),
        mean=MEAN,
        std=STD,
        recipe_name="s2",
    )
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
    x = _images()
    assert reloaded.conv1.stride == (2, 2) and torch.equal(reloaded(x), encoder(x))
