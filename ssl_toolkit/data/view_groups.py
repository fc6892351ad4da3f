"""Recipe view groups -> one transform per view, from either backend.

``per_image`` (``views.py``, torchvision in the loader workers, any image size) or ``batched``
(``batched_views.py``, a whole batch of images of any sizes per call, in the collate or on the GPU). Both build
from the same checked arguments (``view_specs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ssl_toolkit.data.view_specs import count_global_views, parse_view_groups, transform_args, view_kinds


def build_view_transforms(
    groups: Sequence[Mapping[str, Any]],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    greyscale: bool = False,
    batched: bool = False,
) -> tuple[list[Callable], tuple[str, ...], int]:
    """Expand view groups (see `view_specs.parse_view_groups`) into per-view transforms.

    With ``batched=True`` each transform takes a whole uint8 batch (B, 3, H, W), or a list of B images of any
    sizes, and draws its randomness per image; otherwise one image (3, H, W).

    Returns:
        ``(transforms, view_kinds, n_global)``: one transform per view (group order, ``n`` each), the group
        name of each view, and the number of global views.

    Raises:
        ConfigError: see `view_specs.parse_view_groups` and `view_specs.validated_view_args`.
    """
    groups = parse_view_groups(list(groups))
    if batched:
        from ssl_toolkit.data.batched_views import build_batch_view_transform as build
    else:
        from ssl_toolkit.data.views import build_view_transform as build
    transforms: list[Callable] = []
    for group in groups:
        transforms += [build(**transform_args(group), mean=mean, std=std, greyscale=greyscale)] * group["n"]
    return transforms, view_kinds(groups), count_global_views(groups)
