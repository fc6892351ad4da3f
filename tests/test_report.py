"""The run report on a run that has not been evaluated: every available part drawn, the missing ones named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_toolkit import config, engine
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.report import write_report
from tests.engine.helpers import make_image_folder

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tests" / "tiny.yaml"


def test_report_of_an_unevaluated_run_says_what_is_missing(tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    data = make_image_folder(tmp_path / "images")
    cfg = config.load(
        TINY,
        [f"data.root={data}", f"train.output_dir={tmp_path / 'runs'}", "eval.after_train=false",
         "objective={name: simclr, temperature: {kind: cosine, start: 0.5, end: 0.1}}"],
    )  # fmt: skip
    run = engine.train(cfg)
    page = write_report(run, n_queries=3, bank_size=16).read_text()
    assert page.count("data:image/png;base64,") == 3  # curves (with the τ panel), views, neighbours
    assert "no monitor.csv" in page and "no metrics.json" in page
    assert (run / "report_curves.png").is_file() and not (run / "report_monitor.png").exists()


def test_report_of_a_folder_that_is_not_a_run_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no recipe.yaml"):
        write_report(tmp_path)
