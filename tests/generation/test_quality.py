"""GenView quality-driven weights (spec section 3.2, reference JSON key ``genview``).

The reference inputs are reproduced exactly with ``g = torch.Generator().manual_seed(7)`` and float64
``torch.randn(..., generator=g)`` calls in the recipe's order: tok1 (6, 49, 32), then the noise of tok2, then v.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import save_for_hf

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.foreground import fit_foreground_pca_from_images, save_foreground_pca
from ssl_toolkit.generation.quality import (
    QualityWeighter,
    foreground_softmask,
    pool_tokens,
    quality_scores,
    quality_weights,
)
from tests.conftest import reference

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _reference_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    tok1 = torch.randn(6, 49, 32, generator=g, dtype=torch.float64)
    tok2 = tok1 + 0.5 * torch.randn(6, 49, 32, generator=g, dtype=torch.float64)
    v = torch.randn(32, generator=g, dtype=torch.float64)
    return tok1, tok2, v


def test_scores_and_weights_match_reference() -> None:
    ref = reference("views_eval_reference.json")["genview"]
    tok1, tok2, v = _reference_inputs()
    s_fg, s_bg = quality_scores(tok1, tok2, v)
    torch.testing.assert_close(s_fg, torch.tensor(ref["s_fg"], dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(s_bg, torch.tensor(ref["s_bg"], dtype=torch.float64), rtol=0, atol=1e-8)
    tok1.requires_grad_(True)
    w = quality_weights(tok1, tok2, v, gamma=1.0)
    torch.testing.assert_close(w, torch.tensor(ref["weights"], dtype=torch.float64), rtol=0, atol=1e-8)
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-12)
    assert not w.requires_grad and w.grad_fn is None


def test_masks_and_pooling_match_a_per_token_loop() -> None:
    tok1, _, v = _reference_inputs()
    fg, bg = foreground_softmask(tok1, v)
    for b in range(tok1.shape[0]):
        proj = [float(sum(float(tok1[b, n, c]) * float(v[c]) for c in range(32))) for n in range(49)]
        lo, hi = min(proj), max(proj)
        m = [(p - lo) / (hi - lo + 1e-7) for p in proj]
        sum_fg, sum_bg = sum(m) + 1e-7, sum(1 - x for x in m) + 1e-7
        expect_fg = torch.tensor([x / sum_fg for x in m], dtype=torch.float64)
        expect_bg = torch.tensor([(1 - x) / sum_bg for x in m], dtype=torch.float64)
        torch.testing.assert_close(fg[b], expect_fg, rtol=0, atol=1e-12)
        torch.testing.assert_close(bg[b], expect_bg, rtol=0, atol=1e-12)
        pooled = sum(expect_fg[n] * tok1[b, n] for n in range(49))
        torch.testing.assert_close(pool_tokens(tok1, fg)[b], pooled, rtol=0, atol=1e-12)


def test_weights_properties() -> None:
    tok1, tok2, v = _reference_inputs()
    torch.testing.assert_close(quality_weights(tok1, tok1.clone(), v), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(quality_weights(tok1, tok2, v, gamma=0.0), torch.ones(6, dtype=torch.float64))
    # a sharper gamma spreads the weights but keeps mean 1
    w1, w5 = quality_weights(tok1, tok2, v, gamma=1.0), quality_weights(tok1, tok2, v, gamma=5.0)
    assert float(w5.std()) > float(w1.std()) and float(w5.mean()) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        quality_weights(tok1, tok2[:, :10], v)
    with pytest.raises(ConfigError, match="same feature model"):
        quality_weights(tok1, tok2, v[:8])


# --- QualityWeighter through the real loading code -------------------------------------------------------------


def _pixels(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _normalise(pixels: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_vit_weighter_weights(vit_weighter_files) -> None:
    folder, pca = vit_weighter_files
    weighter = QualityWeighter(folder, pca)
    a, b = _pixels(5, 40, seed=10), _pixels(5, 40, seed=11)
    w = weighter(
        _normalise(a, IMAGENET_MEAN, IMAGENET_STD),
        _normalise(b, IMAGENET_MEAN, IMAGENET_STD),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    assert w.shape == (5,) and w.dtype == torch.float32
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6)
    assert not w.requires_grad

    # the same as the functional core on tokens computed by hand: un-normalise, resize, CLIP statistics
    def tokens(p: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(p, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            return weighter.feature_model.forward_features(_normalise(x, CLIP_MEAN, CLIP_STD))[:, 1:]

    torch.testing.assert_close(w, quality_weights(tokens(a), tokens(b), weighter.vector), rtol=0, atol=1e-5)

    # identical views: s_fg = s_bg = 1 for every sample, so all weights are 1
    same = _normalise(a, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(weighter(same, same.clone(), mean=IMAGENET_MEAN, std=IMAGENET_STD), torch.ones(5))


def test_weighter_ignores_the_dataset_normalisation(vit_weighter_files) -> None:
    folder, pca = vit_weighter_files
    weighter = QualityWeighter(folder, pca)
    a, b = _pixels(4, 32, seed=20), _pixels(4, 32, seed=21)
    other_mean, other_std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    w1 = weighter(
        _normalise(a, IMAGENET_MEAN, IMAGENET_STD),
        _normalise(b, IMAGENET_MEAN, IMAGENET_STD),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    w2 = weighter(
        _normalise(a, other_mean, other_std),
        _normalise(b, other_mean, other_std),
        mean=torch.tensor(other_mean),
        std=torch.tensor(other_std),
    )
    torch.testing.assert_close(w1, w2, rtol=0, atol=1e-5)


def test_weighter_is_frozen_stays_in_eval_and_stays_out_of_state_dicts(vit_weighter_files) -> None:
    folder, pca = vit_weighter_files
    weighter = QualityWeighter(folder, pca, gamma=2.0)
    assert list(weighter.parameters()) == [] and weighter.state_dict() == {}
    assert not any(p.requires_grad for p in weighter.feature_model.parameters())
    host = torch.nn.Module()
    host.head = torch.nn.Linear(2, 2)
    host.weighter = weighter
    host.train()
    assert not weighter.training and not weighter.feature_model.training
    assert set(host.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(host.parameters())) == 2
    # .to() reaches the hidden feature model
    weighter.to(torch.float64)
    assert next(weighter.feature_model.parameters()).dtype == torch.float64
    x = _normalise(_pixels(3, 32, seed=30), IMAGENET_MEAN, IMAGENET_STD)
    y = _normalise(_pixels(3, 32, seed=31), IMAGENET_MEAN, IMAGENET_STD)
    assert float(weighter(x, y, mean=IMAGENET_MEAN, std=IMAGENET_STD).mean()) == pytest.approx(1.0, abs=1e-6)


def test_weighter_input_errors(vit_weighter_files) -> None:
    folder, pca = vit_weighter_files
    weighter = QualityWeighter(folder, pca)
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ConfigError, match="equal shape"):
        weighter(x, x[:1], mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(ConfigError, match="3 values"):
        weighter(x, x, mean=(0.5, 0.5), std=IMAGENET_STD)
    with pytest.raises(ConfigError, match="positive"):
        weighter(x, x, mean=IMAGENET_MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="gamma"):
        QualityWeighter(folder, pca, gamma=float("nan"))
    with pytest.raises(ConfigError, match="does not exist"):
        QualityWeighter(folder, folder / "missing.safetensors")


def test_cnn_weighter(tmp_path) -> None:
    torch.manual_seed(2)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    save_for_hf(model, tmp_path / "cnn", safe_serialization=True)
    images = (_pixels(6, 64, seed=40) * 255).to(torch.uint8)
    pca = fit_foreground_pca_from_images(tmp_path / "cnn", images, image_size=96)  # 3x3 feature map
    path = save_foreground_pca(tmp_path / "cnn_pca.safetensors", pca)
    weighter = QualityWeighter(tmp_path / "cnn", path, image_size=96)
    a = _normalise(_pixels(4, 48, seed=41), IMAGENET_MEAN, IMAGENET_STD)
    b = _normalise(_pixels(4, 48, seed=42), IMAGENET_MEAN, IMAGENET_STD)
    w = weighter(a, b, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert w.shape == (4,) and not w.requires_grad
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(weighter(a, a, mean=IMAGENET_MEAN, std=IMAGENET_STD), torch.ones(4))
    weighter.train(True)
    assert not weighter.training and not weighter.feature_model.training


def test_fit_foreground_pca_command_matches_the_function(vit_weighter_files, tmp_path, capsys) -> None:
    """The CLI fits on decoded source images exactly what the library function fits on the same pixels."""
    import numpy as np
    from PIL import Image

    from ssl_toolkit import cli
    from ssl_toolkit.generation.foreground import fit_foreground_pca_from_images, load_foreground_pca

    folder, _ = vit_weighter_files
    root = tmp_path / "images"
    pixels = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for k, array in enumerate(pixels):
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / f"c{k % 2}" / f"{k}.png")
    out = tmp_path / "pca.safetensors"
    code = cli.main(["fit-foreground-pca", "--model", str(folder), "--out", str(out), "--source", "image_folder",
                     "--root", str(root), "--batch-size", "4", "--device", "cpu"])  # fmt: skip
    assert code == 0 and "on 6 images" in capsys.readouterr().out
    order = [0, 2, 4, 1, 3, 5]  # ImageFolder lists c0/ then c1/
    expected = fit_foreground_pca_from_images(folder, torch.from_numpy(pixels[order]).permute(0, 3, 1, 2))
    got = load_foreground_pca(out)
    assert torch.allclose(got.vector, expected.vector.to(got.vector.dtype), atol=1e-6)
    assert got.alpha == pytest.approx(expected.alpha, rel=1e-6)
    assert cli.main(["fit-foreground-pca", "--model", str(tmp_path / "nope"), "--out", str(out),
                     "--source", "image_folder", "--root", str(root)]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
