"""Rebuild the two example reports in docs/: a labelled run and an unlabelled run, with screenshots.

Both are short runs of ``recipes/tests/tiny.yaml`` (a narrow ResNet-10t) on image folders written here from
Fashion-MNIST (the Debian package's files, ``/usr/share/datasets/fashion-mnist``): 1,200 training images
(120 a class) and, for the labelled run, 300 test images in class sub-folders; for the unlabelled run the
same 1,200 training images in one flat folder. Each run trains with the online monitor on, is evaluated
by ``ssl-toolkit train`` and gets its report; the report is copied to ``docs/example_report/report.html``
and ``docs/example_report_unlabelled/report.html`` and, when Debian's ``chromium`` is installed,
screenshotted (``report.png``). The numbers say nothing about any method: the runs are a few minutes of CPU time.

    PYTHONPATH=$PWD python docs/example_report/make_examples.py [--work /tmp/example_runs] [--report-only]

``--report-only`` re-renders the reports of runs already in ``--work`` (after a change to the report code).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PER_CLASS, TEST_PER_CLASS = 120, 30
OVERRIDES = [
    "views=[{name: global, n: 2, size: 28, scale: [0.3, 1.0], augment: simclr, strength: 0.5},"
    " {name: local, n: 2, size: 14, scale: [0.1, 0.3], augment: simclr, strength: 0.5}]",
    "data.view_backend=batched",
    "train.epochs=5",
    "train.batch_size=32",
    "train.lr=0.3",
    "train.log_every=4",
    "train.save_every=1000",
    "monitor.every=20",
    "monitor.samples=600",
    "monitor.knn_bank=400",
    "monitor.lidar_samples=200",
    "monitor.export_best=true",
    "eval.lidar_samples=400",
]


def write_folders(work: Path) -> tuple[Path, Path]:
    """Fashion-MNIST images as PNG files: a labelled ``train/``+``test/`` folder and an unlabelled flat one."""
    from PIL import Image

    from ssl_toolkit.data import build_dataset

    labelled, flat = work / "fashion_labelled", work / "fashion_unlabelled"
    for split, per_class in (("train", PER_CLASS), ("test", TEST_PER_CLASS)):
        data = build_dataset(name="fashion_mnist", split=split)
        counts = dict.fromkeys(range(len(data.classes)), 0)
        for i in range(len(data)):
            image, label = data[i]
            if counts[label] >= per_class:
                continue
            counts[label] += 1
            name = data.classes[label].replace("/", "-").replace(" ", "_")
            folder = labelled / split / name
            folder.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(image[0].numpy())  # grey: one channel is enough
            picture.save(folder / f"{i:05d}.png")
            if split == "train":
                flat.mkdir(parents=True, exist_ok=True)
                picture.save(flat / f"{i:05d}.png")
            if all(c >= per_class for c in counts.values()):
                break
    return labelled, flat


def train(root: Path, work: Path, name: str) -> Path:
    recipe = str(REPO / "recipes" / "tests" / "tiny.yaml")
    where = [f"data.root={root}", f"train.output_dir={work / 'runs'}", f"train.run_name={name}"]
    command = [sys.executable, "-m", "ssl_toolkit", "train", recipe, *where, *OVERRIDES]
    subprocess.run(command, check=True, cwd=REPO)
    return work / "runs" / name


def screenshot(html: Path, png: Path) -> None:
    """A full-page screenshot with headless Chromium, cropped to the page's content."""
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not found (apt-get install chromium): no screenshot")
        return
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,4600", f"file://{html}"],
            check=True, capture_output=True,
        )  # fmt: skip
    from PIL import Image, ImageChops

    with Image.open(png) as page:
        rgb = page.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is not None:  # drop the white space below the page, keep a margin
        rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + 24)))
    rgb.save(png, optimize=True)  # RGB: a palette would turn the light greys white


def publish(run_dir: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("report*.png"):
        old.unlink()
    shutil.copy(run_dir / "report.html", folder / "report.html")
    screenshot(folder / "report.html", folder / "report.png")
    for path in sorted(folder.iterdir()):
        print(f"{path}: {path.stat().st_size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ssl_toolkit_example_runs")
    parser.add_argument("--report-only", action="store_true", help="re-render the reports of the runs in --work")
    args = parser.parse_args()
    names = {"fashion_folder_labelled": "example_report", "fashion_folder_unlabelled": "example_report_unlabelled"}
    if args.report_only:
        from ssl_toolkit.report import write_report

        runs = [write_report(args.work / "runs" / name).parent for name in names]
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        roots = write_folders(args.work)
        runs = [train(root, args.work, name) for root, name in zip(roots, names)]
    for run, folder in zip(runs, names.values()):
        publish(run, REPO / "docs" / folder)


if __name__ == "__main__":
    main()
