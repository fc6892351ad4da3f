"""``ssl-toolkit sweep`` refuses bad arguments with one line and exit 2, before any trial runs; `parse_space`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssl_toolkit import cli
from ssl_toolkit.errors import ConfigError
from ssl_toolkit.sweep.space import grid, override, parse_space
from tests.engine.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tests" / "tiny.yaml")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("sweep_cli") / "images", per_class=8)


def _sweep(capsys: pytest.CaptureFixture, tmp: Path, root: Path, *extra: str) -> tuple[int, str]:
    argv = ["sweep", TINY, f"data.root={root}", "--trial-steps", "2", "--out", str(tmp / "out"), *extra]
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "train.lrr=0.1,0.3", "--select", "rankme"], "unknown key 'train.lrr' (did you mean 'lr'?)"),
        (["--param", "train.lr=0.1,fast", "--select", "rankme"], "--param train.lr=0.1,fast: value 'fast'"),
        (["--param", "train.lr=0.1,-1", "--select", "rankme"], "train.lr must be a finite number > 0"),
        (["--param", "objective.temperatur=0.1", "--select", "rankme"], "temperatur"),
        (["--param", "train.lr=0.1", "--select", "rankmee"], "unknown --select 'rankmee' (did you mean 'rankme'?)"),
        (["--param", "train.lr=0.01..1:log", "--select", "rankme"], "is a range; the grid sampler needs a list"),
        (["--param", "train.lr=0.1", "--param", "train.lr=0.3", "--select", "rankme"], "given twice"),
        (["--param", "train.max_steps=5", "--select", "rankme"], "the sweep sets"),
        (["--param", "train.lr", "--select", "rankme"], "is not KEY=V1,V2,..."),
        (["--param", "views=[]", "--select", "rankme"], "views"),
        (["--select", "rankme"], "give at least one --param"),
        (["--param", "train.lr=0.1", "--select", "lidar", "--sampler", "tpee"], "(did you mean 'tpe'?)"),
        (["--param", "train.lr=0.1", "--select", "lidar", "--trial-steps", "0"], "--trial-steps must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, images, extra, message) -> None:
    code, err = _sweep(capsys, tmp_path, images, *extra)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("ssl-toolkit: error: ")
    assert message in err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_select_knn_needs_labels(capsys, tmp_path, images) -> None:
    flat = tmp_path / "flat"  # images without class folders or a test split: a label-free evaluation
    flat.mkdir()
    for i, png in enumerate(sorted((images / "train").rglob("*.png"))):
        shutil.copy(png, flat / f"{i:03d}.png")
    code, err = _sweep(capsys, tmp_path, flat, "--param", "train.lr=0.1,0.3", "--select", "knn")
    assert code == 2 and "--select knn needs labels" in err and "--select rankme | lidar | alpha_req" in err


def test_parse_space_types_values_from_the_recipe(images) -> None:
    params = parse_space(["train.lr=1,0.3", "objective.temperature=0.1,0.2", "train.batch_size=4,8"], recipe=TINY,
                         overrides=[f"data.root={images}"], sampler="grid")  # fmt: skip
    assert [p.choices for p in params] == [(1.0, 0.3), (0.1, 0.2), (4, 8)]  # the schema makes 1 a float
    assert isinstance(params[0].choices[0], float) and isinstance(params[2].choices[0], int)
    points = grid(params)
    assert len(points) == 8 and points[0] == {"train.lr": 1.0, "objective.temperature": 0.1, "train.batch_size": 4}
    (lr,) = parse_space(["train.lr=1e-3..1:log"], recipe=TINY, overrides=[f"data.root={images}"], sampler="tpe")
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-3, 1.0, True, False)
    assert override("train.lr", 1e-05) == "train.lr=1e-05" and override("model.projector_last_norm", "bn") == (
        'model.projector_last_norm="bn"'
    )


def test_range_ends_are_checked(images) -> None:
    with pytest.raises(ConfigError, match="LOW < HIGH"):
        parse_space(["train.lr=1..0.1"], recipe=TINY, overrides=[f"data.root={images}"], sampler="tpe")
    with pytest.raises(ConfigError, match="unknown scale 'lg'"):
        parse_space(["train.lr=0.1..1:lg"], recipe=TINY, overrides=[f"data.root={images}"], sampler="tpe")


def test_a_shipped_recipe_is_named_as_train_takes_it(images, tmp_path) -> None:
    from ssl_toolkit.sweep.cli import build_spec

    parser = cli.build_parser()
    argv = ["sweep", "tiny", f"data.root={images}", "--param", "train.lr=0.1,0.3", "--select", "rankme",
            "--trial-steps", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    spec = build_spec(parser.parse_args(argv))
    assert Path(spec.recipe).is_file() and Path(spec.recipe).name == "tiny.yaml"
    with pytest.raises(ConfigError, match="unknown recipe 'tinyy' .*did you mean 'tiny'"):
        build_spec(parser.parse_args(["sweep", "tinyy", *argv[2:]]))
