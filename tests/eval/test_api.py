"""The public surface of ssl_toolkit.eval: lazy import, numpy or torch everywhere, one home for defaults,
docstrings that point only at files in the repository."""

from __future__ import annotations

import argparse
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_toolkit.eval as ev
from ssl_toolkit import config
from ssl_toolkit.eval import defaults

REPO = Path(__file__).resolve().parents[2]


def test_defaults_module_and_the_package_import_without_torch() -> None:
    # ssl_toolkit/__init__.py is bypassed (a bare package object) so that only eval/ is measured
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('ssl_toolkit'); pkg.__path__ = [{str(REPO / 'ssl_toolkit')!r}]\n"
        "sys.modules['ssl_toolkit'] = pkg\n"
        "import ssl_toolkit.eval.defaults, ssl_toolkit.eval\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'faiss', 'timm') if m in sys.modules)\n"
        "print(heavy, ssl_toolkit.eval.defaults.LINEAR_LRS)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] (1.0, 0.3, 0.1, 0.03)"


def test_lazy_exports_resolve_to_the_functions() -> None:
    assert ev.__all__ == sorted(ev._EXPORTS)
    for name in ev.__all__:
        value = getattr(ev, name)
        assert callable(value) and not inspect.ismodule(value), name
    import ssl_toolkit.eval.rankme  # noqa: F401  (binding the submodule must not shadow the function)

    assert ev.rankme is sys.modules["ssl_toolkit.eval.rankme"].rankme
    assert ev.extract_features is sys.modules["ssl_toolkit.eval.features"].extract_features
    with pytest.raises(AttributeError):
        ev.not_a_function  # noqa: B018


def test_every_array_function_takes_numpy_and_torch_alike() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 24)).astype(np.float32)
    y = np.arange(300) % 3
    z[np.arange(300), y] += 3.0
    views = rng.standard_normal((40, 4, 24))
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    for fn in (ev.rankme, ev.alpha_req, ev.embedding_stats, ev.singular_values, ev.covariance_eigenvalues):
        a, b = fn(z), fn(zt)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), fn.__name__
        else:
            assert a == b, fn.__name__
    assert ev.lidar(views) == ev.lidar(torch.from_numpy(views))
    assert ev.knn_accuracy(z, y, z[:50], y[:50], protocol="dino") == ev.knn_accuracy(
        zt, yt, zt[:50], yt[:50], protocol="dino"
    )
    assert ev.knn_protocols(z, y, z[:50], y[:50]) == ev.knn_protocols(zt, yt, zt[:50], yt[:50])
    assert (
        ev.linear_probe(z, y, z[:50], y[:50], epochs=2)["top1"]
        == ev.linear_probe(zt, yt, zt[:50], yt[:50], epochs=2)["top1"]
    )
    assert ev.score_features(z, y, z[:50], y[:50], linear_epochs=1, rankme_samples=200) == ev.score_features(
        zt, yt, zt[:50], yt[:50], linear_epochs=1, rankme_samples=200
    )
    s_np, i_np = ev.search_topk(z, z[:5], 3)
    s_t, i_t = ev.search_topk(zt, zt[:5], 3)
    assert torch.equal(i_np, i_t) and torch.equal(s_np, s_t)


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def test_one_home_for_the_defaults() -> None:
    from ssl_toolkit.cli import build_parser
    from ssl_toolkit.evaluate import evaluate_encoder_dir

    ec = config.EvalConfig()
    assert tuple(ec.linear_lrs) == defaults.LINEAR_LRS == _default(ev.linear_probe, "lrs")
    assert (
        _default(evaluate_encoder_dir, "linear_lrs")
        == _default(ev.score_features, "linear_lrs")
        == (defaults.LINEAR_LRS)
    )
    assert ec.linear_epochs == _default(ev.linear_probe, "epochs") == _default(evaluate_encoder_dir, "linear_epochs")
    assert ec.rankme_samples == _default(evaluate_encoder_dir, "rankme_samples") == defaults.RANKME_SAMPLES
    assert ec.batch_size == _default(evaluate_encoder_dir, "batch_size") == defaults.EVAL_BATCH_SIZE
    assert (ec.lidar_samples, ec.lidar_views) == (defaults.LIDAR_SAMPLES, defaults.LIDAR_VIEWS)
    assert ec.floors == _default(evaluate_encoder_dir, "floors") == defaults.FLOORS
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    args = sub.choices["eval"].parse_args(["ENC"])
    assert tuple(args.linear_lrs) == defaults.LINEAR_LRS and args.linear_epochs == defaults.LINEAR_EPOCHS
    assert (args.rankme_samples, args.lidar_samples, args.lidar_views, args.batch_size) == (
        defaults.RANKME_SAMPLES, defaults.LIDAR_SAMPLES, defaults.LIDAR_VIEWS, defaults.EVAL_BATCH_SIZE,
    )  # fmt: skip
    assert args.dataset is None and args.root is None  # the export's own data unless given
    for action in sub.choices["eval"]._actions:
        assert action.help, f"eval option {action.dest} has no help text"


_PATH = re.compile(r"\b((?:docs|ssl_toolkit|tests|benchmarks|eval|recipes)/[\w./-]+\.(?:md|py|yaml|json))")


def test_docstrings_point_only_at_files_in_the_repository() -> None:
    sources = sorted((REPO / "ssl_toolkit" / "eval").glob("*.py")) + [REPO / "ssl_toolkit" / "evaluate.py"]
    cited = {(src.name, m) for src in sources for m in _PATH.findall(src.read_text())}
    assert cited, "the pattern found no path at all"
    missing = sorted((src, path) for src, path in cited if not (REPO / path).exists())
    assert missing == []
    for src in sources:
        text = src.read_text()
        assert "architecture.md" not in text and "shared/" not in text and "specs/" not in text, src.name


def test_recipe_lidar_settings_are_validated(tmp_path: Path) -> None:
    tiny = REPO / "recipes" / "tests" / "tiny.yaml"
    assert config.load(tiny, [f"data.root={tmp_path}", "eval.lidar_samples=0"]).eval.lidar_samples == 0  # off
    for bad in ("eval.lidar_views=1", "eval.lidar_samples=1", "eval.lidar_samples=-3"):
        with pytest.raises(config.ConfigError, match="LiDAR needs"):
            config.load(tiny, [f"data.root={tmp_path}", bad])
