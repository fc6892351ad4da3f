"""Generated views (spec §3): write a bank of diffusion-model variants of a dataset, with a manifest.

``generate_bank`` drives a generator adapter (``GENERATORS``: unclip, variation, img2img, pixel_img2img,
unconditional) over a source dataset, sharded across processes, resumable, validated, and logs one manifest
row per image (``read_manifest``, ``merge_manifests``). diffusers and transformers are optional
(``pip install "ssl-toolkit[gen]"``) and imported only when a model is loaded, so importing this package
needs neither. Foreground scoring for GenView's adaptive noise level lives in ``foreground``.
"""

from __future__ import annotations

from ssl_toolkit.generation.bank import BankResult, generate_bank
from ssl_toolkit.generation.images import FORMATS
from ssl_toolkit.generation.loading import INSTALL_HINT, import_diffusers, model_revision
from ssl_toolkit.generation.manifest import FIELDS, merge_manifests, read_manifest, validate_row
from ssl_toolkit.generation.pipelines import GENERATORS, SCHEDULERS, ViewGenerator, load_generator
from ssl_toolkit.generation.settings import SCORERS, GenSettings, resolve_settings
from ssl_toolkit.generation.sources import Sources

__all__ = [
    "FIELDS",
    "FORMATS",
    "GENERATORS",
    "INSTALL_HINT",
    "SCHEDULERS",
    "SCORERS",
    "BankResult",
    "GenSettings",
    "Sources",
    "ViewGenerator",
    "generate_bank",
    "import_diffusers",
    "load_generator",
    "merge_manifests",
    "model_revision",
    "read_manifest",
    "resolve_settings",
    "validate_row",
]
