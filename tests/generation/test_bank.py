"""Bank generation end to end with tiny random pipelines (CPU, offline): layout, manifest, resumption, shards,
determinism, the knobs that must change the output, validation, and the errors a user can act on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_toolkit import cli
from ssl_toolkit.errors import ConfigError, DataError
from ssl_toolkit.generation import (
    FIELDS,
    GENERATORS,
    INSTALL_HINT,
    generate_bank,
    import_diffusers,
    load_generator,
    merge_manifests,
    model_revision,
    read_manifest,
    resolve_settings,
    validate_row,
)
from tests.generation import tiny_pipelines as tiny

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _offline_one_thread(monkeypatch: pytest.MonkeyPatch):
    """No network, and one torch thread: two threads on a busy 2-core machine make each step 100x slower."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny pipeline folders, built from config and saved once per session."""
    root = tmp_path_factory.mktemp("models")
    return {
        "unclip": tiny.save_unclip(root / "unclip"),
        "variation": tiny.save_variation(root / "variation"),
        "img2img": tiny.save_img2img(root / "img2img"),
        "pixel": tiny.save_pixel(root / "pixel"),
    }


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of four 32x32 PNGs in cat/ and dog/, of increasing brightness (for the adaptive scorer)."""
    root = tmp_path_factory.mktemp("source")
    gen = np.random.default_rng(0)
    for k, (cls, name) in enumerate([("cat", "a"), ("cat", "b"), ("dog", "c"), ("dog", "d")]):
        (root / cls).mkdir(exist_ok=True)
        pixels = gen.integers(0, 64, (32, 32, 3)) + 60 * k
        Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{name}.png")
    return root


def _settings(kind: str, **kw):
    defaults = {"unclip": {"guidance": 1.0}, "variation": {"guidance": 1.0}, "img2img": {"guidance": 1.0}}
    return resolve_settings(kind, steps=2, **{**defaults.get(kind, {}), **kw})


def _adapter(kind: str, models: dict[str, Path], **kw):
    folder = models["pixel" if GENERATORS[kind].pixel else kind]
    return load_generator(_settings(kind, **kw), folder, device=CPU, dtype=torch.float32)


def _cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    code = cli.main(["generate-views", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unclip_bank_manifest_resume_and_determinism(models, source, tmp_path, capsys) -> None:
    bank = tmp_path / "bank"
    args = ["--source", "image_folder", "--root", source, "--out", bank, "--generator", "unclip",
            "--model", models["unclip"], "--steps", "2", "--guidance", "1", "--noise-level", "100", "--size", "24",
            "--batch-size", "1", "--device", "cpu", "--seed", "7"]  # fmt: skip
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "generated 4, skipped 0" in out and "invalid 0" in out and str(bank) in out
    rows = read_manifest(bank)
    assert [(r["src_path"], r["label"], r["file"]) for r in rows] == [
        ("cat/a.png", 0, "images/cat/a/v0.png"), ("cat/b.png", 0, "images/cat/b/v0.png"),
        ("dog/c.png", 1, "images/dog/c/v0.png"), ("dog/d.png", 1, "images/dog/d/v0.png"),
    ]  # fmt: skip
    for row in rows:
        validate_row(row)  # every field present and typed
        assert list(row) == list(FIELDS)
        assert row["pipeline"] == "StableUnCLIPImg2ImgPipeline" and row["generator"] == "unclip"
        assert row["scheduler"] == "DDIMScheduler" and row["noise_level"] == 100 and row["strength"] is None
        assert row["model_revision"] == model_revision(models["unclip"])
        assert row["model_path"] == str(models["unclip"].resolve()) and row["prompt"] == ""
        assert (row["width"], row["height"]) == (24, 24) and row["fg_ratio"] is None
        with Image.open(bank / row["file"]) as img:
            assert img.mode == "RGB" and img.size == (24, 24)
        assert _sha(bank / row["file"]) == row["sha256"]
    assert len({r["seed"] for r in rows}) == 4
    assert json.loads((bank / "generation.json").read_text())["seed"] == 7
    assert not list(bank.glob("manifest.shard-*"))  # merged into manifest.jsonl

    # a rerun regenerates nothing (files untouched) ...
    mtimes = {r["file"]: (bank / r["file"]).stat().st_mtime_ns for r in rows}
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "generated 0, skipped 4" in out
    assert {f: (bank / f).stat().st_mtime_ns for f in mtimes} == mtimes
    # ... and deleting one row regenerates exactly that image, with the same bytes (same seed)
    lines = (bank / "manifest.jsonl").read_text().splitlines(keepends=True)
    (bank / "manifest.jsonl").write_text("".join(lines[:2] + lines[3:]))
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "generated 1, skipped 3" in out
    assert read_manifest(bank) == rows
    changed = [f for f, t in mtimes.items() if (bank / f).stat().st_mtime_ns != t]
    assert changed == ["images/dog/c/v0.png"]

    # another global seed gives other images
    other = tmp_path / "other"
    generate_bank(other, _settings("unclip", noise_level=100), model=models["unclip"], source="image_folder",
                  root=str(source), limit=1, size=24, seed=8, device="cpu", progress=False)  # fmt: skip
    assert read_manifest(other)[0]["sha256"] != rows[0]["sha256"]


def test_knobs_change_the_output_and_seeds_fix_it(models, source) -> None:
    image = Image.open(source / "cat" / "a.png").convert("RGB")

    def run(adapter, seed: int, **kw) -> np.ndarray:
        return adapter.generate([image], [torch.Generator().manual_seed(seed)], **kw)[0][0]

    unclip = _adapter("unclip", models)
    assert np.array_equal(run(unclip, 0, noise_level=0), run(unclip, 0, noise_level=0))
    assert not np.array_equal(run(unclip, 0, noise_level=0), run(unclip, 0, noise_level=800))
    assert not np.array_equal(run(unclip, 0, noise_level=0), run(unclip, 1, noise_level=0))
    low, high = _adapter("img2img", models, strength=0.5), _adapter("img2img", models, strength=1.0)
    assert np.array_equal(run(low, 0), run(low, 0)) and not np.array_equal(run(low, 0), run(high, 0))
    low, high = _adapter("pixel_img2img", models, strength=0.5), _adapter("pixel_img2img", models, strength=1.0)
    assert np.array_equal(run(low, 0), run(low, 0)) and not np.array_equal(run(low, 0), run(high, 0))
    variation = _adapter("variation", models)
    out = run(variation, 0)
    assert out.shape == (32, 32, 3) and np.isfinite(out).all()


def test_two_shards_merge_to_the_one_shard_bank(models, source, tmp_path, capsys) -> None:
    settings = _settings("img2img", strength=0.5)
    adapter = _adapter("img2img", models, strength=0.5)
    common = {"model": None, "source": "image_folder", "root": str(source), "variants": 2, "size": 32,
              "batch_size": 1, "progress": False, "adapter": adapter}  # fmt: skip
    whole = generate_bank(tmp_path / "whole", settings, **common)
    assert whole.generated == 8 and whole.merged
    for index in (1, 0):
        part = generate_bank(tmp_path / "parts", settings, num_shards=2, shard_index=index, **common)
        assert part.generated == 4 and not part.merged
    with pytest.raises(DataError, match="not finished"):
        (tmp_path / "parts" / "manifest.shard-0-of-2.jsonl.done").rename(tmp_path / "x")
        merge_manifests(tmp_path / "parts")
    (tmp_path / "x").rename(tmp_path / "parts" / "manifest.shard-0-of-2.jsonl.done")
    assert {r["src_id"] % 2 for r in read_manifest(tmp_path / "parts")} == {0, 1}  # shards are readable unmerged
    code, out, _ = _cli(capsys, "--merge-only", "--out", tmp_path / "parts")
    assert code == 0 and "merged 8 rows" in out and not list((tmp_path / "parts").glob("manifest.shard-*"))
    assert read_manifest(tmp_path / "parts") == read_manifest(tmp_path / "whole")
    assert [r["variant_id"] for r in read_manifest(tmp_path / "whole")] == [0, 1] * 4


def test_pixel_img2img_and_unconditional(models, source, tmp_path, capsys) -> None:
    code, out, _ = _cli(capsys, "--source", "image_folder", "--root", source, "--out", tmp_path / "sdedit",
                        "--generator", "pixel_img2img", "--model", models["pixel"], "--steps", "4", "--strength",
                        "0.5", "--device", "cpu", "--limit", "2", "--format", "webp")  # fmt: skip
    assert code == 0, out
    rows = read_manifest(tmp_path / "sdedit")
    assert [r["file"] for r in rows] == ["images/cat/a/v0.webp", "images/cat/b/v0.webp"]
    assert rows[0]["strength"] == 0.5 and rows[0]["guidance"] is None and rows[0]["scheduler"] == "DDPMScheduler"
    assert (rows[0]["width"], rows[0]["height"]) == (32, 32)  # the source's size (the model works at 16)
    with Image.open(tmp_path / "sdedit" / rows[0]["file"]) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 8  # a greyscale model gives grey RGB images

    code, out, _ = _cli(capsys, "--out", tmp_path / "inflate", "--generator", "unconditional", "--model",
                        models["pixel"], "--steps", "2", "--num-unconditional", "3", "--device", "cpu",
                        "--scheduler", "ddim")  # fmt: skip
    assert code == 0, out
    rows = read_manifest(tmp_path / "inflate")
    assert [(r["src_id"], r["variant_id"], r["label"]) for r in rows] == [(-1, 0, -1), (-1, 1, -1), (-1, 2, -1)]
    assert rows[2]["file"] == "images/unconditional/000002/v0.png" and rows[0]["scheduler"] == "DDIMScheduler"
    assert (rows[0]["width"], rows[0]["height"]) == (16, 16)  # the model's size
    for row in rows:
        validate_row(row)


def test_adaptive_noise_level_groups_batches_by_level(models, source, tmp_path) -> None:
    adapter = _adapter("unclip", models, noise_level="adaptive")
    levels_called: list[tuple[int, int]] = []
    generate = adapter.generate

    def counting(sources, generators, *, noise_level=None):
        levels_called.append((noise_level, len(sources)))
        return generate(sources, generators, noise_level=noise_level)

    adapter.generate = counting  # type: ignore[method-assign]
    result = generate_bank(
        tmp_path / "bank", adapter.settings, model=None, source="image_folder", root=str(source), size=32,
        batch_size=2, progress=False, adapter=adapter,
        scorer=lambda images: images.float().mean(dim=(1, 2, 3)) / 255,  # brightness as "foreground"
        noise_levels=lambda ratio: (ratio > 0.5).long() * 300,
    )  # fmt: skip
    assert result.generated == 4
    rows = read_manifest(tmp_path / "bank")
    assert [r["noise_level"] for r in rows] == [0, 0, 300, 300]
    assert all(0 < r["fg_ratio"] < 1 for r in rows) and rows[0]["fg_ratio"] < rows[3]["fg_ratio"]
    assert sorted(levels_called) == [(0, 2), (300, 2)]


def test_invalid_outputs_are_not_written_and_reported(models, source, tmp_path, capsys, monkeypatch) -> None:
    cls = GENERATORS["pixel_img2img"]
    original = cls.generate

    def half_nan(self, sources, generators, *, noise_level=None):
        images, reasons = original(self, sources, generators, noise_level=noise_level)
        images[0, 0, 0, 0] = np.nan
        return images, reasons

    monkeypatch.setattr(cls, "generate", half_nan)
    code, out, _ = _cli(capsys, "--source", "image_folder", "--root", source, "--out", tmp_path / "bank",
                        "--generator", "pixel_img2img", "--model", models["pixel"], "--steps", "2", "--limit", "2",
                        "--batch-size", "2", "--device", "cpu")  # fmt: skip
    assert code == 1 and "generated 1" in out and "invalid 1" in out and "non-finite" in out
    assert [r["file"] for r in read_manifest(tmp_path / "bank")] == ["images/cat/b/v0.png"]
    assert not (tmp_path / "bank" / "images" / "cat" / "a").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--generator", "unclip", "--strength", "0.5"], "--strength does not apply to --generator unclip"),
        (["--generator", "img2img", "--noise-level", "100"], "--noise-level does not apply to --generator img2img"),
        (["--generator", "img2img", "--strength", "1.5"], r"--strength must be in \(0, 1\]"),
        (["--generator", "img2img", "--strength", "0.1", "--steps", "5"], "leaves no denoising step"),
        (["--generator", "unclip", "--noise-level", "1000"], r"integer in \[0, 999\]"),
        (["--generator", "unclip", "--noise-level", "lots"], "neither an integer"),
        (["--generator", "variation", "--scorer", "saliency"], "--scorer only applies"),
        (["--generator", "pixel_img2img", "--prompt", "a cat"], "--prompt does not apply"),
        (["--generator", "dalle"], "unknown generator 'dalle'"),
        (["--generator", "unclip", "--noise-level", "adaptive"], "needs --scorer-model PATH and --scorer-pca"),
        (["--generator", "unclip"], "--model is required"),
        (["--generator", "unclip", "--model", "MISSING"], "does not exist; --model must be a folder saved by"),
        (["--generator", "unclip", "--model", "EMPTY"], "lacks model_index.json, unet; --model must be"),
        (["--generator", "unclip", "--model", "PIXEL"], "cannot load a unclip model .* --model must be a folder saved"),
        (["--generator", "pixel_img2img", "--model", "EMPTY"], "lacks unet/config.json, scheduler/scheduler_config"),
        (["--generator", "unconditional", "--model", "PIXEL"], "needs --num-unconditional"),
        (["--generator", "pixel_img2img", "--model", "PIXEL", "--format", "gif"], "--format 'gif' is unknown"),
        (["--generator", "pixel_img2img", "--model", "PIXEL", "--num-shards", "2", "--shard-index", "2"],
         "--shard-index must be in"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_config_errors(extra, message, models, source, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"PIXEL": models["pixel"], "MISSING": tmp_path / "nope", "EMPTY": tmp_path / "empty"}
    extra = [str(paths.get(a, a)) for a in extra]
    code, _, err = _cli(capsys, "--source", "image_folder", "--root", source, "--out", tmp_path / "b", *extra)
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_settings_from_another_model_are_refused(models, source, tmp_path) -> None:
    common = {"source": "image_folder", "root": str(source), "limit": 1, "progress": False, "size": 16}
    generate_bank(tmp_path / "b", _settings("pixel_img2img"), model=models["pixel"], **common)
    with pytest.raises(ConfigError, match="generated with other settings"):
        generate_bank(tmp_path / "b", _settings("img2img"), model=models["img2img"], **common)
    row = read_manifest(tmp_path / "b")[0]
    shard = tmp_path / "b" / "manifest.shard-0-of-1.jsonl"
    shard.write_text(json.dumps({**row, "src_id": 5, "model_revision": "sha256:other"}) + "\n")
    with pytest.raises(DataError, match="mixes generation settings"):
        merge_manifests(tmp_path / "b", require_complete=False)


def test_missing_diffusers_names_the_extra(monkeypatch, models) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    with pytest.raises(ConfigError, match="diffusers and transformers") as err:
        import_diffusers()
    assert INSTALL_HINT in str(err.value) and INSTALL_HINT == 'pip install "ssl-toolkit[gen]"'
    with pytest.raises(ConfigError, match="ssl-toolkit\\[gen\\]"):
        _adapter("pixel_img2img", models)


def test_model_revision_of_a_snapshot_and_of_a_folder(tmp_path) -> None:
    snap = tmp_path / "models--x--y" / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    assert model_revision(snap) == "ab" * 20
    (tmp_path / "m" / "unet").mkdir(parents=True)
    (tmp_path / "m" / "unet" / "config.json").write_text("{}")
    (tmp_path / "m" / "unet" / "w.safetensors").write_bytes(b"12345")
    first = model_revision(tmp_path / "m")
    (tmp_path / "m" / "unet" / "w.safetensors").write_bytes(b"54321")  # same size: weights are not hashed
    assert model_revision(tmp_path / "m") == first and first.startswith("sha256:")
    (tmp_path / "m" / "unet" / "config.json").write_text('{"a": 1}')
    assert model_revision(tmp_path / "m") != first


def test_fashion_mnist_source_keys(models, tmp_path) -> None:
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    result = generate_bank(tmp_path / "b", _settings("pixel_img2img"), model=models["pixel"], source="fashion_mnist",
                           limit=2, device="cpu", progress=False)  # fmt: skip
    rows = read_manifest(tmp_path / "b")
    assert result.generated == 2 and [r["src_path"] for r in rows] == ["train/000000", "train/000001"]
    assert [r["file"] for r in rows] == ["images/train/000000/v0.png", "images/train/000001/v0.png"]
    assert (rows[0]["width"], rows[0]["height"]) == (28, 28) and rows[0]["label"] == 9


def test_two_processes_write_the_one_process_bank(models, source, tmp_path) -> None:
    from tests.dist_helpers import run_two_processes

    run_two_processes(Path(__file__).with_name("bank_dist_worker.py"), tmp_path / "two", models["pixel"], source)
    settings = _settings("pixel_img2img", strength=0.5)
    generate_bank(tmp_path / "one", settings, model=models["pixel"], source="image_folder", root=str(source),
                  variants=2, batch_size=1, device="cpu", progress=False)  # fmt: skip
    two = read_manifest(tmp_path / "two")
    assert len(two) == 8 and two == read_manifest(tmp_path / "one")
    assert not list((tmp_path / "two").glob("manifest.shard-*"))  # rank 0 merged both shards
