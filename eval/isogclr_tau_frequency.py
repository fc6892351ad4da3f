"""iSogCLR's learned per-sample temperature against class frequency, on a deliberately imbalanced Fashion-MNIST.

The paper's claim (Qiu et al., ICML 2023, https://arxiv.org/abs/2305.11965): samples of frequent semantics get
larger τ, rare ones smaller. This script builds a long-tailed subset of the Fashion-MNIST train split (class c
keeps ``head * ratio**c`` images, written as a labelled image folder), pretrains with
``recipes/pretrain/isogclr_fashion_mnist.yaml`` on it (labels unused by training), reads the τ table from the
last checkpoint and plots τ per sample against the frequency of its class, with the per-class mean. It prints
a markdown table and the Spearman correlation of class frequency with mean τ; it reports what it measures,
whichever way it comes out.

    python eval/isogclr_tau_frequency.py --out runs/isogclr_tau --epochs 10 --plot docs/isogclr_tau_vs_frequency.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ssl_toolkit import config, engine  # noqa: E402
from ssl_toolkit.checkpoint import last_checkpoint  # noqa: E402
from ssl_toolkit.data import FASHION_MNIST_CLASSES, build_dataset  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "isogclr_fashion_mnist.yaml"


def write_long_tailed_folder(root: Path, *, head: int, ratio: float, seed: int) -> list[int]:
    """``root/train/<k>_<class>/<i>.png`` with ``head * ratio**k`` images of class k; returns the counts."""
    train = build_dataset(name="fashion_mnist", split="train")
    g = torch.Generator().manual_seed(seed)
    counts = []
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        n = max(1, round(head * ratio**c))
        members = torch.nonzero(train.labels == c).flatten()
        picked = members[torch.randperm(len(members), generator=g)[:n]]
        folder = root / "train" / f"{c}_{name.replace('/', '-').replace(' ', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(picked.tolist()):
            Image.fromarray(train[index][0][0].numpy()).save(folder / f"{i:05d}.png")
        counts.append(n)
    return counts


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    rx = torch.tensor(x).argsort().argsort().double()
    ry = torch.tensor(y).argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/isogclr_tau")
    parser.add_argument("--head", type=int, default=3000, help="images of the most frequent class")
    parser.add_argument("--ratio", type=float, default=0.6, help="class c keeps head * ratio**c images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--plot", default="docs/isogclr_tau_vs_frequency.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    images = out / "images"
    if not (images / "train").is_dir():
        counts = write_long_tailed_folder(images, head=args.head, ratio=args.ratio, seed=args.seed)
    else:
        counts = [len(list(d.iterdir())) for d in sorted((images / "train").iterdir())]
    n = sum(counts)
    cfg = config.load(
        RECIPE,
        [
            "name=isogclr_long_tailed",
            "data.name=image_folder",
            f"data.root={images / 'train'}",
            f"objective.dataset_size={n}",
            f"train.epochs={args.epochs}",
            "train.warmup_steps=50",
            f"train.output_dir={out}",
            "eval.after_train=false",
            "monitor.every=0",
        ],
    )
    run_dir = engine.train(cfg)
    weights = load_file(str(last_checkpoint(run_dir / "checkpoints") / "model.safetensors"))
    tau, seen = weights["objective.tau"], weights["objective.seen"].bool()
    labels = build_dataset(name="image_folder", split="train", root=str(images / "train")).labels
    freq = [c / n for c in counts]
    means, rows = [], []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in range(len(counts)):
        t = tau[(labels == c) & seen]
        means.append(float(t.mean()))
        jitter = freq[c] * (1 + 0.08 * (torch.rand(len(t)) - 0.5))
        ax.scatter(jitter, t, s=2, alpha=0.15, color="tab:blue")
        rows.append(
            f"| {FASHION_MNIST_CLASSES[c]} | {counts[c]} | {freq[c]:.3f} | {means[-1]:.4f} | {float(t.std()):.4f} |"
        )
    ax.plot(freq, means, "o-", color="tab:red", label="class mean τ")
    ax.set_xscale("log")
    ax.set_xlabel("class frequency in the long-tailed subset")
    ax.set_ylabel("learned τ per sample")
    rho = spearman(freq, means)
    ax.set_title(f"iSogCLR τ vs class frequency ({n} images, {args.epochs} epochs; Spearman {rho:+.2f})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print("| class | images | frequency | mean τ | std τ |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"Spearman(class frequency, mean τ) = {rho:+.3f}; plot: {args.plot}")


if __name__ == "__main__":
    main()
