"""What the builders know that an objective may need: the facts filled into its constructor.

An objective declares a fact by naming a keyword-only constructor argument after it, without a default
(SwAV's ``proj_dim`` and ``n_global``, iSogCLR's ``dataset_size``). `build_objective` fills it in when the
recipe leaves it out, and a recipe value that contradicts it is a `ConfigError`, so a recipe never restates
what the model and the views already say. This module is the one place that says how each fact is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# fact -> where it comes from (as a recipe reader would name it, for messages)
FACTS: dict[str, str] = {
    "proj_dim": "model.projector_out",
    "n_views": "the views' count",
    "n_global": "the global views' count",
    "dataset_size": "the training images' count",
}


def builder_facts(
    *,
    projector_out: int,
    view_groups: Sequence[Mapping[str, Any]],
    dataset_size: int | None = None,
) -> dict[str, int]:
    """The facts of a recipe: projector width, number of views and of global views, and (once the data is
    built) the number of training images, which bounds ``ctx.ids``.

    Args:
        projector_out: ``model.projector_out``.
        view_groups: the recipe's view groups (``{name, n, size, ...}`` mappings, global groups first).
        dataset_size: the number of training images; None before the data is built.
    """
    from ssl_toolkit.data.view_specs import count_global_views

    facts = {
        "proj_dim": int(projector_out),
        "n_views": sum(int(group["n"]) for group in view_groups),
        "n_global": count_global_views(view_groups),
    }
    if dataset_size is not None:
        facts["dataset_size"] = int(dataset_size)
    return facts
