"""Foreground ratio, PCA fit and GenView noise levels (spec section 3.1, reference JSON key ``genview``)."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch
from timm.models import save_for_hf

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.foreground import (
    SIGN_RULE,
    ClipPcaScorer,
    ForegroundPCA,
    ForegroundScorer,
    SaliencyScorer,
    build_scorer,
    fit_foreground_pca,
    fit_foreground_pca_from_images,
    load_foreground_pca,
    noise_level_from_fg_ratio,
    save_foreground_pca,
)
from ssl_toolkit.generation.timm_local import TokenEncoder, load_timm_model
from tests.conftest import reference

# A CLIP-flavoured ViT small enough for CPU tests: the ``.openai`` tag carries the CLIP mean/std.
VIT_ARCH = "vit_base_patch16_clip_224.openai"
VIT_KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory):
    """A random tiny ViT exported by timm (config.json + model.safetensors), plus the same weights as one file."""
    torch.manual_seed(0)
    model = timm.create_model(VIT_ARCH, pretrained=False, num_classes=0, **VIT_KWARGS)
    folder = tmp_path_factory.mktemp("vit")
    save_for_hf(model, folder, safe_serialization=True)
    safetensors.torch.save_file(model.state_dict(), str(folder.parent / "vit_weights.safetensors"))
    return folder


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


# --- noise level -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_noise_level_matches_reference_bins(dtype: torch.dtype) -> None:
    table = reference("views_eval_reference.json")["genview"]["fg_ratio_to_noise_level"]
    ratios = torch.tensor([float(k) for k in table], dtype=dtype)
    levels = noise_level_from_fg_ratio(ratios)
    assert levels.dtype == torch.int64
    assert levels.tolist() == list(table.values())
    # one at a time too, as Python floats
    assert [int(noise_level_from_fg_ratio(float(k))) for k in table] == list(table.values())


def test_noise_level_shape_and_custom_bins() -> None:
    r = torch.tensor([[0.0, 0.5], [0.9, 0.3]])
    assert noise_level_from_fg_ratio(r).tolist() == [[0, 200], [400, 100]]
    assert noise_level_from_fg_ratio(0.2).shape == ()
    assert noise_level_from_fg_ratio([0.5, 0.51], bins=(0.0, 0.5, 1.0), levels=(10, 20)).tolist() == [10, 20]


@pytest.mark.parametrize("bad", [-0.01, 1.0001, float("nan"), float("inf")])
def test_noise_level_rejects_bad_ratios(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        noise_level_from_fg_ratio(torch.tensor([0.5, bad]))


@pytest.mark.parametrize(
    ("bins", "levels"),
    [((0.0, 0.5, 1.0), (0, 1, 2)), ((0.0, 0.6, 0.5, 1.0), (0, 1, 2)), ((0.1, 0.5, 1.0), (0, 1)), ((0.0, 0.9), (0,))],
)
def test_noise_level_rejects_bad_bins(bins: tuple, levels: tuple) -> None:
    with pytest.raises(ConfigError):
        noise_level_from_fg_ratio(0.5, bins=bins, levels=levels)


# --- saliency fallback -----------------------------------------------------------------------------------------


def _textured_square(side: int, canvas: int = 96, seed: int = 0) -> torch.Tensor:
    """A bright textured square centred on a flat dark canvas, uint8 (3, canvas, canvas)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((3, canvas, canvas), 20, dtype=torch.uint8)
    lo = (canvas - side) // 2
    img[:, lo : lo + side, lo : lo + side] = torch.randint(100, 256, (1, side, side), generator=g, dtype=torch.uint8)
    return img


def test_saliency_ratio_grows_with_object_area() -> None:
    scorer = SaliencyScorer()
    batch = torch.stack([_textured_square(s) for s in (8, 16, 24, 32)])
    ratios = scorer(batch)
    assert ratios.dtype == torch.float32 and ratios.shape == (4,)
    assert bool(((ratios >= 0) & (ratios <= 1 / 3)).all())  # the 3 x mean rule bounds the ratio by 1/3
    assert bool((ratios[1:] > ratios[:-1]).all()), ratios.tolist()


def test_saliency_batch_matches_single_images_and_flat_is_zero() -> None:
    scorer = SaliencyScorer()
    batch = torch.stack(
        [_textured_square(s, seed=s) for s in (12, 40, 20)] + [torch.full((3, 96, 96), 90, dtype=torch.uint8)]
    )
    together = scorer(batch)
    alone = torch.cat([scorer(img[None]) for img in batch])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    assert together[-1] == 0


def test_saliency_rejects_float_images_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="uint8"):
        SaliencyScorer()(torch.rand(2, 3, 32, 32))
    with pytest.raises(ConfigError):
        SaliencyScorer(threshold_factor=0)
    with pytest.raises(ConfigError):
        SaliencyScorer(size=4)


# --- PCA fit ---------------------------------------------------------------------------------------------------


def _planted_tokens(sign: float, n_img: int = 24, grid: int = 6, channels: int = 16, seed: int = 0):
    """Tokens with most variance along a planted unit direction u; the centre of the grid sits at +sign on u."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(channels, generator=g, dtype=torch.float64)
    u = u / u.norm()
    rows = torch.arange(grid).view(-1, 1).expand(grid, grid)
    cols = torch.arange(grid).view(1, -1).expand(grid, grid)
    central = (((rows - (grid - 1) / 2).abs() < grid / 4) & ((cols - (grid - 1) / 2).abs() < grid / 4)).reshape(-1)
    amp = torch.randn(n_img, grid * grid, generator=g, dtype=torch.float64) * 2.0 - 1.0
    amp[:, central] += 4.0
    tokens = amp.unsqueeze(-1) * u * sign + 0.1 * torch.randn(
        n_img, grid * grid, channels, generator=g, dtype=torch.float64
    )
    return tokens + 3.0, u  # an offset: the covariance is centred, projections are not


def test_fit_recovers_planted_direction_and_fraction() -> None:
    tokens, u = _planted_tokens(+1.0)
    pca = fit_foreground_pca(tokens, fg_fraction=0.4, model_name="synthetic")
    cos = float(pca.vector @ u) / float(pca.vector.norm())
    assert cos > 0.99  # |cos| > 0.99 and the sign rule put the centre on the positive side
    frac = float((pca.project(tokens) > pca.alpha).double().mean())
    assert abs(frac - 0.4) <= 1.0 / tokens[..., 0].numel()
    torch.testing.assert_close(pca.mean, tokens.reshape(-1, tokens.shape[-1]).mean(0))
    assert pca.sign_rule == SIGN_RULE and pca.model_name == "synthetic"


def test_sign_rule_follows_the_centre() -> None:
    up, u = _planted_tokens(+1.0, seed=3)
    down, _ = _planted_tokens(-1.0, seed=3)
    assert float(fit_foreground_pca(up).vector @ u) > 0
    assert float(fit_foreground_pca(down).vector @ u) < 0
    # foreground (> alpha) is the centre in both cases
    for tokens in (up, down):
        pca = fit_foreground_pca(tokens)
        fg = pca.foreground(tokens).double().mean(0).reshape(6, 6)
        assert fg[2:4, 2:4].mean() > fg[0].mean()


def test_fit_rejects_bad_inputs() -> None:
    tokens, _ = _planted_tokens(1.0)
    with pytest.raises(ConfigError, match="fg_fraction"):
        fit_foreground_pca(tokens, fg_fraction=1.0)
    with pytest.raises(ConfigError, match="grid"):
        fit_foreground_pca(tokens[:, :35])  # 35 tokens: no square grid
    with pytest.raises(ConfigError, match="3x3"):
        fit_foreground_pca(tokens[:, :4])
    with pytest.raises(ConfigError):
        fit_foreground_pca(tokens[0])


def test_pca_file_round_trip(tmp_path) -> None:
    tokens, _ = _planted_tokens(1.0)
    pca = fit_foreground_pca(tokens, fg_fraction=0.35, model_name="m.tag")
    path = save_foreground_pca(tmp_path / "sub" / "pca.safetensors", pca)
    back = load_foreground_pca(path)
    torch.testing.assert_close(back.vector, pca.vector, rtol=0, atol=0)
    torch.testing.assert_close(back.mean, pca.mean, rtol=0, atol=0)
    assert (back.alpha, back.fg_fraction, back.model_name, back.sign_rule) == (pca.alpha, 0.35, "m.tag", SIGN_RULE)


def test_pca_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_foreground_pca(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError):
        load_foreground_pca(tmp_path / "junk.safetensors")
    safetensors.torch.save_file({"vector": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="save_foreground_pca"):
        load_foreground_pca(tmp_path / "other.safetensors")


# --- CLIP+PCA scorer through the real loading code -------------------------------------------------------------


def test_clip_pca_scorer_end_to_end(vit_dir, tmp_path) -> None:
    images = _images(12)
    pca = fit_foreground_pca_from_images(vit_dir, images, fg_fraction=0.4, batch_size=5)
    assert pca.vector.shape == (32,) and pca.model_name == VIT_ARCH
    # the same fit from a list of batches (read twice)
    again = fit_foreground_pca_from_images(vit_dir, [images[:7], images[7:]], fg_fraction=0.4)
    torch.testing.assert_close(again.vector, pca.vector)
    path = save_foreground_pca(tmp_path / "pca.safetensors", pca)

    scorer = ClipPcaScorer(vit_dir, pca_path=path)
    assert isinstance(scorer, ForegroundScorer)
    assert scorer.encoder.input.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # CLIP statistics
    ratios = scorer(images)
    assert ratios.shape == (12,) and ratios.dtype == torch.float32
    assert bool(((ratios >= 0) & (ratios <= 1)).all())
    # alpha is the 0.6 quantile of these very tokens: 40 % of the 12 x 16 tokens are foreground
    assert float(ratios.mean()) == pytest.approx(0.4, abs=1 / 192)
    # larger inputs are resized to the model's 32 px
    assert scorer(_images(2, size=57)).shape == (2,)

    # a weights file plus arch loads the same model
    file_scorer = build_scorer(
        "clip_pca",
        model_path=vit_dir.parent / "vit_weights.safetensors",
        arch=VIT_ARCH,
        model_kwargs=VIT_KWARGS,
        pca_path=path,
    )
    torch.testing.assert_close(file_scorer(images), ratios)


def test_clip_pca_scorer_rejects_pca_of_another_width(vit_dir, tmp_path) -> None:
    pca = ForegroundPCA(
        vector=torch.ones(8, dtype=torch.float64), mean=torch.zeros(8, dtype=torch.float64), alpha=0.0, fg_fraction=0.4
    )
    path = save_foreground_pca(tmp_path / "pca8.safetensors", pca)
    with pytest.raises(ConfigError, match="fit the PCA on this model"):
        ClipPcaScorer(vit_dir, pca_path=path)(_images(1))


def test_fit_from_images_rejects_one_shot_iterables(vit_dir) -> None:
    with pytest.raises(ConfigError, match="twice"):
        fit_foreground_pca_from_images(vit_dir, (b for b in [_images(2)]))


def test_model_loading_errors(vit_dir, tmp_path) -> None:
    weights = vit_dir.parent / "vit_weights.safetensors"
    with pytest.raises(ConfigError, match="does not exist"):
        load_timm_model(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="config.json"):
        load_timm_model(tmp_path)
    with pytest.raises(ConfigError, match="arch"):
        load_timm_model(weights)
    with pytest.raises(ConfigError, match="not a timm model"):
        load_timm_model(weights, arch="no_such_net_224")
    with pytest.raises(ConfigError, match="drop arch"):
        load_timm_model(vit_dir, arch=VIT_ARCH)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ConfigError, match="suffix"):
        load_timm_model(tmp_path / "w.txt")
    with pytest.raises(ConfigError, match="could not load"):  # weights of another shape
        load_timm_model(weights, arch=VIT_ARCH, model_kwargs={**VIT_KWARGS, "embed_dim": 64})


def test_loaded_model_is_frozen_and_cnn_maps_become_tokens(tmp_path) -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    save_for_hf(model, tmp_path, safe_serialization=True)
    encoder = TokenEncoder(tmp_path, image_size=96)
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    tokens, grid = encoder.encode_uint8(_images(2, size=40))
    assert grid == (3, 3) and tokens.shape == (2, 9, model.num_features)
    with torch.no_grad():
        fmap = model.eval().forward_features(
            (
                torch.nn.functional.interpolate(
                    _images(2, size=40).float() / 255, size=(96, 96), mode="bilinear", antialias=True
                )
                - 0.5
            )
            / 0.5
        )
    torch.testing.assert_close(tokens, fmap.flatten(2).transpose(1, 2))


def test_build_scorer_registry() -> None:
    scorer = build_scorer("saliency", threshold_factor=2.0)
    assert isinstance(scorer, SaliencyScorer) and scorer.threshold_factor == 2.0
    with pytest.raises(ConfigError, match="clip_pca"):
        build_scorer("nope")
    with pytest.raises(ConfigError, match="accepts"):
        build_scorer("saliency", thresold=2.0)
