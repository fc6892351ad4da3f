"""Embedding statistics against numpy's own norms and standard deviations."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.eval import embedding_stats


def test_matches_numpy_and_counts_dead_dimensions() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 10)) * np.array([1, 2, 3, 4, 5, 6, 7, 8, 1e-5, 0]) + 4.0
    stats = embedding_stats(z.astype(np.float32))
    std = z.std(axis=0)
    assert stats["norm_mean"] == pytest.approx(np.linalg.norm(z, axis=1).mean(), rel=1e-6)
    assert stats["dim_std_mean"] == pytest.approx(std.mean(), rel=1e-5)
    assert stats["dim_std_max"] == pytest.approx(std.max(), rel=1e-5)
    assert stats["dim_std_min"] == pytest.approx(0.0, abs=1e-6)
    assert stats["dead_fraction"] == pytest.approx(0.2)  # 1e-5 and 0 are below 1e-4 x the largest std (~8)


def test_collapsed_and_bad_input() -> None:
    collapsed = embedding_stats(np.ones((20, 4)))
    assert collapsed["dead_fraction"] == 1.0 and collapsed["norm_mean"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="2-D"):
        embedding_stats(np.ones(4))
    with pytest.raises(ConfigError, match="NaN"):
        embedding_stats(np.full((3, 2), np.inf))
