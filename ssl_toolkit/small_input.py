"""Small-input ResNets (3x3 stride-1 stem, no max-pool) registered as timm models.

timm's ResNet has no keyword for the CIFAR-style stem, so these variants subclass it and are registered
under ``<name>_small_input`` (``resnet10_small_input``, ``resnet18_small_input``, ``resnet34_small_input``,
``resnet50_small_input``) when ssl_toolkit is imported; ``resnet10`` (one basic block per stage, timm's
ResNet-18 otherwise) exists only in this form, timm's own ``resnet10t`` having a deep stem. An export of
such an encoder names that architecture, so after ``import ssl_toolkit`` it reloads with
``timm.create_model("local-dir:<dir>", pretrained=True, num_classes=0)`` like any other timm model.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models._registry import generate_default_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

SUFFIX = "_small_input"


class SmallInputResNet(ResNet):
    """A timm ResNet whose stem is one 3x3 convolution with no max-pool.

    Args:
        stem_stride: stride of the stem convolution: 1 (the CIFAR stem, full resolution) or 2 (half
            resolution after the stem: 14x14 for 28 px images instead of the standard stem's 7x7, at about
            a quarter of the stride-1 cost).
        *args, **kwargs: `timm.models.resnet.ResNet` arguments.
    """

    def __init__(self, *args: Any, stem_stride: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.conv1, nn.Conv2d):
            raise ValueError("the small-input stem needs the plain stem (stem_type=''), not a deep stem")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        out = self.conv1.out_channels
        self.conv1 = nn.Conv2d(self.conv1.in_channels, out, 3, stride=stem_stride, padding=1, bias=False)
        self.maxpool = nn.Identity()


def _cfg() -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "conv1",
        "classifier": "fc",
    }


default_cfgs = generate_default_cfgs({f"resnet{d}{SUFFIX}": _cfg() for d in (10, 18, 34, 50)})


def _create(variant: str, pretrained: bool, block: type, layers: tuple[int, ...], **kwargs: Any) -> ResNet:
    return build_model_with_cfg(SmallInputResNet, variant, pretrained, block=block, layers=layers, **kwargs)


@register_model
def resnet10_small_input(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-10: ResNet-18 with one basic block per stage, 3x3 stride-1 stem, no max-pool (32 px images)."""
    return _create("resnet10_small_input", pretrained, BasicBlock, (1, 1, 1, 1), **kwargs)


@register_model
def resnet18_small_input(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the 3x3 stride-1 stem and no max-pool (32 px images)."""
    return _create("resnet18_small_input", pretrained, BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34_small_input(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with the 3x3 stride-1 stem and no max-pool (32 px images)."""
    return _create("resnet34_small_input", pretrained, BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50_small_input(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with the 3x3 stride-1 stem and no max-pool (32 px images)."""
    return _create("resnet50_small_input", pretrained, Bottleneck, (3, 4, 6, 3), **kwargs)
