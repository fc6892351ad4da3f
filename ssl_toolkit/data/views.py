"""View transforms: augmentation presets, recipe view groups -> per-view transforms, the eval transform.

Everything is torchvision ``transforms.v2`` on uint8 (3, H, W) tensors, ending in float32 normalised
images. Each view gets its own transform, drawn per sample inside ``ViewDataset`` (which seeds the torch
RNG per sample; see ``view_dataset.py``). ``collate_views`` keeps one tensor per view so the model can run
one forward per resolution group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssl_toolkit.data.image_folder import as_triple
from ssl_toolkit.errors import ConfigError

_GROUP_KEYS = ("name", "n", "size", "scale", "augment", "strength", "jitter_p", "gray_p", "blur_p", "source")
_TRANSFORM_KEYS = ("size", "scale", "augment", "strength", "jitter_p", "gray_p", "blur_p")


class ResizeIfNeeded:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop, unless already ``size`` square."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[-2:] == (self.size, self.size):
            return image
        image = TF.resize(image, [self.size], antialias=True)
        return TF.center_crop(image, [self.size, self.size])

    def __repr__(self) -> str:
        return f"ResizeIfNeeded(size={self.size})"


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian-blur kernel of about 10 % of the image side (SimCLR), at least 3."""
    k = max(3, int(0.1 * size))
    return k + 1 - k % 2


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def _simclr(
    *,
    size: int,
    scale: tuple[float, float],
    strength: float,
    jitter_p: float,
    gray_p: float,
    blur_p: float,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
) -> Callable:
    s = strength
    # On greyscale images saturation and hue jitter and RandomGrayscale are identities (up to rounding),
    # and hue is most of the jitter's cost, so they are left out there.
    jitter = v2.ColorJitter(0.8 * s, 0.8 * s) if greyscale else v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    steps: list[Callable] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=jitter_p),
    ]
    if not greyscale:
        steps.append(v2.RandomGrayscale(p=gray_p))
    if blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_p))
    return v2.Compose(steps + _finish(mean, std))


def _none(*, size: int, mean: Sequence[float], std: Sequence[float], **_unused: object) -> Callable:
    return v2.Compose([ResizeIfNeeded(size), *_finish(mean, std)])


AUGMENT_PRESETS: dict[str, Callable[..., Callable]] = {
    "simclr": _simclr,
    # AdaInf's weaker SimCLR augmentation for training on inflated (real + generated) data (Wang, Zhang & Wang,
    # ICLR 2024, symmetric_adainf.yaml; views_eval_spec.md §3.3): the same steps with other defaults
    "simclr_weak": _simclr,
    "none": _none,
}

# Defaults of the keys a view group may leave out, per preset; a value the recipe gives always wins.
PRESET_DEFAULTS: dict[str, dict[str, object]] = {
    "simclr": {"scale": (0.08, 1.0), "strength": 1.0, "jitter_p": 0.8},
    # min scale 0.08 -> 0.2, jitter p 0.8 -> 0.4, jitter (0.8, 0.8, 0.8, 0.2) -> (0.4, 0.4, 0.4, 0.1)
    "simclr_weak": {"scale": (0.2, 1.0), "strength": 0.5, "jitter_p": 0.4},
    "none": {"scale": (0.08, 1.0), "strength": 1.0, "jitter_p": 0.8},
}


# Named view-group lists a recipe can give as ``views: <name>`` (or the override ``views=<name>``).
VIEW_PRESETS: dict[str, list[dict]] = {
    # SwAV's multi-crop (official multicropdataset.py; spec §2.1): 2 x 224 (0.14, 1) + 6 x 96 (0.05, 0.14)
    "multicrop": [
        {"name": "global", "n": 2, "size": 224, "scale": [0.14, 1.0], "augment": "simclr"},
        {"name": "local", "n": 6, "size": 96, "scale": [0.05, 0.14], "augment": "simclr"},
    ],
    # 32 px images (solo-learn cifar-multicrop swav.yaml, spec §2.2): 2 x 32 (0.2, 1) with jitter 0.6 + 6 x 18
    # (0.08, 0.5) with jitter 0.8 and blur 0.1; solo-learn's solarisation is not a preset option here
    "multicrop_small": [
        {"name": "global", "n": 2, "size": 32, "scale": [0.2, 1.0], "augment": "simclr", "strength": 0.75},
        {"name": "local", "n": 6, "size": 18, "scale": [0.08, 0.5], "augment": "simclr", "blur_p": 0.1},
    ],
    # 28 px greyscale images (the default Fashion-MNIST recipe, tuned in eval/RESULTS.md)
    "multicrop_28": [
        {"name": "global", "n": 2, "size": 28, "scale": [0.4, 1.0], "augment": "simclr", "strength": 0.5},
        {"name": "local", "n": 4, "size": 14, "scale": [0.1, 0.4], "augment": "simclr", "strength": 0.5},
    ],
}


def view_preset(name: str) -> list[dict]:
    """A copy of the view groups of preset ``name`` (see `VIEW_PRESETS`).

    Raises:
        ConfigError: unknown name (the message lists the presets).
    """
    if name not in VIEW_PRESETS:
        raise ConfigError(f"unknown views preset {name!r}; accepted: {', '.join(VIEW_PRESETS)} or a list of groups")
    return [dict(group) for group in VIEW_PRESETS[name]]


def _probability(value: float, what: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value}")
    return float(value)


def validated_view_args(
    *,
    augment: str = "simclr",
    size: int,
    scale: Sequence[float] | None = None,
    strength: float | None = None,
    jitter_p: float | None = None,
    gray_p: float = 0.2,
    blur_p: float | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
) -> dict:
    """Check one view's settings and fill in the defaults; the arguments of `build_view_transform`.

    Shared by the per-image (torchvision) and batched (kornia, ``batched_views.py``) pipelines so both
    accept and reject exactly the same recipes.

    Raises:
        ConfigError: unknown preset, ``size < 1``, bad scale, strength or probabilities.
    """
    if augment not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augment preset {augment!r}; accepted: {', '.join(AUGMENT_PRESETS)}")
    defaults = PRESET_DEFAULTS[augment]
    scale = defaults["scale"] if scale is None else scale  # type: ignore[assignment]
    strength = defaults["strength"] if strength is None else strength  # type: ignore[assignment]
    jitter_p = defaults["jitter_p"] if jitter_p is None else jitter_p  # type: ignore[assignment]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"view size must be an integer >= 1, got {size!r}")
    try:
        lo, hi = (float(x) for x in scale)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"scale must be two numbers with 0 < a <= b <= 1, got {list(scale)}")
    if not 0.0 <= float(strength) <= 2.5:
        raise ConfigError(f"strength must be in [0, 2.5] (hue jitter 0.2*strength <= 0.5), got {strength}")
    blur = (0.5 if size > 32 else 0.0) if blur_p is None else _probability(blur_p, "blur_p")
    return {
        "augment": augment,
        "size": size,
        "scale": (lo, hi),
        "strength": float(strength),
        "jitter_p": _probability(jitter_p, "jitter_p"),
        "gray_p": _probability(gray_p, "gray_p"),
        "blur_p": blur,
        "mean": as_triple(mean, "mean"),
        "std": as_triple(std, "std"),
        "greyscale": bool(greyscale),
    }


def build_view_transform(**kwargs: object) -> Callable[[Tensor], Tensor]:
    """Build one view's transform: uint8 (3, H, W) -> float32 (3, size, size), normalised.

    Args:
        augment: a key of ``AUGMENT_PRESETS``: "simclr", "simclr_weak" (AdaInf's weaker defaults, for
            inflated data) or "none" (resize + normalise).
        size: output side in pixels.
        scale: RandomResizedCrop area range, ``0 < a <= b <= 1`` (default (0.08, 1); simclr_weak (0.2, 1)).
        strength: colour-jitter strength s, jitter (0.8s, 0.8s, 0.8s, 0.2s); in [0, 2.5] (default 1;
            simclr_weak 0.5, i.e. (0.4, 0.4, 0.4, 0.1)).
        jitter_p: probability of applying colour jitter (default 0.8; simclr_weak 0.4).
        gray_p: probability of converting to greyscale (default 0.2).
        blur_p: probability of Gaussian blur (sigma in [0.1, 2], kernel about 10 % of ``size``);
            None means 0.5 when ``size > 32`` else 0 (no blur on 28-32 px inputs, SimCLR CIFAR practice).
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        greyscale: the images are grey (3 equal channels): skip the saturation/hue jitter and
            RandomGrayscale, which cannot change them.

    Raises:
        ConfigError: see `validated_view_args`.
    """
    args = validated_view_args(**kwargs)  # type: ignore[arg-type]
    return AUGMENT_PRESETS[args.pop("augment")](**args)


def build_view_transforms(
    groups: Sequence[Mapping],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
    batched: bool = False,
) -> tuple[list[Callable], tuple[str, ...], int]:
    """Expand recipe view groups into per-view transforms.

    With ``batched=True`` each transform takes a whole uint8 batch (B, 3, H, W) and draws its randomness
    per image (``batched_views.build_batch_view_transform``); otherwise one image (3, H, W).

    Each group has ``name``, ``n``, ``size`` and optionally ``scale``, ``augment``, ``strength``,
    ``jitter_p``, ``gray_p``, ``blur_p`` (None = the ``build_view_transform`` default) and ``source``
    ("real", or "generated": cut from a bank variant, see ``generated.py``). Groups keep their order, so
    consecutive equal sizes form the model's resolution groups.

    Returns:
        ``(transforms, view_kinds, n_global)``: one transform per view (group order, ``n`` each), the
        group name of each view, and the number of global views (`count_global_views`).

    Raises:
        ConfigError: no groups, unknown or missing keys, ``n < 1``, an unknown source, the first group
            not the largest size, or any ``build_view_transform`` error.
    """
    if not groups:
        raise ConfigError("at least one view group is needed, e.g. {name: global, n: 2, size: 224}")
    transforms: list[Callable] = []
    kinds: list[str] = []
    sizes: list[int] = []
    for group in groups:
        unknown = sorted(set(group) - set(_GROUP_KEYS))
        missing = [k for k in ("name", "n", "size") if k not in group]
        if unknown or missing:
            raise ConfigError(
                f"view group {dict(group)}: unknown keys {unknown}, missing keys {missing}; "
                f"accepted: {', '.join(_GROUP_KEYS)}"
            )
        name, n = str(group["name"]), group["n"]
        source = group.get("source") or "real"
        if source not in ("real", "generated"):
            raise ConfigError(f"view group {name!r}: unknown source {source!r}; accepted: real, generated")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"view group {name!r}: n must be an integer >= 1, got {n!r}")
        kwargs = {k: group[k] for k in _TRANSFORM_KEYS if group.get(k) is not None}
        if "scale" in kwargs:
            kwargs["scale"] = tuple(kwargs["scale"])
        if batched:
            from ssl_toolkit.data.batched_views import build_batch_view_transform

            transform = build_batch_view_transform(**kwargs, mean=mean, std=std, greyscale=greyscale)
        else:
            transform = build_view_transform(**kwargs, mean=mean, std=std, greyscale=greyscale)
        transforms += [transform] * n
        kinds += [name] * n
        sizes.append(int(group["size"]))
    if sizes[0] < max(sizes):
        raise ConfigError(f"the first view group must have the largest size (global views first): {sizes}")
    return transforms, tuple(kinds), count_global_views(groups)


def count_global_views(groups: Sequence[Mapping]) -> int:
    """The number of global views: the first group's, plus a ``source: generated`` group right after it at the
    same size (GenView's pair: one real and one generated global view)."""
    n = int(groups[0]["n"])
    if (
        len(groups) > 1
        and (groups[1].get("source") or "real") == "generated"
        and groups[1]["size"] == groups[0]["size"]
    ):
        n += int(groups[1]["n"])
    return n


def view_sources(groups: Sequence[Mapping]) -> tuple[str, ...]:
    """Per view, the image it is cut from: "real" or "generated" (the group's ``source``, default real)."""
    return tuple(str(g.get("source") or "real") for g in groups for _ in range(int(g["n"])))


def build_eval_transform(*, size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Tensor], Tensor]:
    """Clean eval transform: resize (antialiased) only when not already ``size`` square, then normalise."""
    return build_view_transform(augment="none", size=size, mean=mean, std=std)


def collate_views(batch: Sequence[tuple]) -> tuple[list[Tensor], ...]:
    """Turn ``[(views, id), ...]`` into ``(list of V tensors (B, C, H, W), ids (B,) int64)``.

    Items ``(views, id, is_generated)`` (a bank in use) give ``(views, ids, is_generated (B,) bool)``.

    Shape:
        each ``views`` holds V tensors (C, H_v, W_v); the output holds V tensors (B, C, H_v, W_v).
    """
    n_views = len(batch[0][0])
    if any(len(item[0]) != n_views for item in batch):
        raise ValueError("every sample of a batch must have the same number of views")
    stacked = [torch.stack([item[0][v] for item in batch]) for v in range(n_views)]
    ids = torch.tensor([int(item[1]) for item in batch], dtype=torch.int64)
    if len(batch[0]) == 2:
        return stacked, ids
    return stacked, ids, torch.tensor([bool(item[2]) for item in batch])
