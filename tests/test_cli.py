"""The command line explains itself: help on every option, --version, list, --print-config, recipes by name,
and the commands that must answer at once import no torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ssl_toolkit import cli, config
from ssl_toolkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _walk(parser: argparse.ArgumentParser, path: str = "ssl-toolkit"):
    """(command path, action) for every argument of every (sub-)parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_of_every_command_has_help() -> None:
    actions = list(_walk(cli.build_parser()))
    commands = {p for p, _ in actions}
    assert {"ssl-toolkit train", "ssl-toolkit eval", "ssl-toolkit list", "ssl-toolkit pack"} <= commands
    missing = [f"{p}: {'/'.join(a.option_strings) or a.dest}" for p, a in actions if not (a.help or "").strip()]
    assert missing == []


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import ssl_toolkit

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ssl-toolkit {ssl_toolkit.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "ssl_toolkit.__version__"' in pyproject


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_objectives_shows_constructor_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from ssl_toolkit.objectives import FACTS, OBJECTIVES, REQUIRED, objective_kwargs

    rc, out, _ = _run(["list", "objectives"], capsys)
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rc == 0 and set(OBJECTIVES) <= set(lines)
    for name in OBJECTIVES:
        for key, default in objective_kwargs(name).items():
            if key == "gather_distributed":
                continue
            shown = ("<filled in>" if key in FACTS else "<required>") if default is REQUIRED else None
            assert f"{key}={shown or (repr(default) if isinstance(default, str) else default)}" in lines[name]
    assert "swav" in lines and "proj_dim=<filled in>" in lines["swav"] and "n_prototypes=3000" in lines["swav"]


def test_objective_signatures_read_from_source_match_the_imported_classes() -> None:
    from ssl_toolkit import objective_signatures as static
    from ssl_toolkit.objectives import ENTRY_POINT_GROUP, FACTS, OBJECTIVES, REQUIRED, objective_kwargs

    table = static.builtin_objectives()
    assert list(table) == list(OBJECTIVES)
    assert static.facts() == FACTS and static.entry_point_group() == ENTRY_POINT_GROUP
    for name, (module, class_name) in table.items():
        assert OBJECTIVES[name].__module__ == f"ssl_toolkit.objectives.{module}"
        assert OBJECTIVES[name].__name__ == class_name
        read = static.constructor_kwargs(module, class_name)
        imported = objective_kwargs(name)
        assert list(read) == list(imported), name
        for key, default in imported.items():
            assert (read[key] is static.MISSING) if default is REQUIRED else read[key] == default, (name, key)
    with pytest.raises(LookupError):
        static.constructor_kwargs("simclr", "NoSuchClass")


def test_list_presets_augmentations_and_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    from ssl_toolkit.cli_list import KINDS, LISTERS
    from ssl_toolkit.data.view_specs import PRESET_DEFAULTS, VIEW_PRESETS

    rc, out, _ = _run(["list"], capsys)
    assert rc == 0 and set(KINDS) == set(LISTERS) and all(f"  {kind} " in out for kind in KINDS)

    rc, out, _ = _run(["list", "presets"], capsys)
    assert rc == 0
    assert "multicrop       2x224 + 6x96" in out and "multicrop_28    2x28 + 4x14" in out
    assert all(name in out for name in VIEW_PRESETS)
    rc, out, _ = _run(["list", "augmentations"], capsys)
    assert rc == 0 and all(f"\n{name} " in f"\n{out}" for name in PRESET_DEFAULTS)
    assert "scale=[0.08, 1.0] strength=1.0 jitter_p=0.8 gray_p=0.2 blur_p=0.5" in out  # simclr, from the code
    rc, out, _ = _run(["list", "recipes"], capsys)
    names = sorted(p.stem for p in (REPO / "recipes").rglob("*.yaml"))
    assert rc == 0 and sorted(line.split()[0] for line in out.splitlines()[: len(names)]) == names
    assert "simclr on fashion_mnist, resnet10 (small input), views 2x28 + 4x14, 4 epochs" in out


def test_print_config_is_the_resolved_validated_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "runs"
    argv = ["train", "simclr_fashion_mnist", "--print-config", "train.epochs=1", f"train.output_dir={out_dir}"]
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and err == ""
    assert out.startswith("# simclr_fashion_mnist: ")
    printed = yaml.safe_load(out)
    expected = config.load(REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml", argv[3:])
    assert printed == OmegaConf.to_container(expected, resolve=True)
    assert printed["train"]["epochs"] == 1 and printed["train"]["log_with"] == ["tensorboard"]
    assert not out_dir.exists(), "--print-config wrote a run folder"
    reloaded = tmp_path / "resolved.yaml"  # the printed recipe is a recipe
    reloaded.write_text(out)
    assert config.load(reloaded) == expected

    rc, out, err = _run(["train", "simclr_fashion_mnist", "--print-config", "train.lr=-1"], capsys)
    assert rc == 2 and out == "" and "train.lr" in err  # validated


def test_recipes_resolve_by_name_and_by_path_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    from ssl_toolkit.recipe_files import resolve_recipe

    monkeypatch.chdir(tmp_path)
    shipped = REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml"
    for given in ("simclr_fashion_mnist", "simclr_fashion_mnist.yaml", "pretrain/simclr_fashion_mnist"):
        assert resolve_recipe(given).resolve() == shipped.resolve()
    assert resolve_recipe("tiny").name == "tiny.yaml"
    own = tmp_path / "simclr_fashion_mnist.yaml"  # a file of the user's wins over the shipped name
    own.write_text("name: mine\n")
    assert resolve_recipe("simclr_fashion_mnist.yaml") == Path("simclr_fashion_mnist.yaml")
    assert resolve_recipe(str(own)) == own
    with pytest.raises(
        ConfigError, match=r"unknown recipe 'simclr_fashon_mnist' \(did you mean 'simclr_fashion_mnist'"
    ):
        resolve_recipe("simclr_fashon_mnist")
    with pytest.raises(ConfigError, match="not found: recipes/pretrain/swav_fashion_mnist.yaml; the shipped recipe"):
        resolve_recipe("recipes/pretrain/swav_fashion_mnist.yaml")


def test_wrong_recipe_name_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["train", "simclr_fashon_mnist"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "did you mean 'simclr_fashion_mnist'" in err


def test_train_help_shows_sections_keys_defaults_and_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for fragment in ("data ", "views ", "model ", "objective ", "train ", "eval ", "monitor ", "docs/cli.md",
                     "ssl-toolkit list objectives", "--print-config"):  # fmt: skip
        assert fragment in out, fragment
    defaults = config.TrainConfig()
    assert f"epochs={defaults.epochs}" in out and f"lr={defaults.lr}" in out and "log_with=[tensorboard]" in out
    assert f"backbone={config.ModelConfig().backbone}" in out


# The probe runs one command in a fresh interpreter and reports its exit status, its time from interpreter start
# and whether torch or timm were imported.
PROBE = textwrap.dedent(
    """
    import json, sys, time
    from ssl_toolkit.cli import main
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exit_:
        rc = exit_.code
    heavy = sorted(m for m in ("torch", "timm", "lightly", "accelerate") if m in sys.modules)
    sys.stderr.write("\\nPROBE " + json.dumps({"rc": rc, "heavy": heavy}) + "\\n")
    """
)
FAST_COMMANDS = {
    "help": (["--help"], 0),
    "version": (["--version"], 0),
    "train_help": (["train", "--help"], 0),
    "eval_help": (["eval", "--help"], 0),
    "list": (["list"], 0),
    "list_presets": (["list", "presets"], 0),
    "list_augmentations": (["list", "augmentations"], 0),
    "list_recipes": (["list", "recipes"], 0),
    "list_backbones": (["list", "backbones"], 0),
    "list_objectives": (["list", "objectives"], 0),
    "unknown_key": (["train", "tiny", "data.root=.", "train.epochz=1"], 2),
    "bad_value": (["train", "tiny", "data.root=.", "train.lr=-1"], 2),
    "unknown_recipe": (["train", "simclr_fashon_mnist"], 2),
}
FAST_BOUND_S = 3.0  # the promise is 1.5 s on 2 idle cores; the bound is generous because CI shares its cores


@pytest.fixture(scope="module")
def fast_runs() -> dict[str, dict]:
    runs = {}
    for case, (argv, _) in FAST_COMMANDS.items():  # one at a time: each is timed
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=REPO,
                              timeout=120)  # fmt: skip
        elapsed = time.perf_counter() - t0
        probe = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
        runs[case] = {**probe, "seconds": elapsed, "stdout": proc.stdout, "stderr": proc.stderr.rsplit("\nPROBE", 1)[0]}
    return runs


@pytest.mark.parametrize("case", list(FAST_COMMANDS))
def test_help_version_list_and_config_errors_import_no_torch(case: str, fast_runs: dict[str, dict]) -> None:
    run = fast_runs[case]
    assert run["rc"] == FAST_COMMANDS[case][1], run["stderr"]
    assert run["heavy"] == [], f"{case} imported {run['heavy']}"
    assert run["seconds"] < FAST_BOUND_S, f"{case} took {run['seconds']:.2f} s"
    if FAST_COMMANDS[case][1] == 2:
        assert run["stdout"] == "" and run["stderr"].strip().count("\n") == 0, run["stderr"]
