"""Evaluation of frozen encoders: label-based (k-NN with FAISS, linear probe) and label-free (RankMe, alpha-ReQ,
LiDAR, embedding statistics), on numpy arrays or torch tensors.

Definitions: ``docs/evaluation.md``; each module states its protocol and sources; every default lives in
`ssl_toolkit.eval.defaults`. The names below are imported on first use (PEP 562), so that
``import ssl_toolkit.eval.defaults`` (the command line's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "alpha_req": "ssl_toolkit.eval.alpha_req",
    "covariance_eigenvalues": "ssl_toolkit.eval.alpha_req",
    "power_law_fit": "ssl_toolkit.eval.alpha_req",
    "embedding_stats": "ssl_toolkit.eval.stats",
    "evaluate": "ssl_toolkit.eval.run",
    "extract_features": "ssl_toolkit.eval.features",
    "extract_view_features": "ssl_toolkit.eval.features",
    "format_table": "ssl_toolkit.eval.run",
    "knn_accuracy": "ssl_toolkit.eval.knn",
    "knn_classify": "ssl_toolkit.eval.knn",
    "knn_protocols": "ssl_toolkit.eval.knn",
    "label_free_metrics": "ssl_toolkit.eval.run",
    "lidar": "ssl_toolkit.eval.lidar",
    "linear_probe": "ssl_toolkit.eval.linear",
    "rankme": "ssl_toolkit.eval.rankme",
    "score_features": "ssl_toolkit.eval.run",
    "search_topk": "ssl_toolkit.eval.knn",
    "singular_values": "ssl_toolkit.eval.rankme",
}

__all__ = [
    "alpha_req",
    "covariance_eigenvalues",
    "embedding_stats",
    "evaluate",
    "extract_features",
    "extract_view_features",
    "format_table",
    "knn_accuracy",
    "knn_classify",
    "knn_protocols",
    "label_free_metrics",
    "lidar",
    "linear_probe",
    "power_law_fit",
    "rankme",
    "score_features",
    "search_topk",
    "singular_values",
]  # = sorted(_EXPORTS); a test checks it

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from ssl_toolkit.eval.alpha_req import alpha_req, covariance_eigenvalues, power_law_fit
    from ssl_toolkit.eval.features import extract_features, extract_view_features
    from ssl_toolkit.eval.knn import knn_accuracy, knn_classify, knn_protocols, search_topk
    from ssl_toolkit.eval.lidar import lidar
    from ssl_toolkit.eval.linear import linear_probe
    from ssl_toolkit.eval.rankme import rankme, singular_values
    from ssl_toolkit.eval.run import evaluate, format_table, label_free_metrics, score_features
    from ssl_toolkit.eval.stats import embedding_stats


class _Package(types.ModuleType):
    """Keeps ``ssl_toolkit.eval.rankme`` (and ``lidar``, ``alpha_req``) the function, not the submodule.

    Importing a submodule binds its name on the package; where a function has the same name, the function
    wins, as it did when this package imported everything eagerly. ``sys.modules`` keeps the submodules.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__ and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssl_toolkit.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
