"""Every bad recipe, override or path: exit 2, one line naming the problem, no traceback, nothing written.

The table runs the command line in-process (`ssl_toolkit.cli.main`); a few rows run the real entry point in a
subprocess too. "Nothing written" means the run folder does not exist afterwards: every row fails before the
lock, the recipe or a checkpoint is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssl_toolkit.cli import main
from tests.engine.helpers import make_image_folder
from tests.reliability.helpers import REPO, TINY, cli, one_line_error, tiny_args

FASHION = REPO / "recipes" / "pretrain" / "simclr_fashion_mnist.yaml"

# (overrides for the tiny recipe, a fragment the one-line message must contain)
BAD_OVERRIDES = [
    (["train.lr=-0.1"], "train.lr must be a finite number > 0"),
    (["train.lr=0"], "train.lr must be a finite number > 0"),
    (["train.lr=.nan"], "train.lr must be a finite number"),
    (["train.lr=.inf"], "train.lr must be a finite number"),
    (["train.max_steps=0"], "train.max_steps must be"),
    (["train.epochs=0"], "train.epochs must be"),
    (["train.warmup_steps=-1"], "train.warmup_steps must be"),
    (["train.weight_decay=-1e-4"], "train.weight_decay must be"),
    (["train.grad_clip=-1"], "train.grad_clip must be"),
    (["train.grad_clip=0"], "train.grad_clip must be"),
    (["train.momentum=1.5"], "train.momentum must be"),
    (["train.batch_size=0"], "train.batch_size must be"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints must be"),
    (["train.min_lr_ratio=2"], "train.min_lr_ratio must be"),
    (["train.epochs=abc"], "train.epochs"),
    (["train.mixed_precision=fp8"], "unknown train.mixed_precision 'fp8'"),
    (["train.optimizer=adam"], "did you mean 'adamw'"),
    (["train.lrr=0.1"], "did you mean 'lr'"),
    (["trian.lr=0.1"], "did you mean 'train'"),
    (["train.lr"], "is not of the form key=value"),
    (["views=[{name:", "global,", "n:", "2}]"], "quote the whole override"),
    (["data.num_workers=-1"], "data.num_workers must be"),
    (["data.subset=0"], "data.subset must be"),
    (["data.name=imagefolder"], "did you mean 'image_folder'"),
    (["data.root=/does/not/exist"], "data.root does not exist"),
    (["data.root=null"], "needs data.root"),
    (["data.view_backend=kornia"], "unknown data.view_backend"),
    (["data.generated.mode=foo"], "unknown data.generated.mode"),
    (["model.projector_out=0"], "model.projector_out must be"),
    (["model.projector_hidden=0"], "model.projector_hidden must be"),
    (["model.projector_layers=1"], "model.projector_layers must be"),
    (["model.ema_momentum=[0.9]"], "model.ema_momentum must be two numbers"),
    (["model.backbone=resnet181"], "unknown backbone 'resnet181'"),
    (["objective.name=simclrr"], "simclr"),
    (["objective.temperature=0"], "temperature"),
    (["objective.bogus=1"], "bogus"),
    (["objective.name=mochi"], "needs an EMA branch"),
    (["views=[]"], "views is empty"),
    (["views=[{name: g, n: 1, size: 16}]"], "fewer than 2 views"),
    (["views=[{name: g, n: 2, size: 0}]"], "view size must be"),
    (["views=[{name: g, n: 2, size: 16, colour: 1}]"], "unknown keys ['colour']"),
    (["views=multicrop9"], "unknown views preset 'multicrop9'"),
    (["views.0.scale=[0.5,0.2]"], "scale must be two numbers"),
    (["views=[{name: a, n: 1, size: 16, global: false}, {name: b, n: 2, size: 16, global: true}]"], "come first"),
    (["eval.linear_lrs=[]"], "eval.linear_lrs must be"),
    (["eval.batch_size=0"], "eval.batch_size must be"),
    (["monitor.every=-1"], "monitor: needs every >= 0"),
    (["name=a/b", "train.run_name=null"], "name must be"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), per_class=4)


def _fails_with_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = one_line_error(err)
    assert line.startswith("ssl-toolkit: error: "), line
    assert fragment in line, line


@pytest.mark.parametrize(("overrides", "fragment"), BAD_OVERRIDES, ids=[" ".join(o)[:60] for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_exit_2(tmp_path: Path, data: Path, overrides, fragment, capsys) -> None:
    runs = tmp_path / "runs"
    _fails_with_one_line(tiny_args(data, runs, "bad", *overrides), fragment, capsys)
    assert not runs.exists(), "a refused recipe wrote into the run folder"


BAD_FILES = [
    ("empty.yaml", "", "is empty"),
    ("list.yaml", "- a\n- b\n", "not a mapping"),
    ("syntax.yaml", "name: x\ntrain: {epochs: 2\n", "syntax.yaml:3"),
    ("tabs.yaml", "name: x\n\ttrain: 1\n", "YAML syntax error"),
    ("unknown.yaml", "name: x\ntrainn: {epochs: 2}\n", "did you mean 'train'"),
    ("type.yaml", "name: x\ntrain: {epochs: many}\n", "train.epochs"),
]


@pytest.mark.parametrize(("name", "text", "fragment"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_recipe_file_is_one_line_exit_2(tmp_path: Path, name: str, text: str, fragment: str, capsys) -> None:
    recipe = tmp_path / name
    recipe.write_text(text)
    _fails_with_one_line(["train", str(recipe), f"train.output_dir={tmp_path / 'runs'}"], fragment, capsys)
    assert not (tmp_path / "runs").exists()


def test_missing_recipe_and_folders_are_one_line(tmp_path: Path, capsys) -> None:
    _fails_with_one_line(["train", str(tmp_path / "nope.yaml")], "not found", capsys)
    _fails_with_one_line(["eval", str(tmp_path)], "is not an exported encoder", capsys)
    _fails_with_one_line(["export", str(tmp_path)], "is it a run folder", capsys)
    _fails_with_one_line(["report", str(tmp_path)], "recipe.yaml", capsys)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--dataset", "imagefolder"], "unknown --dataset 'imagefolder' (did you mean 'image_folder'?)"),
        (["--size", "0"], "--size must be >= 1, got 0"),
        (["--max-train", "0"], "--max-train must be >= 1"),
        (["--linear-epochs", "0"], "--linear-epochs must be >= 1"),
        (["--lidar-views", "1"], "--lidar-views must be >= 2"),
        (["--linear-lrs", "0.1", "-1"], "--linear-lrs must all be > 0, got -1.0"),
    ],
)
def test_bad_eval_options_are_one_line(tmp_path: Path, capsys, flags: list[str], fragment: str) -> None:
    # refused before the encoder is read: the folder need not even be an export
    _fails_with_one_line(["eval", str(tmp_path), *flags], fragment, capsys)


def test_unwritable_output_dir(tmp_path: Path, data: Path, capsys) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    _fails_with_one_line(tiny_args(data, a_file / "runs", "x"), "cannot write the run folder", capsys)
    if os.geteuid() != 0:  # root writes anywhere: only a non-root user can meet a read-only folder
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            _fails_with_one_line(tiny_args(data, locked / "runs", "x"), "cannot write the run folder", capsys)
        finally:
            locked.chmod(0o700)


def test_batch_larger_than_the_data(tmp_path: Path, data: Path, capsys) -> None:
    # known from the recipe (Fashion-MNIST's size): refused at validation
    argv = ["train", str(FASHION), "data.subset=100", f"train.output_dir={tmp_path}", "train.batch_size=256"]
    _fails_with_one_line(argv, "more than the 100 training images", capsys)
    # known once the folder is read: refused before any model is built
    _fails_with_one_line(tiny_args(data, tmp_path / "runs", "big", "train.batch_size=64"), "no full batch", capsys)
    assert not list((tmp_path / "runs").rglob("checkpoints"))


def test_a_folder_given_to_fashion_mnist_is_not_ignored(tmp_path: Path, data: Path, capsys) -> None:
    argv = ["train", str(FASHION), f"data.root={data}", f"train.output_dir={tmp_path}", "train.max_steps=1"]
    _fails_with_one_line(argv, "use data.name=image_folder", capsys)


def test_scientific_notation_is_a_number_everywhere(tmp_path: Path, data: Path, capsys) -> None:
    args = tiny_args(data, tmp_path / "runs", "sci", "objective.temperature=1e-1", "train.lr=5e-2", "--print-config")
    from ssl_toolkit import config

    cfg = config.load(TINY, [a for a in args[2:] if "=" in a and not a.startswith("--")])
    assert cfg.objective.temperature == 0.1 and cfg.train.lr == 0.05
    recipe = tmp_path / "sci.yaml"
    recipe.write_text(TINY.read_text().replace("lr: 0.05", "lr: 5e-2"))
    assert config.load(recipe, [f"data.root={data}"]).train.lr == 0.05


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train.lr=-0.1"], "train.lr must be"),
        (["views=[{name:", "global,", "n:", "2}]"], "quote the whole override"),
        (["model.projector_out=0"], "model.projector_out must be"),
    ],
)
def test_the_real_entry_point_says_one_line(tmp_path: Path, data: Path, args: list[str], fragment: str) -> None:
    proc = cli(*tiny_args(data, tmp_path / "runs", "x", *args))
    assert proc.returncode == 2, proc.stderr
    assert fragment in one_line_error(proc.stderr)
