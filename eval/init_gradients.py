"""Gradient norms at initialisation, per recipe: why an objective may need its own learning rate.

    python eval/init_gradients.py                      # the default rows below, one batch each
    python eval/init_gradients.py recipes/pretrain/simclr_fashion_mnist.yaml --set train.batch_size=128
    python eval/init_gradients.py --tiny               # a seconds-long check that the script runs

For each row the recipe's model is built exactly as ``ssl-toolkit train`` builds it (``train.seed``), one training
batch of the recipe's views is drawn (the loader's first batch), and the loss is back-propagated once in float32
(no autocast, no optimizer step). Printed: the loss and the L2 norm of the gradient over every trainable weight
(encoder + projector + any learnable objective parameter), and over the encoder alone. A plain SGD step moves
the weights by ``lr x`` that norm at the start, so two objectives whose norms differ 100x need learning rates that
differ about as much to move the network alike (GroCo against SimCLR: docs/objectives.md, "groco").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssl_toolkit import config  # noqa: E402
from ssl_toolkit.builders import build_loader, build_model, build_train_data  # noqa: E402
from ssl_toolkit.objectives import StepContext  # noqa: E402

PRETRAIN = REPO / "recipes" / "pretrain"
# label, recipe, overrides
ROWS = (
    ("simclr (recipe)", PRETRAIN / "simclr_fashion_mnist.yaml", ()),
    ("groco (recipe: authors' 3-layer head, BN no affine)", PRETRAIN / "groco_fashion_mnist.yaml", ()),
    (
        "groco with simclr's head (2 layers, 128-d, BN)",
        PRETRAIN / "groco_fashion_mnist.yaml",
        ("model.projector_layers=2", "model.projector_out=128", "model.projector_last_norm=bn"),
    ),
)
TINY = ("data.subset=64", "train.batch_size=32")  # k = 10 negatives need batches of at least 11


def machine() -> str:
    """CPU model (Linux: /proc/cpuinfo), cores, torch threads and GPU."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}"


def _norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad.detach().double().flatten() for p in params if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def init_gradients(recipe: Path, overrides: tuple[str, ...]) -> dict[str, float]:
    """Loss and gradient norms of one float32 training step at initialisation (nothing is written)."""
    cfg = config.load(recipe, [*overrides, "train.mixed_precision=no", "monitor.every=0"])
    torch.manual_seed(cfg.train.seed)
    data = build_train_data(cfg)
    model = build_model(cfg, data).train()
    batch = next(iter(build_loader(data, cfg)))
    ctx = StepContext(n_global=data.n_global, ids=batch.ids, view_kinds=data.view_kinds, extras=batch.extras)
    out = model(batch.views, ctx)
    out.loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {
        "loss": float(out.loss.detach()),
        "grad_norm": _norm(trainable),
        "encoder_grad_norm": _norm(list(model.encoder.parameters())),
        "batch": cfg.train.batch_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", type=Path, help="recipes to measure (default: the rows in ROWS)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every row")
    parser.add_argument("--tiny", action="store_true", help=f"add {' '.join(TINY)}: a quick check that it runs")
    args = parser.parse_args(argv)
    rows = [(p.stem, p, ()) for p in args.recipes] or list(ROWS)
    extra = (*TINY, *args.overrides) if args.tiny else tuple(args.overrides)
    print(f"machine: {machine()}; torch {torch.__version__}; one float32 step at initialisation")
    print("| row | batch | loss | grad norm (all weights) | grad norm (encoder) |")
    print("|---|---|---|---|---|")
    for label, recipe, overrides in rows:
        r = init_gradients(recipe, (*overrides, *extra))
        print(f"| {label} | {r['batch']} | {r['loss']:.4f} | {r['grad_norm']:.4g} | {r['encoder_grad_norm']:.4g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
