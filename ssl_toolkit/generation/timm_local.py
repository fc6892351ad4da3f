"""Frozen timm feature models from a local path, their input statistics and their patch-token maps.

GenView (Li et al., ECCV 2024; code ``xiaojieli0903/genview``) runs two frozen CLIP image encoders on patch
tokens: a ViT for the foreground ratio that picks the noise level, and a ConvNeXt for the quality-driven
loss weights. It loads them through ``open_clip`` with downloaded weights. Here any timm model stands in for
them, loaded only from a path the user gives, so that nothing is downloaded at run time. The timm CLIP ports
(``vit_huge_patch14_clip_224.laion2b``, ``convnext_base.clip_laion2b_augreg``, ...) carry the CLIP mean and std
in their ``pretrained_cfg``. Hand-written because neither timm nor open_clip turns an arbitrary backbone's
``forward_features`` output into one (B, N, C) token layout with its spatial grid.

Two layouts are accepted:

- a folder exported by timm (``timm.models.save_for_hf``: ``config.json`` plus ``model.safetensors`` or
  ``pytorch_model.bin``), loaded with ``timm.create_model("local-dir:<folder>", pretrained=True)``;
- a weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) plus ``arch``, the timm name with its
  pretrained tag (the tag selects the mean and std), loaded with
  ``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": path})``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.errors import ConfigError

try:  # timm >= 1.0.2x: the size a model was built with, not only its checkpoint's
    from timm.models import get_model_input_config as _get_model_input_config
except ImportError:  # pragma: no cover - older timm
    _get_model_input_config = None

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FOLDER_LAYOUT = (
    "a folder exported by timm.models.save_for_hf (config.json plus model.safetensors), or a weights file "
    f"({', '.join(WEIGHT_SUFFIXES)}) together with arch=<timm model name with its pretrained tag>"
)


@dataclass(frozen=True)
class ModelInput:
    """What a feature model expects: RGB mean and std of its own normalisation, and its input size (H, W)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: tuple[int, int]


def load_timm_model(
    model_path: str | Path,
    *,
    arch: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load a timm model from a local folder or weights file, in eval mode with every parameter frozen.

    Args:
        model_path: a timm export folder, or a weights file when ``arch`` is given.
        arch: timm model name (with pretrained tag, e.g. ``vit_base_patch16_clip_224.openai``) for a weights
            file; an error with a folder, whose config.json already names the architecture.
        model_kwargs: extra ``timm.create_model`` keywords (e.g. ``img_size``) for models built differently
            from the registry default.
    """
    path = Path(model_path).expanduser()
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("num_classes", 0)
    if not path.exists():
        raise ConfigError(f"feature model path {path} does not exist; give {FOLDER_LAYOUT}")
    if path.is_dir():
        if arch is not None:
            raise ConfigError(
                f"feature model folder {path} names its architecture in config.json; drop arch={arch!r}, "
                "or point model_path at a weights file to use arch"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(f"feature model folder {path} has no config.json; give {FOLDER_LAYOUT}")
        name, create = f"local-dir:{path}", {}
    else:
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ConfigError(f"feature model file {path} has an unknown suffix {path.suffix!r}; give {FOLDER_LAYOUT}")
        if not arch:
            raise ConfigError(
                f"feature model file {path} needs arch=<timm model name>, e.g. 'vit_base_patch16_clip_224.openai', "
                "so that the architecture and its mean/std are known"
            )
        if not timm.is_model(arch.split(".")[0]):
            raise ConfigError(f"arch {arch!r} is not a timm model; list candidates with timm.list_models('*clip*')")
        name, create = arch, {"pretrained_cfg_overlay": {"file": str(path)}}
    try:
        model = timm.create_model(name, pretrained=True, **create, **kwargs)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as err:
        raise ConfigError(f"could not load the timm feature model from {path}: {err}") from err
    model.eval()
    model.requires_grad_(False)
    return model


def model_input(model: nn.Module) -> ModelInput:
    """Read the mean and std from a timm model's ``pretrained_cfg`` (ImageNet values if absent) and its input size.

    The size is the one the model was built with (``img_size=32`` on a 224 px architecture gives 32), read with
    ``timm.models.get_model_input_config`` where timm has it, else the ``pretrained_cfg`` size.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225)))
    input_size = cfg.get("input_size", (3, 224, 224))
    if _get_model_input_config is not None:
        input_size = _get_model_input_config(model).get("input_size", input_size)
    size = tuple(int(s) for s in input_size[-2:])
    if len(mean) != 3 or len(std) != 3 or len(size) != 2:
        raise ConfigError(f"feature model has an unusable pretrained_cfg (mean={mean}, std={std}, size={size})")
    return ModelInput(mean=mean, std=std, size=size)  # type: ignore[arg-type]


def token_map(model: nn.Module, images: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
    """Run ``forward_features`` and return patch tokens (B, N, C) and their grid (h, w) when it is known.

    ViT-like outputs (B, prefix + N, C) lose their ``num_prefix_tokens`` class/register tokens; CNN maps
    (B, C, h, w) become (B, h*w, C) in row-major order (``output_fmt == "NHWC"`` models are permuted first).
    The grid is the patch grid for ViTs (from the patch size, else a square N), None if it cannot be told.
    """
    out = model.forward_features(images)
    if not isinstance(out, Tensor):
        raise ConfigError(
            f"{type(model).__name__}.forward_features returned {type(out).__name__}, not a tensor; "
            "use a timm model whose forward_features gives a token or feature map"
        )
    if out.ndim == 4:
        if str(getattr(model, "output_fmt", "NCHW")) == "NHWC":
            out = out.permute(0, 3, 1, 2)
        b, c, h, w = out.shape
        return out.flatten(2).transpose(1, 2), (h, w)
    if out.ndim != 3:
        raise ConfigError(f"forward_features gave shape {tuple(out.shape)}; expected (B, N, C) or (B, C, h, w)")
    tokens = out[:, int(getattr(model, "num_prefix_tokens", 0)) :]
    n = tokens.shape[1]
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
        grid = (images.shape[-2] // ph, images.shape[-1] // pw)
        if grid[0] * grid[1] == n:
            return tokens, grid
    side = math.isqrt(n)
    return tokens, ((side, side) if side * side == n else None)


def check_images_uint8(images: Tensor) -> None:
    """Raise ConfigError unless ``images`` is a uint8 (B, 3, H, W) tensor, the scorers' input format."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"foreground scorers take uint8 RGB images shaped (B, 3, H, W), got {got}")


class TokenEncoder:
    """A frozen timm model that turns pixels into patch tokens with the model's own size and normalisation.

    Shared by the foreground scorer, the PCA fit and the quality weights, so that all three see the same
    tokens. Inputs are resized (bilinear, antialiased) to ``image_size`` (default: the model's input size),
    normalised with the model's ``pretrained_cfg`` mean/std, and run in eval mode under ``torch.no_grad``
    (with CUDA autocast when ``autocast`` is set, as GenView does). Tokens come back as float32.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        arch: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        image_size: int | tuple[int, int] | None = None,
        autocast: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.model = load_timm_model(model_path, arch=arch, model_kwargs=model_kwargs)
        self.input = model_input(self.model)
        if image_size is None:
            self.size = self.input.size
        else:
            size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"image_size must be a positive int or (H, W), got {image_size!r}")
            self.size = (int(size[0]), int(size[1]))
        self.autocast = autocast
        self.name = _model_name(self.model, arch)
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        """Device of the model's weights; inputs are moved there."""
        return next(self.model.parameters()).device

    def to(self, *args: Any, **kwargs: Any) -> TokenEncoder:
        """Move (or cast) the model like ``nn.Module.to`` and keep it frozen in eval mode."""
        self.model.to(*args, **kwargs)
        self.model.eval()
        return self

    def encode(self, pixels: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
        """Patch tokens (B, N, C) and grid for float RGB pixels in [0, 1] shaped (B, 3, H, W)."""
        x = pixels.to(self.device, dtype=torch.float32)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.input.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.input.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        x = x.to(next(self.model.parameters()).dtype)
        self.model.eval()
        amp = torch.autocast("cuda") if self.autocast and x.device.type == "cuda" else contextlib.nullcontext()
        with torch.no_grad(), amp:
            tokens, grid = token_map(self.model, x)
        return tokens.float(), grid

    def encode_uint8(self, images: Tensor) -> tuple[Tensor, tuple[int, int] | None]:
        """Patch tokens and grid for uint8 RGB images (B, 3, H, W)."""
        check_images_uint8(images)
        return self.encode(images.to(self.device).float() / 255.0)


def _model_name(model: nn.Module, arch: str | None) -> str:
    """The timm name with tag (``architecture.tag``) recorded next to anything fitted on the model's tokens."""
    if arch:
        return arch
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = str(cfg.get("architecture", type(model).__name__))
    return f"{name}.{cfg['tag']}" if cfg.get("tag") else name
