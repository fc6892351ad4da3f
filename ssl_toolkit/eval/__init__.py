"""Label-free and label-based evaluation of frozen encoders: k-NN (FAISS), linear probe, RankMe.

Definitions are in docs/architecture.md ("Evaluation definitions"); each module states its protocol.
"""

from __future__ import annotations

from ssl_toolkit.eval.knn import knn_accuracy, knn_classify
from ssl_toolkit.eval.linear import linear_probe
from ssl_toolkit.eval.rankme import rankme

__all__ = ["knn_accuracy", "knn_classify", "linear_probe", "rankme"]
