"""Generator adapters: one small class per kind behind one interface (``base.ViewGenerator``), in ``GENERATORS``.

The SD-family kinds wrap diffusers pipelines as they are, asking for ``output_type="np"`` so a NaN output
reaches validation instead of becoming a black PIL image: ``unclip`` (GenView; the source enters only
through its noised CLIP image embedding), ``variation`` (CLIP-image-conditioned SD) and ``img2img`` (SDEdit
in latent space). ``pixel_img2img`` and ``unconditional`` are in ``pixel.py``. An output the pipeline's own
safety checker flagged (it is blacked out) is reported as invalid rather than written.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.base import SCHEDULERS, Output, Sources, ViewGenerator
from ssl_toolkit.generation.pixel import PixelImg2ImgGenerator, UnconditionalGenerator
from ssl_toolkit.generation.settings import GenSettings

__all__ = ["GENERATORS", "SCHEDULERS", "ViewGenerator", "load_generator"]


class _SDGenerator(ViewGenerator):
    """Shared loading and calling of the diffusers SD-family pipelines."""

    def _load(self, diffusers: ModuleType) -> None:
        cls = getattr(diffusers, self.pipeline_class)
        pipe = cls.from_pretrained(str(self.model_path), local_files_only=True, torch_dtype=self.dtype)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.scheduler = pipe.scheduler

    @property
    def native_side(self) -> int:
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    def _call(self, generators: list[torch.Generator], **kwargs: Any) -> Output:
        self.pipe.scheduler = self.scheduler
        out = self.pipe(num_inference_steps=self.settings.steps, generator=list(generators), output_type="np", **kwargs)
        images = np.asarray(out.images, dtype=np.float32)
        flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(images)
        return images, ["flagged by the pipeline's safety checker" if f else None for f in flagged]


class UnCLIPGenerator(_SDGenerator):
    """GenView: Stable unCLIP image-to-image; the source enters only through its (noised) CLIP embedding."""

    kind = "unclip"
    pipeline_class = "StableUnCLIPImg2ImgPipeline"

    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        level = self.settings.noise_level if noise_level is None else noise_level
        if not isinstance(level, int):
            raise ConfigError("unclip needs an integer noise level per call (adaptive levels are set per batch)")
        return self._call(
            generators, image=list(sources), prompt=[self.settings.prompt or ""] * len(sources),
            guidance_scale=self.settings.guidance, noise_level=int(level),
        )  # fmt: skip


class VariationGenerator(_SDGenerator):
    """CLIP-image-conditioned SD variations (no prompt); the latents start from pure noise."""

    kind = "variation"
    pipeline_class = "StableDiffusionImageVariationPipeline"

    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        return self._call(generators, image=list(sources), guidance_scale=self.settings.guidance)


class Img2ImgGenerator(_SDGenerator):
    """SDEdit with a text-conditioned SD model: the source latent is re-noised by ``strength`` and denoised."""

    kind = "img2img"
    pipeline_class = "StableDiffusionImg2ImgPipeline"

    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        side = self.native_side
        images = [img.resize((side, side), Image.Resampling.BICUBIC) for img in sources]
        return self._call(
            generators, image=images, prompt=[self.settings.prompt or ""] * len(images),
            strength=self.settings.strength, guidance_scale=self.settings.guidance,
        )  # fmt: skip


GENERATORS: dict[str, type[ViewGenerator]] = {
    cls.kind: cls
    for cls in (UnCLIPGenerator, VariationGenerator, Img2ImgGenerator, PixelImg2ImgGenerator, UnconditionalGenerator)
}


def load_generator(
    settings: GenSettings,
    model_path: str | Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    scheduler: str = "auto",
) -> ViewGenerator:
    """Build the adapter of ``settings.kind`` from a local folder (offline; ConfigError on a bad folder)."""
    if settings.kind not in GENERATORS:
        raise ConfigError(f"unknown generator {settings.kind!r}; accepted: {', '.join(GENERATORS)}")
    return GENERATORS[settings.kind](settings, model_path, device=device, dtype=dtype, scheduler=scheduler)
