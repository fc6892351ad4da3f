"""The objective registry: names, plug-ins without code execution from data, keyword checks, facts filled in,
and the one check of a recipe's objective (`check_objective`)."""

from __future__ import annotations

import functools
import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from ssl_toolkit.errors import ConfigError
from ssl_toolkit.objectives import (
    ENTRY_POINT_GROUP,
    REQUIRED,
    build_objective,
    builder_facts,
    check_objective,
    objective_kwargs,
)
from ssl_toolkit.objectives.swav import SwAV

KNOWN = {"proj_dim": 16, "n_views": 6, "n_global": 2}
PAYLOAD = {"name": "subprocess:Popen", "args": "touch pwned", "shell": True}


def _check(spec, known=KNOWN, *, ema: bool = False, sample_weights: bool = False, allow_import: bool = False):
    return check_objective(spec, known=known, ema=ema, sample_weights=sample_weights, allow_import=allow_import)


def test_unknown_name_and_unknown_kwarg_list_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match="unknown objective 'simclrr'; accepted: .*simclr"):
        build_objective("simclrr")
    with pytest.raises(ConfigError, match="tau.*accepted: temperature, gather_distributed"):
        _check({"name": "simclr", "tau": 0.1})


def test_overrides_win_and_kwargs_show_required_arguments() -> None:
    assert build_objective({"name": "simclr", "temperature": 0.5}, temperature=0.2).temperature.value == 0.2
    assert objective_kwargs("simclr") == {"temperature": 0.1, "gather_distributed": True, "positives": "global"}
    kwargs = objective_kwargs("swav")
    assert kwargs["proj_dim"] is REQUIRED and kwargs["n_global"] is REQUIRED and repr(REQUIRED) == "required"
    assert objective_kwargs("isogclr")["dataset_size"] is REQUIRED


def test_bad_value_is_a_config_error_at_build() -> None:
    with pytest.raises(ConfigError, match="temperature must be a number > 0"):
        build_objective("simclr", temperature=0)


def test_facts_are_filled_in_and_a_contradiction_is_one_line() -> None:
    swav = build_objective({"name": "swav", "n_prototypes": 8}, known=KNOWN)
    assert swav.prototypes.in_features == 16 and swav.n_global == 2
    same = build_objective({"name": "swav", "n_prototypes": 8, "proj_dim": 16}, known=KNOWN)  # agreeing is fine
    assert same.prototypes.in_features == 16
    message = "objective.proj_dim=64 contradicts model.projector_out=16; leave it out, it is filled in"
    for call in (_check, lambda spec: build_objective(spec, known=KNOWN)):
        with pytest.raises(ConfigError, match=message):
            call({"name": "mochi", "proj_dim": 64})
    with pytest.raises(ConfigError, match="needs dataset_size, filled in by the builders"):
        build_objective("isogclr", known=KNOWN)  # the data is not built: nothing to fill in
    assert build_objective("isogclr", known={**KNOWN, "dataset_size": 10}).dataset_size == 10


def test_builder_facts_read_the_views() -> None:
    groups = [{"name": "global", "n": 2, "size": 28}, {"name": "local", "n": 4, "size": 14}]
    assert builder_facts(projector_out=128, view_groups=groups) == {"proj_dim": 128, "n_views": 6, "n_global": 2}
    assert builder_facts(projector_out=8, view_groups=groups, dataset_size=5)["dataset_size"] == 5


@pytest.mark.parametrize(
    ("spec", "known", "kwargs", "message"),
    [
        ("mochi", {**KNOWN, "n_views": 2}, {}, "objective 'mochi' needs an EMA branch: set model.ema=true"),
        ("swav", {**KNOWN, "n_global": 1}, {}, None),  # one global view is enough for swav
        (
            "mochi",
            {**KNOWN, "n_views": 2, "n_global": 1},
            {"ema": True},
            "'mochi' needs >= 2 global views, the views give 1",
        ),
        ("simclr", {**KNOWN, "n_views": 1, "n_global": 1}, {}, "'simclr' needs >= 2 views, the views give 1"),
        ("isogclr", KNOWN, {}, "'isogclr' uses 2 views, the views give 6; drop the other view groups"),
        ("swav", KNOWN, {"sample_weights": True}, "'swav' does not take per-sample weights; use one that does"),
        ("dclw", KNOWN, {"sample_weights": True}, None),
    ],
)
def test_class_attributes_are_checked_against_the_recipe(spec, known, kwargs, message) -> None:
    if message is None:
        _check(spec, known, **kwargs)
    else:
        with pytest.raises(ConfigError, match=message):
            _check(spec, known, **kwargs)


def test_check_constructs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    @functools.wraps(SwAV.__init__)  # the same signature, read by the check
    def refuse(*args, **kwargs):
        raise AssertionError("check_objective constructed the objective")

    monkeypatch.setattr(SwAV, "__init__", refuse)
    assert _check({"name": "swav", "n_prototypes": 3000, "proj_dim": 16}) is SwAV


def _record_imports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    imported: list[str] = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    return imported


@pytest.mark.parametrize("allow_import", [False, True])
def test_a_payload_in_a_recipe_is_never_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow_import: bool
) -> None:
    """``subprocess`` is imported already (naming it runs nothing): Popen is refused before it is called."""
    monkeypatch.chdir(tmp_path)
    imported = _record_imports(monkeypatch)
    for call in (_check, lambda spec, **kw: build_objective(spec, known=KNOWN, **kw)):
        with pytest.raises(ConfigError, match="is <class 'subprocess.Popen'>, not a subclass of .*Objective"):
            call(PAYLOAD, allow_import=allow_import)
    assert imported == []
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("allow_import", [False, True])
def test_a_module_is_imported_only_with_allow_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow_import: bool
) -> None:
    """A module planted next to the data (its import would create a file) is imported only when allowed."""
    (tmp_path / "planted_payload.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('pwned').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "planted_payload", raising=False)
    expected = "cannot import objective" if allow_import else "would import code"
    with pytest.raises(ConfigError, match=expected):
        _check("planted_payload:Loss", allow_import=allow_import)
    assert (tmp_path / "pwned").exists() == allow_import  # importing is the one side effect, and only if allowed


def test_a_recipe_with_a_payload_is_refused_at_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ssl_toolkit import config

    monkeypatch.chdir(tmp_path)
    tiny = (Path(__file__).parents[2] / "recipes" / "tests" / "tiny.yaml").read_text()
    recipe = tmp_path / "recipe.yaml"  # as a run folder would hold it
    recipe.write_text(
        tiny.replace("{name: simclr, temperature: 0.2}", "{name: 'subprocess:Popen', args: 'touch pwned', shell: true}")
    )
    with pytest.raises(ConfigError, match="not a subclass of .*Objective"):
        config.load(recipe, [f"data.root={tmp_path}"])
    assert not (tmp_path / "pwned").exists()


def test_module_class_names_an_imported_module_or_imports_with_allow_import() -> None:
    assert (
        build_objective({"name": "ssl_toolkit.objectives.simclr:SimCLR", "temperature": 0.3}).temperature.value == 0.3
    )
    with pytest.raises(ConfigError, match="would import code.*entry point"):
        build_objective("no_such_package_here.loss:MyLoss")
    with pytest.raises(ConfigError, match="cannot import objective"):
        build_objective("no_such_package_here.loss:MyLoss", allow_import=True)
    with pytest.raises(ConfigError, match="cannot import objective"):
        build_objective("ssl_toolkit.objectives.simclr:NoSuchLoss")


def test_an_installed_entry_point_plugin_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package installed with an ``ssl_toolkit.objectives`` entry point (a real dist-info on sys.path)."""
    package = tmp_path / "myssl_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "loss.py").write_text(
        textwrap.dedent(
            """
            from ssl_toolkit.objectives import LossOutput, Objective

            class MyLoss(Objective):
                requires_ema = True

                def __init__(self, *, proj_dim: int, scale: float = 1.0) -> None:
                    super().__init__()
                    self.proj_dim, self.scale = proj_dim, scale

                def forward(self, z, ctx=None):
                    return LossOutput(loss=self.scale * sum((v.float() ** 2).mean() for v in z))
            """
        )
    )
    info = tmp_path / "myssl_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myssl-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmyloss = myssl_plugin.loss:MyLoss\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myssl_plugin", raising=False)

    objective = build_objective({"name": "myloss", "scale": 2.0}, known=KNOWN)  # no allow_import needed
    assert type(objective).__name__ == "MyLoss" and objective.proj_dim == 16 and objective.scale == 2.0
    with pytest.raises(ConfigError, match="'myloss' needs an EMA branch"):
        _check("myloss")
    with pytest.raises(ConfigError, match="accepted: .*myloss"):
        build_objective("myloss2")
