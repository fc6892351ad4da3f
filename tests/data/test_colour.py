"""Batched colour adjustments and blur against torchvision's per-image functions (the reference)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data import colour


def _images(n: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 18, 22, generator=gen)
    x[0, :, :4] = 0.4  # grey pixels (zero chroma)
    x[1, 0, :, :5], x[1, 1, :, :5] = 0.9, 0.9  # ties between red and green maxima
    x[2] = x[2].round()  # saturated corners of the cube
    return x


@pytest.mark.parametrize(
    ("ours", "reference", "low", "high"),
    [
        (colour.adjust_brightness_, TF.adjust_brightness, 0.2, 1.8),
        (colour.adjust_contrast_, TF.adjust_contrast, 0.2, 1.8),
        (colour.adjust_saturation_, TF.adjust_saturation, 0.0, 1.8),
        (colour.adjust_hue_, TF.adjust_hue, -0.5, 0.5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_each_adjustment_matches_torchvision_per_image(ours, reference, low: float, high: float) -> None:
    x = _images()
    factors = torch.linspace(low, high, len(x))
    out = ours(x.clone(), factors)
    ref = torch.stack([reference(image, float(f)) for image, f in zip(x, factors)])
    assert torch.allclose(out, ref, atol=2e-6)


def test_jitter_order_and_greyscale_match_torchvision() -> None:
    x = _images(4)
    factors = {
        "brightness": torch.tensor([0.5, 1.3, 1.0, 0.9]),
        "contrast": torch.tensor([1.4, 0.6, 1.1, 1.0]),
        "saturation": torch.tensor([0.2, 1.7, 1.0, 0.8]),
        "hue": torch.tensor([0.1, -0.3, 0.45, 0.0]),
    }
    steps = {
        "brightness": TF.adjust_brightness,
        "contrast": TF.adjust_contrast,
        "saturation": TF.adjust_saturation,
        "hue": TF.adjust_hue,
    }
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        out = colour.colour_jitter_(x.clone(), factors, order)
        for b, image in enumerate(x):
            for k in order:
                name = colour.JITTER_OPS[k]
                image = steps[name](image, float(factors[name][b]))
            assert torch.allclose(out[b], image, atol=5e-6)
    partial = colour.colour_jitter_(x.clone(), {"brightness": factors["brightness"]}, [3, 0, 1, 2])
    assert torch.allclose(partial, colour.adjust_brightness_(x.clone(), factors["brightness"]))
    grey = colour.to_grey_(x.clone())
    assert torch.allclose(grey, torch.stack([TF.rgb_to_grayscale(image, 3) for image in x]), atol=1e-6)


def test_separable_blur_matches_torchvision_and_truncation_is_per_image() -> None:
    from ssl_toolkit.data.blur import gaussian_blur

    x = _images(4)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = gaussian_blur(x, sigma, 9)
    ref = torch.stack([TF.gaussian_blur(image, [9, 9], [float(s), float(s)]) for image, s in zip(x, sigma)])
    assert torch.allclose(out, ref, atol=1e-6)
    # cut at 2 sigma: each image's result is the same whatever the convolution width (its kernel ends earlier)
    narrow, wide = gaussian_blur(x, sigma, 5, truncate=2.0), gaussian_blur(x, sigma, 15, truncate=2.0)
    assert torch.allclose(narrow[:2], wide[:2], atol=1e-6)  # sigmas 0.1 and 0.7: 2 sigma fits in 5 taps
    assert not torch.allclose(narrow[3], wide[3], atol=1e-3)  # sigma 2: its 2-sigma kernel needs 9 taps
