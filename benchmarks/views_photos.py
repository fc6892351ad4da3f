"""Views from real-photo-like JPEGs of mixed sizes: batched views vs per-image views vs lightly, in DataLoaders.

Two settings: SwAV's multi-crop (2 x 224 + 6 x 96 px, the ``multicrop`` preset = lightly's ``SwaVTransform``
defaults) and SimCLR (2 x 224 px, scale 0.08-1 = lightly's ``SimCLRTransform``), both with SimCLR's colour
jitter (0.8, 0.8, 0.8, 0.2, p 0.8), greyscale p 0.2 and blur p 0.5. Contestants, each a DataLoader with the
same workers, batch size and images (a generated folder of 300-500 px JPEGs, or ``--folder``):

- **batched**: ssl_toolkit's ``data.view_backend=batched`` (decode in the workers with torchvision, one call per
  view for the whole batch in the collate);
- **per_image**: ``data.view_backend=per_image`` (torchvision v2 per image, separable blur);
- **lightly**: PIL decode + lightly's transform per image, default collate (what lightly's examples do);
- **batched_cuda** (only with a GPU): ``data.view_device=cuda`` - workers decode, views made on the GPU.

Each round times ``--batches`` batches per contestant after ``2 x workers`` warm-up batches (worker start-up and
batches prefetched while another contestant ran excluded; workers persist across rounds), the order
alternating between rounds so background load hits every side alike; the table gives the median images/s
over rounds and ratios against lightly. After its timed batches a contestant's workers go on to refill their
prefetch queue (``2 x workers`` batches); the script waits that long (at the contestant's own rate) before
timing the next one, which would otherwise share the cores with that refill: without the wait, the fastest
contestant measured right after a slow one lost about half its rate, the slow ones much less (their timed
batches last longer than the refill).

    python benchmarks/views_photos.py --workers 2 --batch-size 64 --batches 8 --rounds 5
    python benchmarks/views_photos.py --tiny          # a seconds-long check that everything runs
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
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from ssl_toolkit import builders, config

SETTINGS = {
    "multicrop": "multicrop",
    "simclr": "[{name: global, n: 2, size: 224, scale: [0.08, 1.0]}]",
}


def write_photos(root: Path, n: int, low: int = 300, high: int = 500) -> Path:
    """``n`` JPEGs of random sizes in [low, high]: gradients, coloured shapes, mild noise (deterministic)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(low, high + 1, 2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([120 + 60 * np.sin(xx / rng.uniform(20, 80) + rng.uniform(0, 6)) + yy * 0.1 for _ in range(3)])
        image = Image.fromarray(np.clip(base.transpose(1, 2, 0), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, max(h, w) // 3))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r // 2], fill=colour)
        noisy = np.asarray(image).astype(np.float32) + rng.normal(0, 5, (h, w, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg", quality=90)
    return root


class LightlyFolder(Dataset):
    """PIL decode + a lightly transform per image (lightly's ``LightlyDataset`` does the same)."""

    def __init__(self, files: list[str], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as image:
            return self.transform(image.convert("RGB"))


def _ours(folder: Path, views: str, backend: str, args, device: str = "cpu"):
    cfg = config.load(
        None,
        ["data.name=image_folder", f"data.root={folder}", f"views={views}", f"data.view_backend={backend}"]
        + (["data.view_device=cuda"] if device == "cuda" else []),
    )
    data = builders.build_train_data(cfg)
    loader = DataLoader(
        data.dataset, batch_size=args.batch_size, sampler=data.sampler, collate_fn=data.collate_fn,
        num_workers=args.workers, drop_last=True, pin_memory=device == "cuda", persistent_workers=args.workers > 0,
    )  # fmt: skip
    if device != "cuda":
        return loader, None
    return loader, lambda batch: data.finish_batch(batch.to("cuda", non_blocking=True))


def _lightly(folder: Path, setting: str, args):
    from lightly.transforms import SimCLRTransform, SwaVTransform

    transform = SwaVTransform() if setting == "multicrop" else SimCLRTransform(input_size=224)
    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    dataset = LightlyFolder(files, transform)
    return DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
        persistent_workers=args.workers > 0,
    )  # fmt: skip


def _forever(loader: DataLoader):
    """Batches of epoch after epoch (persistent workers: no restart between epochs)."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _images_per_second(loader: DataLoader, finish, args) -> float:
    """Steady-state images/s of ``args.batches`` batches after the start-up and prefetch warm-up."""
    batches = _forever(loader)
    for _ in range(2 * args.workers if args.workers else 1):
        batch = next(batches)
        if finish is not None:
            finish(batch)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(batches)
        if finish is not None:
            finish(batch)
    if finish is not None:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    batches.close()
    rate = args.batches * args.batch_size / elapsed
    time.sleep(1.2 * 2 * args.workers * args.batch_size / rate)  # the workers' refill, at this rate (see above)
    return rate


def _machine(args) -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"machine: {model} ({platform.machine()}), {os.cpu_count()} cores, {gpu}; load average {load}\n"
        f"torch {torch.__version__}, main-process threads {torch.get_num_threads()}, "
        f"{args.workers} loader workers, batch {args.batch_size}"
    )


def run_setting(setting: str, folder: Path, args) -> dict[str, float]:
    import lightly

    views = SETTINGS[setting]
    loaders = {
        "batched": _ours(folder, views, "batched", args),
        "per_image": _ours(folder, views, "per_image", args),
        "lightly": (_lightly(folder, setting, args), None),
    }
    if torch.cuda.is_available() and not args.no_cuda:
        loaders["batched_cuda"] = _ours(folder, views, "batched", args, device="cuda")
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(args.rounds):
        for name in list(loaders)[:: 1 if r % 2 == 0 else -1]:
            rates[name].append(_images_per_second(*loaders[name], args))
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\n{setting}: views {views} (lightly {lightly.__version__})")
    print(f"{'pipeline':14s} {'images/s':>9s}  {'x lightly':>9s}   rounds")
    for name, rate in med.items():
        rounds = " ".join(f"{x:.0f}" for x in rates[name])
        print(f"{name:14s} {rate:9.1f}  {rate / med['lightly']:9.2f}   {rounds}")
    print(f"batched / per_image: {med['batched'] / med['per_image']:.2f}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, help="JPEG folder to read (default: generate --images of 300-500 px)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--setting", choices=[*SETTINGS, "both"], default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per contestant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--no-cuda", action="store_true", help="skip the GPU contestant even with a GPU")
    parser.add_argument("--tiny", action="store_true", help="16 images, batch 4, 2 batches, 2 rounds, no workers")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.batch_size, args.batches, args.rounds, args.workers = 16, 4, 2, 2, 0
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or write_photos(Path(tmp) / "photos", args.images)
        print(_machine(args))
        for setting in SETTINGS if args.setting == "both" else [args.setting]:
            run_setting(setting, folder, args)


if __name__ == "__main__":
    main()
