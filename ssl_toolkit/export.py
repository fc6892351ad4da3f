"""Export a trained encoder for users: ``model.safetensors`` + a timm ``config.json`` (+ ``recipe.yaml``).

The ``pretrained_cfg`` describes *this* run (input size, mean/std, recipe), never the backbone's ImageNet
defaults, so ``timm.create_model("local-dir:<dir>", pretrained=True, num_classes=0)`` reloads it with the
right preprocessing. Small-input ResNets are exported under their registered ``<name>_small_input``
architecture (`ssl_toolkit.small_input`), which timm finds once ssl_toolkit is imported. `load_encoder`
does the same without timm's hub machinery. Weights are safetensors: nothing is unpickled. `export_run`
exports the encoder of a training run with that run's recipe; `export_checkpoint` does it from a run folder's
last checkpoint without building anything but the encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from ssl_toolkit import __version__
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.model import build_encoder

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def export_encoder(
    encoder: nn.Module,
    out_dir: str | Path,
    *,
    backbone: str,
    backbone_kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    recipe_name: str,
    recipe_yaml: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the encoder to ``out_dir`` atomically (temporary folder, then rename) and return the folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model_args = dict(backbone_kwargs or {})
    json.dumps(model_args)  # must be JSON-serialisable for timm to rebuild the model
    config = {
        "architecture": encoder.pretrained_cfg.get("architecture", backbone)
        if hasattr(encoder, "pretrained_cfg")
        else backbone,
        "num_classes": 0,
        "num_features": int(getattr(encoder, "num_features", 0)) or None,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, *input_size] if len(input_size) == 2 else list(input_size),
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "num_classes": 0,
            "fixed_input_size": False,
            "tag": recipe_name,
            "description": f"self-supervised encoder trained with ssl_toolkit recipe {recipe_name!r}",
        },
        "ssl_toolkit": {
            "version": __version__,
            "recipe": recipe_name,
            **(extra or {}),
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; an export is for colleagues and containers to read
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if recipe_yaml is not None:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
        for path in tmp.iterdir():  # safetensors writes 0600; the usual umask gives 0644
            path.chmod(0o666 & ~_umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap in the new folder; between the two renames the previous export is kept as .<name>-old.
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_export_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an export folder, with a clear error when the folder is not one."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise ConfigError(
            f"{path} is not an exported encoder (needs {CONFIG} and {WEIGHTS}); "
            "export a run with `ssl-toolkit export RUN_DIR`"
        )
    return json.loads((path / CONFIG).read_text())


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an exported encoder in eval mode; ``encoder.pretrained_cfg`` holds its preprocessing."""
    config = read_export_config(path)
    encoder = build_encoder(config["architecture"], backbone_kwargs=config.get("model_args", {}))
    state = load_file(str(Path(path) / WEIGHTS))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"weights in {path} do not fit {config['architecture']}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    encoder.pretrained_cfg = dict(config["pretrained_cfg"])
    return encoder.eval()


def export_run(
    cfg: Any,
    encoder: nn.Module,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    run_dir: str | Path,
    step: int,
    folder: str = "encoder",
    monitor: Mapping[str, Any] | None = None,
) -> Path:
    """Export the encoder of a run (recipe ``cfg``) to ``run_dir/<folder>`` with this run's preprocessing."""
    from omegaconf import OmegaConf

    size = cfg.eval.size or cfg.views[0].size
    return export_encoder(
        encoder,
        Path(run_dir) / folder,
        backbone=cfg.model.backbone,
        backbone_kwargs=OmegaConf.to_container(cfg.model.backbone_kwargs, resolve=True),
        input_size=(size, size),
        mean=mean,
        std=std,
        recipe_name=cfg.name,
        recipe_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        extra={
            "objective": OmegaConf.to_container(cfg.objective, resolve=True),
            "train_step": int(step),
            "dataset": cfg.data.name,
            "root": _absolute(cfg.data.root),
            "eval_dataset": cfg.eval.dataset or cfg.data.name,
            "eval_root": _absolute(cfg.eval.root or cfg.data.root),
            **({"monitor": dict(monitor)} if monitor is not None else {}),
        },
    )


def export_checkpoint(
    cfg: Any, checkpoint: str | Path, *, mean: Sequence[float], std: Sequence[float], run_dir: str | Path
) -> Path:
    """Export the encoder weights of a training checkpoint (``model.safetensors`` of `accelerator.save_state`).

    Only the encoder is rebuilt (from ``cfg.model``); the objective, projector and data are not, so exporting a
    run folder constructs nothing its recipe names besides a timm backbone.
    """
    state = load_file(str(Path(checkpoint) / WEIGHTS))
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    encoder = build_encoder(
        cfg.model.backbone, small_input=cfg.model.small_input, backbone_kwargs=dict(cfg.model.backbone_kwargs)
    )
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected or not weights:
        raise ConfigError(
            f"checkpoint {checkpoint} does not hold a {cfg.model.backbone} encoder (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); was the recipe changed after training?"
        )
    step = int(state["train_step"]) if "train_step" in state else 0
    return export_run(cfg, encoder, mean=mean, std=std, run_dir=run_dir, step=step)
