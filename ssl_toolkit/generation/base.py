"""The interface of a generator adapter: load a local model offline, turn a batch of sources into images.

Every adapter takes one ``torch.Generator`` per item, so an item's noise never depends on which other items
share its batch, and returns float images in [0, 1] as (B, H, W, 3) numpy, NaN included if the model
produced any, so the caller can validate before anything is written. Hand-written: diffusers pipelines
differ in their arguments (noise level, strength, prompt) and the pixel-space kinds are not pipelines at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.generation.loading import (
    PIXEL_LAYOUT,
    SD_LAYOUT,
    check_model_folder,
    import_diffusers,
    offline,
    pipeline_class_name,
    quiet_loading,
)
from ssl_toolkit.generation.settings import GenSettings

SCHEDULERS = ("auto", "ddim", "ddpm")
Sources = list[Image.Image] | None  # None for unconditional kinds
Output = tuple[np.ndarray, list[str | None]]  # (B, H, W, 3) float in [0, 1]; per item None or a rejection reason
_SCHEDULER_CLASSES = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler"}


def _override_scheduler(diffusers: ModuleType, scheduler: Any, name: str) -> Any:
    if name == "auto":
        return scheduler
    if name not in _SCHEDULER_CLASSES:
        raise ConfigError(f"--scheduler {name!r} is unknown; accepted: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, _SCHEDULER_CLASSES[name]).from_config(scheduler.config)


class ViewGenerator(ABC):
    """A loaded model that turns a batch of sources (or nothing) into images, one generator per item.

    Args:
        settings: resolved knobs (``settings.kind`` must match the class).
        model_path: local model folder (checked; see ``loading.SD_LAYOUT`` / ``PIXEL_LAYOUT``).
        device: where the model runs.
        dtype: weights' dtype.
        scheduler: ``auto`` keeps the folder's scheduler; ``ddim``/``ddpm`` rebuild it from its config.
    """

    kind: ClassVar[str] = ""
    pipeline_class: ClassVar[str] = ""
    pixel: ClassVar[bool] = False

    def __init__(
        self,
        settings: GenSettings,
        model_path: str | Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        scheduler: str = "auto",
    ) -> None:
        if settings.kind != self.kind:
            raise ConfigError(f"{type(self).__name__} is for kind {self.kind!r}, got settings for {settings.kind!r}")
        self.settings = settings
        self.model_path = check_model_folder(model_path, pixel=self.pixel)
        self.device = device
        self.dtype = dtype
        self.pipeline_name = pipeline_class_name(self.model_path, self.pipeline_class)
        diffusers = import_diffusers()
        with offline(), quiet_loading():
            try:
                self._load(diffusers)
            except (OSError, ValueError, TypeError, KeyError) as err:
                layout = PIXEL_LAYOUT if self.pixel else SD_LAYOUT
                raise ConfigError(
                    f"cannot load a {self.kind} model from {str(self.model_path)!r} "
                    f"({type(err).__name__}: {err}); --model must be {layout}"
                ) from err
        self.scheduler = _override_scheduler(diffusers, self.scheduler, scheduler)

    @abstractmethod
    def _load(self, diffusers: ModuleType) -> None:
        """Load the model(s) from ``self.model_path``; set ``self.scheduler``."""

    @property
    def scheduler_name(self) -> str:
        return type(self.scheduler).__name__

    def default_size(self, source_size: tuple[int, int] | None) -> tuple[int, int]:
        """Output (width, height) when ``--size`` is not given: the source's for pixel models, else 512."""
        return (512, 512)

    @abstractmethod
    def generate(
        self, sources: Sources, generators: list[torch.Generator], *, noise_level: int | None = None
    ) -> Output:
        """Images (B, H, W, 3) float in [0, 1] and, per item, None or why the pipeline itself rejected it."""
