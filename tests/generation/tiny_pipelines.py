"""Tiny random diffusers pipelines built from config and saved with ``save_pretrained``, for offline tests.

Every component is built from keyword arguments with random weights (no download, spec §3.4c), so the bank
writer can be driven end to end through the real ``from_pretrained(..., local_files_only=True)`` path on CPU
at 32x32 in a couple of denoising steps. Weights are seeded, so a folder is the same every time it is built.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

EMBED_DIM = 32  # CLIP projection size = UNet cross-attention size
SIDE = 32  # image side of the SD-family pipelines (latent 16 with the 2-block VAE)


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += list(string.ascii_lowercase) + [f"{c}</w>" for c in string.ascii_lowercase]
    (folder / "vocab.json").write_text(json.dumps({t: k for k, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=54, hidden_size=32, projection_dim=EMBED_DIM,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
    )  # fmt: skip
    return CLIPTextModel(cfg)


def _image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32, projection_dim=EMBED_DIM, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        image_size=SIDE, patch_size=4,
    )  # fmt: skip
    return CLIPVisionModelWithProjection(cfg)


def _feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size=SIDE, crop_size=SIDE)


def _unet(**extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=SIDE // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=EMBED_DIM, attention_head_dim=(2, 4), norm_num_groups=8, **extra,
    )  # fmt: skip


def _vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=SIDE,
    )  # fmt: skip


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def save_unclip(folder: Path) -> Path:
    """A StableUnCLIPImg2ImgPipeline folder (CLIP image embedding + sinusoidal noise level as class labels)."""
    from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=_feature_extractor(),
        image_encoder=_image_encoder(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=_tokenizer(folder / "_tok"),
        text_encoder=_text_encoder(),
        unet=_unet(class_embed_type="projection", projection_class_embeddings_input_dim=2 * EMBED_DIM),
        scheduler=_ddim(),
        vae=_vae(),
    )
    pipe.save_pretrained(folder)
    return folder


def save_variation(folder: Path) -> Path:
    """A StableDiffusionImageVariationPipeline folder without a safety checker."""
    from diffusers import StableDiffusionImageVariationPipeline

    pipe = StableDiffusionImageVariationPipeline(
        vae=_vae(), image_encoder=_image_encoder(), unet=_unet(), scheduler=_ddim(), safety_checker=None,
        feature_extractor=_feature_extractor(), requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def save_img2img(folder: Path) -> Path:
    """A StableDiffusionImg2ImgPipeline folder (text-conditioned SDEdit) without a safety checker."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(
        vae=_vae(), text_encoder=_text_encoder(), tokenizer=_tokenizer(folder / "_tok"), unet=_unet(),
        scheduler=_ddim(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def save_pixel(folder: Path, *, channels: int = 1, side: int = 16) -> Path:
    """A DDPMPipeline folder (pixel-space UNet2DModel + DDPMScheduler), greyscale by default like Fashion-MNIST."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=side, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder
