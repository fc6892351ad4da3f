"""A hand-written bank of generated images (PNG files plus manifest rows), for tests that need no diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_bank(root: Path, variants: dict[int, list[int]], *, unconditional: list[int] = (), size: int = 8) -> Path:
    """A bank whose variant k of source i is a constant image of value ``variants[i][k]``; unconditional
    images likewise, labelled -1. Rows carry the manifest fields the reader uses."""
    rows = []
    for src, values in variants.items():
        for k, value in enumerate(values):
            file = f"images/train/{src:06d}/v{k}.png"
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(root / file)
            rows.append({"src_id": src, "variant_id": k, "label": src % 2, "file": file})
    for k, value in enumerate(unconditional):
        file = f"images/unconditional/{k:06d}/v0.png"
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(root / file)
        rows.append({"src_id": -1, "variant_id": k, "label": -1, "file": file})
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
