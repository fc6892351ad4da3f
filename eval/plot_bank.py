"""Draw a bank of generated views next to its sources: one row per source image, its variants to the right.

    python eval/plot_bank.py banks/fmnist_sdedit --source fashion_mnist --out docs/bank_sdedit.png
    python eval/plot_bank.py banks/fmnist_uncond --out docs/bank_uncond.png      # unconditional samples

A bank is judged by looking at it: whether variants keep the object (GenView's point) or drift, and whether
unconditional samples look like the data. Reads only ``manifest.jsonl`` and the images it names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from ssl_toolkit.generation import Sources, read_manifest  # noqa: E402


def plot_bank(bank: str | Path, out: str | Path, *, source: str | None, root: str | None, rows: int, cols: int) -> Path:
    """Save the grid: with ``source``, ``rows`` sources and their variants; else ``rows x cols`` samples."""
    bank = Path(bank)
    manifest = read_manifest(bank)
    conditional = [r for r in manifest if r["src_id"] >= 0]
    if source and conditional:  # groups (source, its variants), packed side by side up to ``cols`` images a row
        by_src: dict[int, list[dict]] = {}
        for row in conditional:
            by_src.setdefault(row["src_id"], []).append(row)
        sources = Sources(source, root=root, split="train")
        group = 1 + max(len(v) for v in by_src.values())
        per_row = max(1, cols // group)
        picked = sorted(by_src)[:: max(1, len(by_src) // (rows * per_row))][: rows * per_row]
        items = []
        for s in picked:
            variants = [(Image.open(bank / r["file"]), f"variant {r['variant_id']}") for r in by_src[s]]
            items += [(sources.image(s), "source"), *variants, *[(None, "")] * (group - 1 - len(variants))]
        width = group * per_row
    else:
        items = [(Image.open(bank / r["file"]), "") for r in manifest[: rows * cols]]
        width = cols
    cells = [items[i : i + width] for i in range(0, len(items), width)]
    fig, axes = plt.subplots(len(cells), width, figsize=(1.1 * width, 1.2 * len(cells)), squeeze=False)
    for i, row in enumerate(cells):
        for j in range(width):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row) and row[j][0] is not None:
                ax.imshow(row[j][0].convert("L"), cmap="gray", vmin=0, vmax=255)
                if i == 0:
                    ax.set_title(row[j][1], fontsize=7)
    first = manifest[0]
    knob = f", strength {first['strength']}" if first["strength"] is not None else ""
    fig.suptitle(f"{bank.name}: {first['generator']}, {first['steps']} steps {first['scheduler']}{knob}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank")
    parser.add_argument("--out", required=True)
    parser.add_argument("--source", default=None, help="the bank's source dataset (fashion_mnist | image_folder)")
    parser.add_argument("--root", default=None)
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--cols", type=int, default=8)
    args = parser.parse_args()
    print(plot_bank(args.bank, args.out, source=args.source, root=args.root, rows=args.rows, cols=args.cols))


if __name__ == "__main__":
    main()
