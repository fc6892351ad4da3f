"""The objective registry: names, keyword checking and plug-ins."""

from __future__ import annotations

import pytest

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import OBJECTIVES, Objective, build_objective, objective_kwargs

REQUIRED_KWARGS = {"isogclr": {"dataset_size": 10}}  # what has no sensible default


def test_every_registered_objective_builds_with_defaults() -> None:
    for name in OBJECTIVES:
        assert isinstance(build_objective({"name": name, **REQUIRED_KWARGS.get(name, {})}), Objective)


def test_unknown_name_lists_accepted() -> None:
    with pytest.raises(ConfigError, match="accepted: .*simclr"):
        build_objective("simclrr")


def test_unknown_kwarg_lists_accepted() -> None:
    with pytest.raises(ConfigError, match="tau.*accepted: temperature, gather_distributed"):
        build_objective({"name": "simclr", "tau": 0.1})


def test_overrides_win_and_plugin_strings_resolve() -> None:
    obj = build_objective({"name": "ssl_toolkit.objectives.simclr:SimCLR", "temperature": 0.5}, temperature=0.2)
    assert obj.temperature.value == 0.2
    assert objective_kwargs("simclr") == {"temperature": 0.1, "gather_distributed": True, "positives": "global"}


def test_bad_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="temperature must be a number > 0"):
        build_objective("simclr", temperature=0)
