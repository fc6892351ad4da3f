"""Train a small pixel-space DDPM on Fashion-MNIST, the generator behind the generated-view rows of RESULTS.md.

No pretrained diffusion weights can be fetched here, so the bank for the GenView / AdaInf measurements comes
from a model trained on the training images themselves (as AdaInf's CIFAR-10 generators are). The output
folder is what ``DDPMPipeline.save_pretrained`` writes (``unet/``, ``scheduler/``, ``model_index.json``), the
layout ``ssl-toolkit generate-views --generator pixel_img2img|unconditional --model FOLDER`` loads, plus
``samples.png`` (unconditional DDIM samples) and ``train_log.csv``.

    .venv/bin/python eval/train_pixel_ddpm.py --out models/fmnist_ddpm --max-steps 3000 --batch-size 64

The training loop is written here because diffusers ships the model and the noise schedule but no trainer.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm


def build_unet(side: int = 28, width: int = 32):
    """A 3-level UNet2DModel (side -> side/2 -> side/4), attention only at the smallest level; grey input."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=side,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def fashion_mnist_tensor(root: str | None = None) -> torch.Tensor:
    """All training images as float (N, 1, 28, 28) in [-1, 1]."""
    from ssl_toolkit.data import build_dataset

    data = build_dataset(name="fashion_mnist", split="train", root=root, download=False, labelled=None)
    images = torch.stack([data[i][0][:1] for i in range(len(data))]).float()
    return images / 127.5 - 1.0


def train(args: argparse.Namespace) -> Path:
    from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(args.seed)
    images = fashion_mnist_tensor(args.root)
    unet = build_unet(images.shape[-1], args.width)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=args.ema_decay)  # the saved weights are the average (DDPM practice)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + 60 * args.minutes
    g = torch.Generator().manual_seed(args.seed)
    step, rows, t0 = 0, [], time.perf_counter()
    bar = tqdm(total=args.max_steps, desc="ddpm", unit="step")
    while step < args.max_steps and time.perf_counter() < deadline:
        idx = torch.randint(len(images), (args.batch_size,), generator=g)
        x0 = images[idx]
        x0 = torch.where(torch.rand(len(x0), 1, 1, 1, generator=g) < 0.5, x0, x0.flip(-1))  # flips
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = args.lr * min(1.0, (step + 1) / 200)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        ema.step(unet.parameters())
        step += 1
        bar.update(1)
        if step % 50 == 0:
            rows.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    ema.copy_to(unet.parameters())
    unet.eval()
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)
    with (out / "train_log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
    _save_samples(DDPMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config)), out / "samples.png")
    print(f"{step} steps in {(time.perf_counter() - t0) / 60:.1f} min, last loss {rows[-1]['loss'] if rows else 0:.4f}")
    print(out)
    return out


@torch.no_grad()
def _save_samples(pipe, path: Path, n: int = 64) -> None:
    import numpy as np
    from PIL import Image

    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=n, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np")
    grid = (np.asarray(images.images)[..., 0] * 255).round().astype(np.uint8)  # (n, H, W)
    side = int(n**0.5)
    grid = grid[: side * side].reshape(side, side, *grid.shape[1:]).transpose(0, 2, 1, 3)
    Image.fromarray(grid.reshape(side * grid.shape[1], -1)).resize((side * 56, side * 56)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (DDPMPipeline layout)")
    parser.add_argument("--root", default=None, help="Fashion-MNIST root (default: Debian's files or ./data)")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=32, help="channels of the first UNet level")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="decay of the weight average that is saved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 support)")
    train(parser.parse_args())


if __name__ == "__main__":
    main()
