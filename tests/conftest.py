"""Shared test helpers: the reference values (``tests/reference/``, see its README) and small fixtures."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "reference"


@cache
def _load(name: str) -> dict:
    return json.loads((REFERENCE_DIR / name).read_text())


def reference(name: str) -> dict:
    """A JSON file of ``tests/reference/`` (part of the repository: a missing file is an error, not a skip)."""
    return _load(name)


@pytest.fixture(scope="session")
def vit_weighter_files(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random CLIP-tagged ViT export and a PCA fitted on its tokens."""
    import timm
    import torch
    from timm.models import save_for_hf

    from ssl_toolkit.generation.foreground import fit_foreground_pca_from_images, save_foreground_pca

    torch.manual_seed(1)
    model = timm.create_model(
        "vit_base_patch16_clip_224.openai",
        pretrained=False,
        num_classes=0,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )
    folder = tmp_path_factory.mktemp("qvit")
    save_for_hf(model, folder, safe_serialization=True)
    images = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    pca = save_foreground_pca(folder.parent / "qvit_pca.safetensors", fit_foreground_pca_from_images(folder, images))
    return folder, pca
