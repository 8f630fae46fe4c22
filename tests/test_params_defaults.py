"""The schema's defaults are the reference's values (docs/params-reference.yaml), params.yaml sets a few of
them, and the schema's lists of names are the library's."""

from __future__ import annotations

import inspect
from typing import Any, get_args

import pytest
import yaml

from anytime.data import DATASETS
from anytime.metrics import MILESTONES
from anytime.models import list_models
from anytime.train import make_optimizer, make_scheduler
from anytime.weighting import SCHEMES, list_strategies
from pipelines.config import AssembleParams, DataParams, Params, TrainParams, TuneParams, validate_params
from pipelines.config.train import (
    BottleneckParams,
    MilestoneFraction,
    OptimizerParams,
    ResANNParams,
    ScheduleParams,
)
from tests.fixtures.params import REFERENCE, ROOT, error_for, project_params, with_section


def differences(default: Any, value: Any, key: str = "") -> list[str]:
    """Dotted keys where two ``model_dump(mode="json")`` trees differ, with both values."""
    if isinstance(default, dict) and isinstance(value, dict):
        return [
            d
            for k in default.keys() | value.keys()
            for d in differences(default.get(k), value.get(k), f"{key}.{k}")
        ]
    return [] if default == value else [f"{key.lstrip('.')}: schema {default!r}, reference {value!r}"]


def leaf_keys(tree: Any, key: str = "") -> set[str]:
    if isinstance(tree, dict) and tree:
        return {leaf for k, v in tree.items() for leaf in leaf_keys(v, f"{key}.{k}")}
    return {key.lstrip(".")}


def test_schema_defaults_equal_the_reference() -> None:
    defaults = Params(data=DataParams(), train=TrainParams(), tune=TuneParams(), assemble=AssembleParams())
    reference = validate_params(project_params(), str(REFERENCE))
    assert differences(defaults.model_dump(mode="json"), reference.model_dump(mode="json")) == []
    assert leaf_keys(project_params()) == leaf_keys(defaults.model_dump(mode="json"))  # every key spelt out


def test_params_yaml_sets_reference_keys_and_every_section_dvc_tracks() -> None:
    """dvc.yaml's stages take params.yaml's sections whole, so each must exist; every key in it is the
    reference's, so a typo fails here rather than as a schema error at the first stage."""
    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(project) == set(Params.model_fields)
    assert leaf_keys(project) <= leaf_keys(project_params())
    assert validate_params(project) == validate_params(project_params())  # the study is the default run


def test_name_lists_are_the_library_registries() -> None:
    assert set(get_args(DataParams.model_fields["dataset"].annotation)) == set(DATASETS)
    assert set(get_args(BottleneckParams.model_fields["name"].annotation)) == set(list_models("resann[0-9]*"))
    assert get_args(ResANNParams.model_fields["name"].annotation) == ("resann",) and "resann" in list_models()
    assert {float(f) for f in get_args(MilestoneFraction)} == {float(f) for f in MILESTONES.values()}
    static = TuneParams().space.weighting[0]
    assert static.family == "static" and set(static.scheme.choice) == set(SCHEMES) - {"opt"}


@pytest.mark.parametrize(
    ("section", "values", "allowed"),
    [
        ("data", {"dataset": "nope"}, DATASETS),
        ("train", {"weighting": {"strategy": "nope"}}, list_strategies()),
        ("train", {"weighting": {"strategy": "alternating", "scheme": "nope"}}, SCHEMES),
        ("train", {"model": {"name": "resann7"}}, list_models("resann[0-9]*")),
    ],
)
def test_a_name_the_library_lacks_is_one_line_with_the_allowed_ones(section, values, allowed) -> None:
    message = error_for(with_section(section, **values))
    assert "'nope'" in message or "'resann7'" in message
    assert all(f"'{name}'" in message for name in allowed), message


@pytest.mark.parametrize(
    ("section", "function", "pipeline_only", "library_only"),
    [
        # reference_batch: the global batch lr is stated at (the pipeline scales it to its workers' batch);
        # fused: how the step runs on a device, not what it learns.
        (OptimizerParams, make_optimizer, {"reference_batch"}, {"fused"}),
        (ScheduleParams, make_scheduler, set(), set()),
    ],
)
def test_the_train_defaults_are_the_library_signatures(
    section, function, pipeline_only, library_only
) -> None:
    """A notebook user calling the library with its defaults trains what ``dvc repro`` trains."""
    signature = inspect.signature(function).parameters
    library = {name: p.default for name, p in signature.items() if p.default is not p.empty}
    pipeline = section().model_dump()
    assert set(pipeline) - set(library) == pipeline_only and set(library) - set(pipeline) == library_only
    assert {k: v for k, v in pipeline.items() if k in library} == {
        k: v for k, v in library.items() if k in pipeline
    }
