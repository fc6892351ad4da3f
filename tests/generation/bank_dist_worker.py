"""Worker of the 2-process bank test: each process generates its share (items i % 2 == rank) of one bank;
rank 0 merges the shards after accelerate's ``wait_for_everyone``. Args: bank folder, model folder, source."""

from __future__ import annotations

import sys

import torch

from ssl_toolkit.generation import generate_bank, resolve_settings

if __name__ == "__main__":
    torch.set_num_threads(1)
    bank, model, source = sys.argv[1:4]
    settings = resolve_settings("pixel_img2img", steps=2, strength=0.5)
    result = generate_bank(
        bank, settings, model=model, source="image_folder", root=source, variants=2, batch_size=1, device="cpu",
        progress=False,
    )  # fmt: skip
    assert result.generated == 8 and result.skipped == 0, result.summary()  # totals over both processes
