"""``ssl-toolkit list backbones`` lists only what works: every name is a timm model, and the first of each family
builds through the toolkit's encoder builder with the listed kwargs and takes views of two sizes."""

from __future__ import annotations

import pytest
import timm
import torch

import ssl_toolkit  # noqa: F401 - registers the small-input ResNets
from ssl_toolkit.cli_list import BACKBONES, list_backbones
from ssl_toolkit.model import build_encoder


def test_every_listed_backbone_is_a_timm_model() -> None:
    names = [name for family, *_ in BACKBONES for name in family]
    assert [n for n in names if not timm.is_model(n)] == []
    text = "\n".join(list_backbones())
    assert all(name in text for name in names)
    assert "backbone_kwargs {dynamic_img_size: true}" in text


@pytest.mark.parametrize(("family", "kwargs", "smallest"), [b[:3] for b in BACKBONES], ids=lambda v: str(v)[:24])
def test_first_of_each_family_builds_and_takes_two_view_sizes(family: tuple, kwargs: dict, smallest: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(family[0], backbone_kwargs=kwargs).eval()
    with torch.no_grad():  # a global view and a local view of the smallest listed side
        features = [encoder(torch.randn(2, 3, size, size)) for size in (2 * smallest, smallest)]
    assert features[0].shape == features[1].shape == (2, encoder.num_features)
    assert all(torch.isfinite(f).all() for f in features)


def test_a_kind_named_in_the_singular_lists_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    from ssl_toolkit import cli

    assert cli.main(["list", "backbones"]) == 0
    plural = capsys.readouterr().out
    assert cli.main(["list", "backbone"]) == 0
    assert capsys.readouterr().out == plural and "resnet10_small_input" in plural
