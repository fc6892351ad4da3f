"""Warnings on the command line (`WarningLines`): one line each, each once, skipped files listed once per run."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from ssl_toolkit.cli_warnings import WarningLines
from ssl_toolkit.run_summary import SKIPPED, read_skipped


def _emit(text: str, filename: str, category: type[Warning] = UserWarning) -> None:
    warnings.warn_explicit(text, category, filename, 7)


def test_own_warnings_are_one_line_and_others_lose_their_source_line() -> None:
    stream = io.StringIO()
    own = str(Path(__file__).resolve().parents[1] / "ssl_toolkit" / "checkpoint.py")
    before = warnings.showwarning
    with WarningLines(stream):
        _emit("a checkpoint was skipped", own)
        _emit("some library says so", "/elsewhere/lib.py", RuntimeWarning)
        _emit("some library says so", "/elsewhere/other.py", RuntimeWarning)  # the same text elsewhere: once
    assert warnings.showwarning is before
    assert stream.getvalue().splitlines() == [
        "ssl-toolkit: warning: a checkpoint was skipped",
        "/elsewhere/lib.py:7: RuntimeWarning: some library says so",
    ]


def test_pytorch_worker_warning_is_shown_once() -> None:
    from torch.utils.data import DataLoader

    stream = io.StringIO()
    with WarningLines(stream):
        warnings.simplefilter("always")  # Python's own once-per-location would hide the repeats
        for _ in range(3):  # e.g. training, the evaluation and the report each make a loader
            DataLoader(list(range(4)), num_workers=len(os.sched_getaffinity(0)) + 6).check_worker_number_rationality()
    assert stream.getvalue().count("worker processes in total") == 1


def test_training_loader_names_the_worker_count_that_fits(tmp_path: Path, monkeypatch) -> None:
    from ssl_toolkit import builders, config, run_summary
    from ssl_toolkit.recipe_files import resolve_recipe
    from tests.engine.helpers import make_image_folder

    cfg = config.load(resolve_recipe("tiny"), [f"data.root={make_image_folder(tmp_path / 'images')}"])
    data = builders.build_train_data(cfg)
    monkeypatch.setattr(run_summary, "usable_cores", lambda: 2)
    stream = io.StringIO()
    with WarningLines(stream):
        builders.build_loader(
            data, config.load(resolve_recipe("tiny"), [f"data.root={cfg.data.root}", "data.num_workers=2"])
        )
        assert stream.getvalue() == ""  # as many workers as cores: nothing to say
        loader = builders.build_loader(
            data, config.load(resolve_recipe("tiny"), [f"data.root={cfg.data.root}", "data.num_workers=8"])
        )
        loader.check_worker_number_rationality()  # PyTorch checks again when it starts the workers
    assert stream.getvalue().splitlines() == [
        "ssl-toolkit: warning: data.num_workers=8 starts more loader workers than this machine's 2 CPU cores; "
        "they will compete with training (data.num_workers=1 fits here)"
    ]


def test_skipped_files_are_listed_once_per_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    odd = "/data/a: b/x.png"  # a path holding ": " still parses
    stream = io.StringIO()
    with WarningLines(stream) as lines:
        lines.use_run(run)
        _emit(f"skipping unreadable image {odd}: OSError: image file is truncated", "/torch/fetch.py")
        _emit("skipping unreadable sample shard-0.tar:000003: ValueError: no image member", "/x.py")
        _emit(f"skipping unreadable image {odd}: OSError: image file is truncated", "/torch/fetch.py")
    assert stream.getvalue().splitlines() == [
        f"ssl-toolkit: skipped {odd} (OSError: image file is truncated)",
        "ssl-toolkit: skipped shard-0.tar:000003 (ValueError: no image member)",
    ]
    assert read_skipped(run) == {
        odd: "OSError: image file is truncated",
        os.path.abspath("shard-0.tar:000003"): "ValueError: no image member",  # relative paths: made absolute
    }

    stream = io.StringIO()  # a later command on the run: not repeated, one pointer instead
    with WarningLines(stream) as lines:
        lines.use_run(run)
        _emit(f"skipping unreadable image {odd}: OSError: image file is truncated", "/torch/fetch.py")
        _emit("skipping unreadable image /data/new.png: OSError: broken", "/torch/fetch.py")
    assert stream.getvalue().splitlines() == [
        "ssl-toolkit: skipped /data/new.png (OSError: broken)",
        f"ssl-toolkit: 1 skipped file not repeated, see {run / SKIPPED}",
    ]
    assert len(read_skipped(run)) == 3


def test_a_file_named_relatively_then_absolutely_is_listed_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # train ran with data.root=photos, eval with the recorded absolute root
    run = tmp_path / "run"
    run.mkdir()
    with WarningLines(io.StringIO()) as lines:
        lines.use_run(run)
        _emit("skipping unreadable image photos/x.jpg: OSError: truncated", "/torch/fetch.py")
    stream = io.StringIO()
    with WarningLines(stream) as lines:
        lines.use_run(run)
        _emit(f"skipping unreadable image {tmp_path / 'photos/x.jpg'}: OSError: truncated", "/torch/fetch.py")
    assert stream.getvalue().splitlines() == [f"ssl-toolkit: 1 skipped file not repeated, see {run / SKIPPED}"]
    assert read_skipped(run) == {str(tmp_path / "photos/x.jpg"): "OSError: truncated"}


def test_other_ranks_list_but_do_not_print(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    stream = io.StringIO()
    with WarningLines(stream) as lines:
        lines.use_run(tmp_path)
        _emit("skipping unreadable image /d/x.png: OSError: bad", "/torch/fetch.py")
    assert stream.getvalue() == "" and list(read_skipped(tmp_path)) == ["/d/x.png"]
