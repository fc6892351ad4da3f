"""``ssl-toolkit list objectives|backbones|presets|augmentations|recipes``: what a recipe can name, one line each.

Everything is read without torch: the objectives' defaults come from their constructors' source
(`ssl_toolkit.objective_signatures`), or from the imported classes when a plug-in objective is installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# timm families known to work as encoders (model.backbone): names, the backbone_kwargs they need, the smallest
# view side they take, and what they suit; tests/test_cli_list.py builds the first name of each with its kwargs
# and runs views of that side and twice it through it
BACKBONES: tuple[tuple[tuple[str, ...], dict[str, Any], int, str], ...] = (
    (("resnet18", "resnet34", "resnet50"), {}, 32, "timm ResNets with the ImageNet stem, best from 64 px"),
    (("resnet10_small_input", "resnet18_small_input", "resnet34_small_input", "resnet50_small_input"), {}, 8,
     "3x3 stem, no max-pool (= model.small_input=true), for 28-32 px images; backbone_kwargs {stem_stride: 2} "
     "quarters the cost; resnet10 (one block per stage) is the Fashion-MNIST default's"),
    (("resnet10t",), {"channels": [8, 16, 32, 64], "stem_width": 8}, 16,
     "tiny ResNet (the test recipe); channels/stem_width shrink any timm ResNet"),
    (("vit_small_patch16_224", "vit_tiny_patch16_224", "vit_base_patch16_224"), {"dynamic_img_size": True}, 16,
     "ViT; dynamic_img_size lets views of several sizes through (multi-crop)"),
    (("convnext_atto", "convnext_nano", "convnext_tiny"), {}, 32, "ConvNeXt"),
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="what a recipe can name: objectives, backbones, view presets, augmentations, shipped recipes",
        description="One line per entry. objectives: their parameters and defaults (objective.<key>); backbones: "
        "timm families known to work (model.backbone, model.backbone_kwargs); presets: view-group lists (views); "
        "augmentations: view augment presets (views[].augment); recipes: recipes shipped with the package.",
    )
    p.add_argument("what", nargs="?", type=_plural, choices=tuple(LISTERS),
                   help="what to list: %(choices)s (none: these kinds)")  # fmt: skip
    p.set_defaults(func=run_list)


def _plural(word: str) -> str:
    """``backbone`` -> ``backbones``: the singular names the same list."""
    return f"{word}s" if f"{word}s" in LISTERS else word


KINDS = {
    "recipes": "the recipes that ship with the package (ssl-toolkit train NAME)",
    "objectives": "objectives and their parameters (objective.name, objective.<key>)",
    "backbones": "timm encoders known to work (model.backbone, model.backbone_kwargs)",
    "presets": "view-group presets (views=<preset>)",
    "augmentations": "augmentation presets of a view group (views[].augment)",
}


def run_list(args: argparse.Namespace) -> int:
    if args.what is None:
        print("ssl-toolkit list WHAT, with WHAT one of:")
        print("\n".join(f"  {kind:<14} {what}" for kind, what in KINDS.items()))
        return 0
    print("\n".join(LISTERS[args.what]()))
    return 0


def _value(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _objective_kwargs() -> tuple[dict[str, dict[str, Any]], dict[str, str], Any]:
    """Every objective's keyword arguments, FACTS and the no-default marker: read from the source files when
    only the built-in objectives exist (no torch import), else from the imported classes."""
    import importlib.metadata

    from ssl_toolkit import objective_signatures as static

    try:
        if not importlib.metadata.entry_points(group=static.entry_point_group()):
            table = static.builtin_objectives()
            return {n: static.constructor_kwargs(*where) for n, where in table.items()}, static.facts(), static.MISSING
    except (LookupError, OSError, SyntaxError, ValueError):
        pass  # something the reader does not follow: import instead
    from ssl_toolkit.objectives import ENTRY_POINT_GROUP, FACTS, OBJECTIVES, REQUIRED, objective_kwargs

    names = [*OBJECTIVES, *sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))]
    return {name: objective_kwargs(name) for name in dict.fromkeys(names)}, FACTS, REQUIRED


def list_objectives() -> list[str]:
    kwargs, facts, required = _objective_kwargs()
    lines = []
    for name, accepted in kwargs.items():
        params = []
        for key, default in accepted.items():
            if key == "gather_distributed":  # every objective has it; True is right
                continue
            shown = ("<filled in>" if key in facts else "<required>") if default is required else _value(default)
            params.append(f"{key}={shown}")
        lines.append(f"{name:<9} {', '.join(params)}")
    return [*lines, "", "<filled in>: set from the model, views or data; papers and details: docs/objectives.md"]


def list_backbones() -> list[str]:
    import yaml

    lines = []
    for names, kwargs, smallest, what in BACKBONES:
        given = f" + backbone_kwargs {yaml.safe_dump(kwargs, default_flow_style=True).strip()}" if kwargs else ""
        lines.append(f"{' | '.join(names)}{given}: {what} (views >= {smallest} px)")
    return [*lines, "", "any other timm model name works too if it takes num_classes=0 (validation checks the name)"]


def list_presets() -> list[str]:
    from ssl_toolkit.data.view_specs import VIEW_PRESETS
    from ssl_toolkit.run_summary import views_text

    lines = []
    for name, groups in VIEW_PRESETS.items():
        detail = "; ".join(
            f"{g['name']} scale {g['scale']}" + (f" strength {g['strength']}" if "strength" in g else "")
            + (f" blur_p {g['blur_p']}" if "blur_p" in g else "")
            for g in groups
        )  # fmt: skip
        lines.append(f"{name:<15} {views_text(groups):<12} {detail}")
    return [*lines, "", "use: views=<preset>, or list the groups yourself (ssl-toolkit train --help)"]


AUGMENT_KINDS = {
    "simclr": "SimCLR: random resized crop, flip, colour jitter, greyscale, blur",
    "simclr_weak": "AdaInf's weaker SimCLR, for inflated data",
}


def list_augmentations() -> list[str]:
    from ssl_toolkit.data.view_specs import PRESET_DEFAULTS, validated_view_args

    lines = []
    for name in PRESET_DEFAULTS:
        if name not in AUGMENT_KINDS:
            lines.append(f"{name:<12} resize and normalise only (no randomness)")
            continue
        small, large = (validated_view_args(augment=name, size=s, mean=(0.0,), std=(1.0,)) for s in (32, 224))
        lines.append(
            f"{name:<12} {AUGMENT_KINDS[name]}; scale={list(large['scale'])} strength={large['strength']} "
            f"jitter_p={large['jitter_p']} gray_p={large['gray_p']} blur_p={large['blur_p']} above 32 px, "
            f"{small['blur_p']} up to 32 px"
        )
    return [*lines, "", "use: views[].augment; any key given in a view group overrides the preset's"]


def list_recipes() -> list[str]:
    import yaml

    from ssl_toolkit.recipe_files import recipes_dir, shipped_recipes
    from ssl_toolkit.run_summary import views_text

    lines = []
    for name, path in shipped_recipes().items():
        raw = yaml.safe_load(path.read_text()) or {}
        objective = (raw.get("objective") or {}).get("name", "simclr")
        model = raw.get("model") or {}
        views = raw.get("views")
        views = views if isinstance(views, str) else views_text(views) if views else "2x224"
        small = " (small input)" if model.get("small_input") else ""
        epochs = (raw.get("train") or {}).get("epochs", "?")
        data = (raw.get("data") or {}).get("name", "fashion_mnist")
        lines.append(f"{name:<36} {objective} on {data}, {model.get('backbone', 'resnet18')}{small}, views {views}, "
                     f"{epochs} epochs")  # fmt: skip
    return [*lines, "", f"from {recipes_dir()}; run one with: ssl-toolkit train NAME [key=value ...]"]


LISTERS: dict[str, Callable[[], list[str]]] = {
    "objectives": list_objectives,
    "backbones": list_backbones,
    "presets": list_presets,
    "augmentations": list_augmentations,
    "recipes": list_recipes,
}
