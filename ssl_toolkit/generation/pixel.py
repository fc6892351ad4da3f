"""Pixel-space diffusion with a ``UNet2DModel`` folder: SDEdit from a source image, or unconditional samples.

Hand-written because diffusers has no img2img pipeline for a pixel-space ``UNet2DModel`` (the small models
that run on a CPU, e.g. one trained on Fashion-MNIST): the source is noised with ``scheduler.add_noise`` to
step index ``steps - int(steps * strength)`` (as diffusers' SD img2img does in latent space) and denoised
from there with the folder's scheduler. ``unconditional`` runs the same loop from pure noise (AdaInf-style
inflation). Greyscale models (1 channel) get greyscale sources and give greyscale RGB images.
"""

from __future__ import annotations

import json
from types import ModuleType

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssl_toolkit.generation.base import Output, Sources, ViewGenerator


def _randn(
    shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """One draw per generator (item), on the generator's device, stacked and moved to ``device``."""
    draws = [torch.randn((1, *shape), generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return torch.cat(draws).to(device=device, dtype=dtype)


class PixelImg2ImgGenerator(ViewGenerator):
    """SDEdit with a pixel-space UNet2DModel: noise the source to step ``steps - int(steps*strength)``, denoise."""

    kind = "pixel_img2img"
    pipeline_class = "UNet2DModel"
    pixel = True

    def _load(self, diffusers: ModuleType) -> None:
        unet = diffusers.UNet2DModel.from_pretrained(
            str(self.model_path), subfolder="unet", local_files_only=True, torch_dtype=self.dtype
        )
        self.unet = unet.to(self.device).eval()
        config = json.loads((self.model_path / "scheduler" / "scheduler_config.json").read_text())
        name = config.get("_class_name", "DDPMScheduler")
        if not hasattr(diffusers, name):
            raise ValueError(f"scheduler class {name!r} is not in diffusers {diffusers.__version__}")
        self.scheduler = getattr(diffusers, name).from_config(config)
        self.channels = int(self.unet.config.in_channels)
        if self.channels not in (1, 3):
            raise ValueError(f"pixel UNet with {self.channels} input channels; 1 (grey) or 3 (RGB) are supported")
        size = self.unet.config.sample_size
        self.side = int(size if isinstance(size, int) else size[0])

    def default_size(self, source_size: tuple[int, int] | None) -> tuple[int, int]:
        return source_size or (self.side, self.side)

    def _to_model(self, sources: list[Image.Image]) -> Tensor:
        mode = "L" if self.channels == 1 else "RGB"
        arrays = [np.asarray(s.convert(mode).resize((self.side, self.side), Image.Resampling.BICUBIC)) for s in sources]
        x = torch.from_numpy(np.stack(arrays).astype(np.float32))
        x = x.unsqueeze(1) if self.channels == 1 else x.permute(0, 3, 1, 2)
        return (x / 127.5 - 1.0).to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def _denoise(self, x: Tensor, start: int, generators: list[torch.Generator]) -> np.ndarray:
        order = int(getattr(self.scheduler, "order", 1))
        timesteps = self.scheduler.timesteps[start * order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start * order)
        for t in timesteps:
            model_in = self.scheduler.scale_model_input(x, t)
            eps = self.unet(model_in, t).sample
            x = self.scheduler.step(eps, t, x, generator=list(generators)).prev_sample
        images = (x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # NaN survives clamp
        return np.repeat(images, 3, axis=3) if self.channels == 1 else images

    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        steps = self.settings.steps
        self.scheduler.set_timesteps(steps, device=self.device)
        start = steps - int(steps * float(self.settings.strength))  # type: ignore[arg-type]
        x0 = self._to_model(sources)
        noise = _randn(tuple(x0.shape[1:]), generators, self.device, self.dtype)
        t0 = self.scheduler.timesteps[start * int(getattr(self.scheduler, "order", 1))]
        x = self.scheduler.add_noise(x0, noise, t0.reshape(1).repeat(len(sources)))
        images = self._denoise(x, start, generators)
        return images, [None] * len(images)


class UnconditionalGenerator(PixelImg2ImgGenerator):
    """Samples of a pixel-space UNet2DModel from pure noise (no source; AdaInf-style data inflation)."""

    kind = "unconditional"

    def default_size(self, source_size: tuple[int, int] | None) -> tuple[int, int]:
        return (self.side, self.side)

    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        self.scheduler.set_timesteps(self.settings.steps, device=self.device)
        shape = (self.channels, self.side, self.side)
        x = _randn(shape, generators, self.device, self.dtype) * float(self.scheduler.init_noise_sigma)
        images = self._denoise(x, 0, generators)
        return images, [None] * len(images)
