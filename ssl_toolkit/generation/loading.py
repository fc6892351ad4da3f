"""Offline loading of diffusers models from a user's folder: the lazy import, folder checks, device, revision.

diffusers and transformers are an optional extra (``ssl-toolkit[gen]``), so they are imported only here and
only when a generator is built. Nothing is ever downloaded: every ``from_pretrained`` call gets
``local_files_only=True`` and runs with ``HF_HUB_OFFLINE=1``. The revision recorded in the manifest is the
Hugging Face cache commit when the folder is a cache snapshot, else a hash of the folder's config files and
of its weight files' names and sizes (hashing gigabytes of weights would take longer than some runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from ssl_toolkit.errors import ConfigError

INSTALL_HINT = 'pip install "ssl-toolkit[gen]"'
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SNAPSHOT = re.compile(r"^[0-9a-f]{40}$")
_CONFIG_SUFFIXES = (".json", ".txt")
SD_LAYOUT = (
    "a folder saved by the pipeline's save_pretrained (or a Hugging Face snapshot folder): model_index.json "
    "plus one subfolder per component (unet/, vae/, scheduler/, ...)"
)
PIXEL_LAYOUT = (
    "a folder saved by DDPMPipeline.save_pretrained: unet/ (config.json + weights of a UNet2DModel) and "
    "scheduler/ (scheduler_config.json)"
)


def import_diffusers() -> ModuleType:
    """Import diffusers (and check transformers), or raise ConfigError with the install command."""
    try:
        importlib.import_module("transformers")
        return importlib.import_module("diffusers")
    except ImportError as err:
        raise ConfigError(
            f"generated views need the optional packages diffusers and transformers ({err}); "
            f"install them with: {INSTALL_HINT}"
        ) from err


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` (and huggingface_hub's cached flag) for the duration, then restore both."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants as constants
    old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' loading progress bars and the ``torch_dtype`` rename warning.

    ``torch_dtype`` is what diffusers before 0.36 understands, so it stays; the bars are restored after.
    """
    import warnings

    libs = [importlib.import_module(f"{m}.utils.logging") for m in ("diffusers", "transformers")]
    enabled = [lib.is_progress_bar_enabled() for lib in libs]
    for lib in libs:
        lib.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            yield
    finally:
        for lib, on in zip(libs, enabled):
            if on:
                lib.enable_progress_bar()


def check_model_folder(path: str | Path | None, *, pixel: bool) -> Path:
    """The absolute model folder, or ConfigError saying which layout is expected (SD family or pixel UNet)."""
    if path is None or not str(path):
        raise ConfigError("--model is required: a local model folder (nothing is downloaded)")
    folder = Path(path).expanduser().resolve()
    layout = PIXEL_LAYOUT if pixel else SD_LAYOUT
    if not folder.is_dir():
        raise ConfigError(f"model folder {str(folder)!r} does not exist; --model must be {layout}")
    if pixel:
        missing = [p for p in ("unet/config.json", "scheduler/scheduler_config.json") if not (folder / p).is_file()]
    else:
        missing = [p for p in ("model_index.json", "unet") if not (folder / p).exists()]
    if missing:
        raise ConfigError(f"model folder {str(folder)!r} lacks {', '.join(missing)}; --model must be {layout}")
    return folder


def pipeline_class_name(folder: Path, default: str) -> str:
    """``_class_name`` of ``model_index.json`` when the folder has one, else ``default``."""
    index = folder / "model_index.json"
    if index.is_file():
        with contextlib.suppress(OSError, ValueError):
            return str(json.loads(index.read_text()).get("_class_name", default))
    return default


def model_revision(path: str | Path) -> str:
    """The HF cache commit for ``.../snapshots/<40 hex>``, else ``sha256:`` over configs and weight names/sizes.

    Config files (``.json``, ``.txt``) are hashed with their content; every other file by relative path and
    size only. Hidden files and folders (``.cache``, ``.git``) are left out so a copy hashes the same.
    """
    folder = Path(path).expanduser().resolve()
    if folder.parent.name == "snapshots" and _SNAPSHOT.match(folder.name):
        return folder.name
    digest = hashlib.sha256()
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )
    for file in files:
        rel = file.relative_to(folder).as_posix()
        if file.suffix.lower() in _CONFIG_SUFFIXES:
            digest.update(f"{rel}\0config\0".encode())
            digest.update(file.read_bytes())
        else:
            digest.update(f"{rel}\0size\0{file.stat().st_size}".encode())
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) gives CUDA when available, else CPU; ``cpu`` and ``cuda[:k]`` are taken as given."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return torch.device(name)
    raise ConfigError(f"--device {name!r} is unknown; accepted: auto, cpu, cuda")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``auto`` (or None) gives fp16 on CUDA and fp32 on CPU; otherwise one of ``DTYPES``."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"--dtype {name!r} is unknown; accepted: auto, {', '.join(DTYPES)}")
    return DTYPES[name]
