"""Property: whatever a user does to params.yaml (drop, add, retype or perturb keys in any section),
every stage's entry either accepts it or exits 2 with exactly one line on stderr, never a traceback and
never an output. Every stage's main starts with ``load_params``, so the property is checked on that
in-process for many mutations, and on a few real stage processes for the end-to-end claim."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.cli import run
from pipelines.config import Params, load_params
from tests.fixtures.params import project_params
from tests.fixtures.stages import run_stage

Path_ = tuple[str | int, ...]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)


def paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key path into ``node`` (mapping keys and list indices), parents before children."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    found = []
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def parent_of(raw: dict, path: Path_) -> Any:
    node = raw
    for key in path[:-1]:
        node = node[key]
    return node


def perturb(value: Any, draw) -> Any:
    """A nearby wrong-ish value of the same type (edges, signs, duplicates, empties)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return draw(st.sampled_from([0, -1, -value, value * 1000, value + 1, 0.5, float("inf")]))
    if isinstance(value, str):
        return draw(st.sampled_from(["", value + "x", "../" + value, value.upper(), "s3://", "nan"]))
    if isinstance(value, list):
        return draw(st.sampled_from([[], value + value, value[:1], [value]]))
    if isinstance(value, dict):
        return draw(st.sampled_from([{}, {**value, "x": 1}, list(value)]))
    return draw(values)


@st.composite
def mutated_params(draw) -> dict:
    """The project's params.yaml after 1-3 random drops, additions, retypes or perturbations."""
    raw = project_params()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section = draw(st.sampled_from(sorted(raw)))
        inside = [(section, *p) for p in paths(raw[section])] if isinstance(raw[section], dict | list) else []
        path = draw(st.sampled_from([(section,), *inside]))
        parent, key = parent_of(raw, path), path[-1]
        operation = draw(st.sampled_from(["drop", "add", "retype", "perturb"]))
        if operation == "drop" and isinstance(parent, dict):
            del parent[key]
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from([f"{key}_x", "extra", str(key).upper()]))] = draw(values)
        elif operation == "retype":
            parent[key] = draw(values)
        else:
            parent[key] = perturb(parent[key], draw)
    return raw


def assert_one_line_or_accepted(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        run(lambda: load_params(path))
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return
    assert isinstance(load_params(path), Params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_params())
def test_any_mutation_is_accepted_or_one_line(
    raw: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert_one_line_or_accepted(path, capsys)


@pytest.mark.parametrize(
    "text",
    ["", "[1, 2]", "data: {dataset: [", "data: 1\n", "\x00", yaml.safe_dump({"data": None})],
)
def test_unparsable_or_non_mapping_files_are_one_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert_one_line_or_accepted(path, capsys)


@pytest.mark.heavy
@pytest.mark.parametrize("stage", ["fetch", "shard", "train", "tune", "assemble", "report"])
def test_real_stage_processes_refuse_a_mutated_file_in_one_line(stage: str, tmp_path: Path) -> None:
    raw = copy.deepcopy(project_params())
    raw["train"]["schedule"] = {"name": "step", "milestones": [99]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = run_stage(stage, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: params.yaml: train.schedule.milestones = [99]: must be strictly increasing epochs in 1..8 "
        "(train.epochs)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
