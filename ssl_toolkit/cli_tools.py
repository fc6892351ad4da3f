"""``ssl-toolkit generate-views | fit-foreground-pca | pack``: data tools (view banks, their scorer, shards)."""

from __future__ import annotations

import argparse
import os


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def add_parser(sub: argparse._SubParsersAction) -> None:
    _add_generate_views(sub)
    _add_fit_foreground_pca(sub)
    _add_pack(sub)


def _add_generate_views(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate-views",
        help="write a bank of generated variants of a dataset (diffusers; local model folders only)",
        description="Generate variants of every source image (or unconditional samples) into BANK/images/ with "
        "one manifest row per image; resumable, shardable (accelerate launch, or --num-shards/--shard-index).",
    )
    p.add_argument("--out", required=True, help="bank folder")
    p.add_argument("--merge-only", action="store_true", help="only merge the manifest shards of --out")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | image_folder")
    p.add_argument("--root", default=None, help="dataset root (image_folder: the folder of images)")
    p.add_argument("--split", default="train", help="source split: train | test (%(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N source images (trials)")
    p.add_argument("--generator", default="unclip", help="unclip | variation | img2img | pixel_img2img | unconditional")
    p.add_argument("--model", default=None, help="local model folder (save_pretrained layout or an HF snapshot)")
    p.add_argument("--variants", type=int, default=1, help="variants per source image")
    p.add_argument("--num-unconditional", type=int, default=None, help="samples to draw (unconditional)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default per generator; unclip 20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (unclip 10)")
    p.add_argument("--noise-level", default=None, help="unclip embedding noise: an int in [0, 999] or 'adaptive'")
    p.add_argument("--scorer", default=None, help="adaptive noise level: saliency | clip_pca (default)")
    p.add_argument("--scorer-model", default=None, help="clip_pca: timm export folder or weights file")
    p.add_argument("--scorer-pca", default=None, help="clip_pca: PCA file fitted on that model's tokens")
    p.add_argument("--scorer-arch", default=None, help="clip_pca: timm model name, for a weights file")
    p.add_argument("--strength", type=float, default=None, help="SDEdit (img2img kinds): latent noise in (0, 1]")
    p.add_argument("--prompt", default=None, help="text prompt (unclip, img2img; default empty)")
    p.add_argument("--size", type=int, default=None, help="square output side (default: source size / 512)")
    p.add_argument("--batch-size", type=int, default=8, help="images per pipeline call (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="global seed; each output's seed derives from it (%(default)s)")
    p.add_argument("--format", default="png", help="png (lossless, default) | webp | jpeg (quality 95)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on cuda, fp32 on cpu) | fp32 | fp16 | bf16")
    p.add_argument("--scheduler", default="auto", help="auto (the model's) | ddim | ddpm")
    p.add_argument("--num-shards", type=int, default=1, help="split the items across this many separate runs")
    p.add_argument("--shard-index", type=int, default=0, help="which of --num-shards this run is")
    p.set_defaults(func=_generate_views)


def _add_fit_foreground_pca(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-foreground-pca",
        help="fit GenView's foreground PCA of a local timm model (for --scorer clip_pca and quality_weights)",
        description="Project the patch tokens of a local timm model (a CLIP ViT in GenView) on their first "
        "principal vector, oriented so that central tokens score higher, with alpha the (1 - fg_fraction) "
        "quantile; writes a safetensors file for generate-views --scorer-pca and quality_weights.pca_path.",
    )
    p.add_argument("--model", required=True, help="timm export folder (save_for_hf) or weights file (+ --arch)")
    p.add_argument("--arch", default=None, help="timm model name with tag, for a weights file")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | image_folder")
    p.add_argument("--root", default=None, help="dataset root (image_folder: the folder of images)")
    p.add_argument("--split", default="train", help="source split: train | test (%(default)s)")
    p.add_argument("--limit", type=int, default=10_000, help="fit on the first N images (GenView: 10,000)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="common side to stack images of different sizes "
        "(default: the first image's); the model then resizes to its own input size",
    )
    p.add_argument("--fg-fraction", type=float, default=0.4, help="share of tokens above alpha (GenView: ~0.4)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model forward (%(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.set_defaults(func=_fit_foreground_pca)


def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="write an image folder as WebDataset tar shards (train with data.name=webdataset data.root=OUT)",
        description="Write the images of FOLDER (class sub-folders become labels, train/ and test/ or val/ "
        "become separate shard sets) as uncompressed WebDataset shards with their original bytes; corrupt "
        "files are skipped and counted; the shard index is built at the end.",
    )
    p.add_argument("folder", help="image folder (as for data.name=image_folder)")
    p.add_argument("--out", required=True, help="output folder for the shards (must not hold shards yet)")
    p.add_argument("--shard-size", type=int, default=10_000, help="at most this many images per shard")
    p.add_argument("--max-bytes", type=float, default=1e9, help="close a shard once it holds this many bytes")
    p.add_argument("--labels", choices=("auto", "yes", "no"), default="auto", help="auto: class sub-folders")
    p.set_defaults(func=_pack)


def _generate_views(args: argparse.Namespace) -> int:
    from ssl_toolkit.generation import generate_bank, merge_manifests, read_manifest, resolve_settings

    if args.merge_only:
        path = merge_manifests(args.out)
        print(f"merged {len(read_manifest(args.out))} rows into {path}")
        return 0
    settings = resolve_settings(
        args.generator,
        steps=args.steps,
        guidance=args.guidance,
        noise_level=args.noise_level,
        strength=args.strength,
        prompt=args.prompt,
        scorer=args.scorer,
    )
    given = {"model_path": args.scorer_model, "pca_path": args.scorer_pca, "arch": args.scorer_arch}
    scorer_kwargs = {k: v for k, v in given.items() if v is not None}
    from ssl_toolkit.errors import ConfigError

    if scorer_kwargs and not settings.adaptive:
        raise ConfigError("--scorer-model/--scorer-pca/--scorer-arch only apply with --noise-level adaptive")
    if settings.scorer == "clip_pca" and (args.scorer_model is None or args.scorer_pca is None):
        raise ConfigError(
            "--scorer clip_pca (the default adaptive scorer) needs --scorer-model PATH and --scorer-pca PATH "
            "(a local timm model and its foreground PCA); or use --scorer saliency"
        )
    result = generate_bank(
        args.out,
        settings,
        model=args.model,
        source=args.source if settings.needs_source else None,
        root=args.root,
        split=args.split,
        variants=args.variants,
        limit=args.limit,
        num_unconditional=args.num_unconditional,
        size=args.size,
        batch_size=args.batch_size,
        seed=args.seed,
        image_format=args.format,
        device=args.device,
        dtype=args.dtype,
        scheduler=args.scheduler,
        scorer_kwargs=scorer_kwargs,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
    )
    if _is_main_process():
        print(result.summary())
        if args.num_shards > 1:
            print(f"shard {args.shard_index} of {args.num_shards} done; when all are, run: "
                  f"ssl-toolkit generate-views --merge-only --out {args.out}")  # fmt: skip
    return 1 if result.invalid else 0


def _fit_foreground_pca(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ssl_toolkit.generation.foreground import fit_foreground_pca_from_images, save_foreground_pca
    from ssl_toolkit.generation.sources import Sources

    sources = Sources(args.source, split=args.split, root=args.root, limit=args.limit)
    if len(sources) == 0:
        from ssl_toolkit.errors import ConfigError

        raise ConfigError(f"no source images in {args.source} ({args.root or 'default root'}), split {args.split}")
    side = args.size or max(sources.image(0).size)  # one side so batches stack; the model resizes again
    batches = []  # uint8 (B, 3, side, side); read twice by the fit (covariance, then alpha)
    for start in range(0, len(sources), args.batch_size):
        arrays = [
            np.asarray(sources.image(i).convert("RGB").resize((side, side)), dtype=np.uint8)
            for i in range(start, min(start + args.batch_size, len(sources)))
        ]
        batches.append(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())
    pca = fit_foreground_pca_from_images(
        args.model, batches, arch=args.arch, fg_fraction=args.fg_fraction, device=args.device
    )
    path = save_foreground_pca(args.out, pca)
    print(f"foreground PCA of {pca.model_name or args.model} on {len(sources)} images "
          f"(alpha {pca.alpha:.4g}, fg_fraction {pca.fg_fraction}) -> {path}")  # fmt: skip
    return 0


def _pack(args: argparse.Namespace) -> int:
    from ssl_toolkit.data.pack import pack_folder

    labelled = {"auto": None, "yes": True, "no": False}[args.labels]
    result = pack_folder(args.folder, args.out, shard_size=args.shard_size, max_bytes=args.max_bytes, labelled=labelled)
    print(result.summary())
    return 0
