"""The install works from plain PyPI: no pin only one machine can satisfy (issue 16.2).

constraints.txt is the exact, resolved set the Makefile and the image install with; pyproject.toml gives the
library's own ranges. A local version label (`torch==2.13.0+cpu`), a direct file or URL reference, or an
index / find-links option resolves only where that wheel or index happens to be, so each is refused here.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SUPPORTED_PYTHONS = ["3.11.4", "3.12", "3.13"]


def _requirement_lines(text: str) -> list[str]:
    """Lines of a pip requirements/constraints file, comments and blanks dropped."""
    return [line.partition("#")[0].strip() for line in text.splitlines() if line.partition("#")[0].strip()]


def unportable(requirement: str, *, exact: bool) -> str | None:
    """Why plain PyPI cannot satisfy `requirement` (or, with `exact`, why it is not an exact public pin)."""
    if requirement.startswith("-"):
        return "a pip option (index, find-links, file): only name==version pins belong here"
    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return "not a requirement (a path or file name?)"
    if req.url:
        return f"a direct reference to {req.url}"
    try:
        local = [spec for spec in req.specifier if Version(spec.version.removesuffix(".*")).local]
    except InvalidVersion as error:  # only `===` takes arbitrary strings
        return str(error)
    if local:
        return f"a local version label ({local[0]}), which only one machine's wheels carry"
    if exact and [spec.operator for spec in req.specifier] != ["=="]:
        return "not an exact == pin"
    return None


def unportable_lines(lines: Iterable[str], *, exact: bool) -> dict[str, str]:
    return {line: why for line in lines if (why := unportable(line, exact=exact))}


def _constraints() -> dict[str, Version]:
    pins = [Requirement(line) for line in _requirement_lines((ROOT / "constraints.txt").read_text())]
    return {canonicalize_name(req.name): Version(next(iter(req.specifier)).version) for req in pins}


def _pyproject_requirements() -> list[str]:
    project = PYPROJECT["project"]
    extras = [dep for deps in project["optional-dependencies"].values() for dep in deps]
    return project["dependencies"] + extras + PYPROJECT["build-system"]["requires"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("torch==2.13.0+cpu", "local version label"),
        ("torch===2.13.0+cu128", "local version label"),
        ("torch @ file:///opt/wheels/torch-2.13.0-cp311-cp311-linux_x86_64.whl", "direct reference"),
        ("anytime @ https://example.invalid/anytime-0.1.0.tar.gz", "direct reference"),
        ("--index-url https://download.pytorch.org/whl/cpu", "pip option"),
        ("--extra-index-url file:///opt/pypi/simple", "pip option"),
        ("--find-links /opt/wheels", "pip option"),
        ("-f /opt/wheels", "pip option"),
        ("torch===2.13.0-cpu-build", "Invalid version"),
        ("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "not a requirement"),
    ],
)
def test_the_check_refuses_what_plain_pypi_cannot_satisfy(line, reason):
    assert reason in unportable(line, exact=False)


def test_the_check_admits_public_pins_and_ranges():
    assert unportable("torch==2.13.0", exact=True) is None
    assert unportable("ray[train,tune]==2.60.0; python_version < '3.14'", exact=True) is None
    assert unportable("numpy>=2.4.6,<3", exact=False) is None
    assert unportable("numpy>=2.4.6,<3", exact=True) == "not an exact == pin"


def test_constraints_are_exact_public_pins():
    lines = _requirement_lines((ROOT / "constraints.txt").read_text())
    assert lines, "constraints.txt is empty"
    assert unportable_lines(lines, exact=True) == {}


def test_pyproject_requirements_are_public_ranges():
    requirements = _pyproject_requirements()
    assert unportable_lines(requirements, exact=False) == {}
    pinned = [r for r in requirements if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
    assert pinned == [], "exact pins belong in constraints.txt; pyproject.toml takes ranges"


def test_every_dependency_range_admits_its_constraint():
    """The constraints are the resolved set of pyproject's ranges: each direct dependency is pinned there,
    inside its range (so the lower bounds are what the tests ran with, or older)."""
    pins = _constraints()
    project = PYPROJECT["project"]
    direct = project["dependencies"] + [d for deps in project["optional-dependencies"].values() for d in deps]
    for requirement in map(Requirement, direct):
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue  # the dev extra's self-reference
        assert name in pins, f"{name} is a dependency but has no pin in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{requirement} excludes the pinned {pins[name]}"


def test_requires_python_admits_the_supported_versions():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for version in [*SUPPORTED_PYTHONS, ".".join(map(str, sys.version_info[:3]))]:
        assert requires.contains(version), f"requires-python {requires} excludes {version}"
    assert not requires.contains("3.11.3"), "3.11.4 is the first with tarfile extraction filters"
