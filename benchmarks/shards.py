"""Images per second read and decoded: WebDataset shards and a Hugging Face dataset against the image folder.

The same images (a folder given with ``--folder``, or generated: ``--images`` photo-like JPEGs of 300-500 px,
mixed sizes, in ``--classes`` class folders) are read three ways: **folder** (``data.name=image_folder``: one
file per image), **shards** (the folder packed by ``ssl-toolkit pack`` into ``--shard-size`` tar shards and
read by offset, ``data.name=webdataset``) and **hf** (a ``save_to_disk`` copy, ``data.name=hf_dataset``).
Each source gets the same DataLoader (``--workers`` persistent workers, ``--batch-size``, the training
sampler's shuffled order, a collate that keeps the decoded uint8 tensors as a list since sizes differ), so
only reading and decoding differ. Rounds alternate the order of the sources so background load affects each
alike; a first round warms workers and the page cache and is not counted. Prints the median time per round
of each source, images/s and the ratios to the folder (> 1: faster than the folder). The files are in the
page cache after the first round, so this measures CPU cost per image (file opens, tar reads, Arrow rows,
decoding), not cold-disk throughput.

    python benchmarks/shards.py --images 2048 --workers 4 --rounds 5
    python benchmarks/shards.py --tiny          # seconds: checks that the script runs
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssl_toolkit.data import EpochSampler, ImageFolder, build_dataset
from ssl_toolkit.data.pack import pack_folder


def keep_list(batch: list) -> list:
    """Collate that keeps mixed-size images as a list (top level, so worker processes can pickle it)."""
    return batch


def make_photos(root: Path, n: int, classes: int, low: int, high: int, seed: int = 0) -> Path:
    """``n`` smooth random JPEGs (quality 90) of sides in [low, high], spread over ``classes`` folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in rng.integers(low, high + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def hf_copy(folder: Path, out: Path) -> Path:
    """``folder`` as a ``save_to_disk`` dataset (encoded bytes and ClassLabel), in ImageFolder order."""
    import datasets

    ref = ImageFolder(str(folder))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=ref.classes)})
    images = [{"bytes": Path(p).read_bytes(), "path": None} for p in ref.samples]
    table = datasets.Dataset.from_dict({"image": images, "label": ref.labels.tolist()}, features=features)
    table.save_to_disk(str(out))
    return out


def round_time(loader: DataLoader, batches: int) -> float:
    """Seconds to take ``batches`` batches from a fresh iterator of ``loader``."""
    t0 = time.perf_counter()
    for k, _ in enumerate(loader, start=1):
        if k >= batches:
            break
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=None, help="an image folder (default: generate --images JPEGs)")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face source")
    parser.add_argument("--tiny", action="store_true", help="24 small images, no workers, 2 rounds")
    args = parser.parse_args()
    low, high = (300, 500) if not args.tiny else (24, 40)
    if args.tiny:
        args.images, args.classes, args.shard_size, args.workers, args.batch_size, args.rounds = 24, 2, 10, 0, 8, 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = (
            Path(args.folder) if args.folder else make_photos(work / "photos", args.images, args.classes, low, high)
        )
        pack_folder(folder, work / "shards", shard_size=args.shard_size, progress=False)
        roots = {"folder": ("image_folder", folder), "shards": ("webdataset", work / "shards")}
        if not args.no_hf:
            roots["hf"] = ("hf_dataset", hf_copy(folder, work / "hf"))
        sets = {name: build_dataset(name=kind, root=str(root)) for name, (kind, root) in roots.items()}
        n = len(sets["folder"])
        batches = n // args.batch_size
        if batches < 1 or any(len(ds) != n for ds in sets.values()):
            raise SystemExit(
                f"need at least one batch of the same images everywhere: {[len(d) for d in sets.values()]}"
            )
        loaders = {
            name: DataLoader(
                ds, batch_size=args.batch_size, sampler=EpochSampler(n, seed=0), collate_fn=keep_list,
                num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True,
            )
            for name, ds in sets.items()
        }  # fmt: skip
        for loader in loaders.values():  # warm-up: starts workers, fills the page cache
            round_time(loader, batches)
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for r in range(args.rounds):
            for name in list(loaders)[:: 1 if r % 2 == 0 else -1]:
                times[name].append(round_time(loaders[name], batches))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    images = batches * args.batch_size
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{n} images of {low}-{high} px, {args.workers} workers, batch {args.batch_size}, {args.rounds} rounds")
    for name, t in med.items():
        print(f"{name:7s} {t:8.3f} s/round  {images / t:8.1f} images/s  ratio to folder {med['folder'] / t:.2f}")


if __name__ == "__main__":
    main()
