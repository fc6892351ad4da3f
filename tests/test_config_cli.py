"""Recipe loading (defaults < YAML < overrides, save/reload) and the command line's error contract.

Every user mistake must end the CLI with status 2, nothing on stdout and one stderr line that names the
problem (and what is accepted), before any model, data or run folder is built. Every case runs through
``cli.main`` in-process (cheap); a few also run as real subprocesses, started at once so that their import
time overlaps, to check the process exit status and that nothing else (warnings) reaches stderr.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ssl_toolkit import config
from ssl_toolkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tests" / "tiny.yaml"
RECIPES = [TINY, *sorted((REPO / "recipes" / "pretrain").glob("*.yaml"))]
CONSOLE_SCRIPT = Path(sys.executable).parent / "ssl-toolkit"


def _root_overrides(recipe: Path, root: Path) -> list[str]:
    """Point every data path the recipe names (or needs) at an existing folder."""
    raw = yaml.safe_load(recipe.read_text()) or {}
    overrides = [f"data.root={root}"]
    if (raw.get("eval") or {}).get("root"):
        overrides.append(f"eval.root={root}")
    if ((raw.get("data") or {}).get("generated") or {}).get("bank"):  # banks are built, not shipped
        overrides.append(f"data.generated.bank={root}")
    return overrides


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(recipe: Path, tmp_path: Path) -> None:
    cfg = config.load(recipe, _root_overrides(recipe, tmp_path))
    raw = yaml.safe_load(recipe.read_text())
    assert cfg.name == raw["name"]
    assert cfg.objective.name == raw["objective"]["name"]
    assert cfg.data.root == str(tmp_path)


def test_precedence_defaults_yaml_overrides(tmp_path: Path) -> None:
    cfg = config.load(TINY, [f"data.root={tmp_path}"])
    assert cfg.train.batch_size == 8  # YAML beats the dataclass default (256)
    assert cfg.train.optimizer == config.TrainConfig.optimizer  # untouched default survives
    assert cfg.objective.temperature == 0.2

    cfg = config.load(
        TINY,
        [
            f"data.root={tmp_path}",
            "train.batch_size=4",
            "objective.temperature=0.5",
            "model.small_input=true",
            "train.grad_clip=1.5",
            "views.0.size=24",
        ],
    )
    assert cfg.train.batch_size == 4
    assert cfg.objective.temperature == 0.5
    assert cfg.model.small_input is True
    assert cfg.train.grad_clip == 1.5
    assert cfg.views[0].size == 24
    assert cfg.train.epochs == 2  # YAML value kept where not overridden


def test_small_input_only_backbone_needs_small_input(tmp_path: Path) -> None:
    """resnet10 exists only as ssl_toolkit's registered resnet10_small_input (timm has resnet10t)."""
    cfg = config.load(TINY, [f"data.root={tmp_path}", "model.backbone=resnet10", "model.small_input=true"])
    assert cfg.model.backbone == "resnet10"
    with pytest.raises(ConfigError, match="backbone 'resnet10' exists only with model.small_input=true"):
        config.load(TINY, [f"data.root={tmp_path}", "model.backbone=resnet10", "model.small_input=false"])


def test_loaded_recipe_is_read_only(tmp_path: Path) -> None:
    cfg = config.load(TINY, [f"data.root={tmp_path}"])
    with pytest.raises(Exception):  # noqa: B017 - OmegaConf's ReadonlyConfigError
        cfg.train.epochs = 5


def test_save_resolved_round_trips(tmp_path: Path) -> None:
    cfg = config.load(TINY, [f"data.root={tmp_path}", "train.epochs=3", "objective.temperature=0.3"])
    path = tmp_path / "run" / "recipe.yaml"
    config.save_resolved(cfg, path)
    again = config.load(path)
    assert OmegaConf.to_container(again, resolve=True) == OmegaConf.to_container(cfg, resolve=True)
    saved = yaml.safe_load(path.read_text())
    assert saved["train"]["epochs"] == 3 and saved["train"]["optimizer"] == "sgd"  # defaults written out


@pytest.mark.parametrize("where", ["override", "yaml"])
def test_mixed_precision_no_is_accepted(where: str, tmp_path: Path) -> None:
    recipe = TINY
    overrides = [f"data.root={tmp_path}"]
    if where == "override":
        overrides.append("train.mixed_precision=no")
    else:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(TINY.read_text().replace("train:\n", "train:\n  mixed_precision: no\n", 1))
    assert config.load(recipe, overrides).train.mixed_precision == "no"


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.epochz"):
        config.load(TINY, [f"data.root={tmp_path}", "train.epochz=1"])
    with pytest.raises(ConfigError, match="needs data.root"):
        config.load(TINY)


# ---------------------------------------------------------------- the command line

# case id -> (recipe, overrides after data.root/output_dir, fragments the one stderr line must contain)
ERROR_CASES: dict[str, tuple[Path, list[str], list[str]]] = {
    "unknown_key": (TINY, ["train.epochz=1"], ["train.epochz", "accepted", "epochs"]),
    "wrong_type": (TINY, ["train.epochs=abc"], ["train.epochs", "abc"]),
    "unknown_objective": (TINY, ["objective.name=nope"], ["'nope'", "accepted", "simclr"]),
    "unknown_objective_kwarg": (TINY, ["objective.tau=0.1"], ["tau", "accepted", "temperature"]),
    "unknown_backbone": (TINY, ["model.backbone=resnet_nope"], ["resnet_nope", "backbone"]),
    "missing_data_path": (TINY, ["data.root=/does/not/exist"], ["data.root", "/does/not/exist"]),
    "unknown_view_backend": (TINY, ["data.view_backend=gpu"], ["data.view_backend", "'gpu'", "batched"]),
    "malformed_override": (TINY, ["epochs"], ["'epochs'", "key=value"]),
    "missing_recipe": (REPO / "recipes" / "no_such_recipe.yaml", [], ["not found", "no_such_recipe.yaml"]),
}
# Cases also run as real ``python -m ssl_toolkit`` processes (each costs seconds of imports on 2 cores).
SUBPROCESS_CASES = ("unknown_backbone",)


def _train_argv(case: str, data_root: Path, out_dir: Path) -> list[str]:
    recipe, overrides, _ = ERROR_CASES[case]
    return ["train", str(recipe), f"data.root={data_root}", f"train.output_dir={out_dir}", *overrides]


def _check_one_line_error(rc: int, stdout: str, stderr: str, fragments: list[str]) -> None:
    lines = stderr.strip().splitlines()
    assert rc == 2, stderr
    assert stdout == ""
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ssl-toolkit: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Start the subprocess invocations concurrently; return exit status, stdout, stderr and output dir."""
    base = tmp_path_factory.mktemp("cli")
    data_root = base / "images"
    data_root.mkdir()
    module = [sys.executable, "-m", "ssl_toolkit"]
    commands: dict[str, tuple[list[str], Path | None]] = {
        case: ([*module, *_train_argv(case, data_root, base / case / "runs")], base / case / "runs")
        for case in SUBPROCESS_CASES
    }
    commands["help"] = ([*module, "--help"], None)
    if CONSOLE_SCRIPT.is_file():
        commands["eval_help"] = ([str(CONSOLE_SCRIPT), "eval", "--help"], None)
        commands["eval_missing"] = ([str(CONSOLE_SCRIPT), "eval", "/nonexistent"], None)
    procs = {
        case: subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for case, (argv, _) in commands.items()
    }
    runs = {}
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        runs[case] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "out_dir": commands[case][1]}
    return runs


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_cli_error_is_one_line_exit_2(
    case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process ``cli.main`` (same code path as the console script, without its import cost)."""
    import ssl_toolkit.builders as builders
    import ssl_toolkit.engine as engine
    from ssl_toolkit import cli

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("training/model/data was started for an invalid recipe")

    for module, name in ((engine, "train"), (builders, "build_model"), (builders, "build_train_data")):
        monkeypatch.setattr(module, name, must_not_run)
    (tmp_path / "images").mkdir()
    out_dir = tmp_path / "runs"
    capfd.readouterr()
    t0 = time.perf_counter()
    rc = cli.main(_train_argv(case, tmp_path / "images", out_dir))
    elapsed = time.perf_counter() - t0
    captured = capfd.readouterr()
    _check_one_line_error(rc, captured.out, captured.err, ERROR_CASES[case][2])
    assert not out_dir.exists(), "a run folder was created before the recipe was validated"
    assert elapsed < 10, f"rejecting a bad recipe took {elapsed:.1f} s"


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_cli_subprocess_error_is_one_line_exit_2(case: str, cli_runs: dict[str, dict]) -> None:
    run = cli_runs[case]
    _check_one_line_error(run["rc"], run["stdout"], run["stderr"], ERROR_CASES[case][2])
    assert not run["out_dir"].exists(), "a run folder was created before the recipe was validated"


def test_help_exits_0(cli_runs: dict[str, dict]) -> None:
    run = cli_runs["help"]
    assert run["rc"] == 0 and run["stderr"] == ""
    for command in ("train", "eval", "export"):
        assert command in run["stdout"]


def test_console_script_eval(cli_runs: dict[str, dict]) -> None:
    if "eval_help" not in cli_runs:
        pytest.skip(f"console script not installed at {CONSOLE_SCRIPT}")
    help_run = cli_runs["eval_help"]
    assert help_run["rc"] == 0 and "encoder_dir" in help_run["stdout"]
    run = cli_runs["eval_missing"]
    _check_one_line_error(run["rc"], run["stdout"], run["stderr"], ["/nonexistent", "config.json"])


def test_free_form_dicts_are_replaced_and_views_override_as_a_list(tmp_path: Path) -> None:
    cfg = config.load(
        REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml",
        [
            "model.backbone=resnet18",
            "model.backbone_kwargs={}",
            "model.small_input=false",
            "views=[{name: global, n: 3, size: 32}]",
            f"data.root={tmp_path}",
        ],
    )
    assert dict(cfg.model.backbone_kwargs) == {}
    assert len(cfg.views) == 1 and cfg.views[0].n == 3 and cfg.views[0].augment == "simclr"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["views=[{name: g, n: 2, size: 16, source: generated}]"], "data.generated.bank is not set"),
        (["data.generated.bank={bank}"], "needs a view group with source: generated"),
        (
            [
                "data.generated.bank={bank}",
                "data.generated.mode=adainf",
                "views=[{name: g, n: 2, size: 16, source: generated}]",
            ],
            "mixes whole samples",
        ),
        (["data.generated.bank={bank}", "data.generated.mode=dreambooth"], "accepted: genview, adainf"),
        (["data.generated.bank=/no/such/bank"], "does not exist"),
        (["quality_weights.model_path={bank}", "quality_weights.pca_path=/no/pca"], "pca_path does not exist"),
    ],
)
def test_generated_and_quality_weight_errors(tmp_path: Path, overrides: list[str], match: str) -> None:
    from ssl_toolkit import config

    bank = tmp_path / "bank"
    bank.mkdir()
    overrides = [o.replace("{bank}", str(bank)) for o in overrides]
    with pytest.raises(ConfigError, match=match):
        config.load(REPO / "recipes" / "tests" / "tiny.yaml", [f"data.root={tmp_path}", *overrides])
