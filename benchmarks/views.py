"""Views per second: batched kornia views against the per-image torchvision pipeline, in the same run.

Both build the views of the default recipe (or the groups given) for the same images, in the main process,
with the same thread count: **per_image** is ``ViewDataset`` + ``collate_views`` (one torchvision call per
view per image), **batched** is ``PositionedImages`` + ``BatchViewCollate`` (one kornia call per view per
batch). Batches alternate between the two so background load affects both alike. Prints the median time per
batch of each, images per second and the ratio per_image / batched (> 1: batched is faster).

    python benchmarks/views.py --recipe recipes/pretrain/simclr_fashion_mnist.yaml --batches 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from omegaconf import OmegaConf

from ssl_toolkit import builders, config


def _batch_maker(recipe: str, backend: str, batch_size: int):
    cfg = config.load(recipe, [f"data.view_backend={backend}"])
    data = builders.build_train_data(cfg)
    dataset, collate = data.dataset, data.collate_fn
    order = iter(data.sampler)

    def make() -> None:
        collate([dataset[next(order)] for _ in range(batch_size)])

    return make, OmegaConf.to_container(cfg.views)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/pretrain/simclr_fashion_mnist.yaml")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    makers = {name: _batch_maker(args.recipe, name, args.batch_size)[0] for name in ("per_image", "batched")}
    groups = _batch_maker(args.recipe, "batched", 1)[1]
    for make in makers.values():  # warm-up
        make()
    times: dict[str, list[float]] = {name: [] for name in makers}
    for i in range(args.batches):
        for name in list(makers)[:: 1 if i % 2 == 0 else -1]:
            t0 = time.perf_counter()
            makers[name]()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads")
    print(f"views: {groups}")
    for name, t in med.items():
        print(f"{name:10s} {t * 1000:8.1f} ms/batch  {args.batch_size / t:8.0f} images/s")
    print(f"ratio per_image / batched: {med['per_image'] / med['batched']:.2f}")


if __name__ == "__main__":
    main()
