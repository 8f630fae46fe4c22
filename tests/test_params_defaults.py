"""The schema's defaults are params.yaml's values, and its lists of names are the library's."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from anytime.data import DATASETS
from anytime.metrics import MILESTONES
from anytime.models import list_models
from anytime.weighting import SCHEMES, list_strategies
from pipelines.config import AssembleParams, DataParams, Params, TrainParams, TuneParams, validate_params
from pipelines.config.train import BottleneckParams, MilestoneFraction, ResANNParams
from tests.fixtures.params import error_for, project_params, with_section


def differences(default: Any, value: Any, key: str = "") -> list[str]:
    """Dotted keys where two ``model_dump(mode="json")`` trees differ, with both values."""
    if isinstance(default, dict) and isinstance(value, dict):
        return [
            d
            for k in default.keys() | value.keys()
            for d in differences(default.get(k), value.get(k), f"{key}.{k}")
        ]
    return [] if default == value else [f"{key.lstrip('.')}: schema {default!r}, params.yaml {value!r}"]


def test_schema_defaults_equal_params_yaml() -> None:
    defaults = Params(data=DataParams(), train=TrainParams(), tune=TuneParams(), assemble=AssembleParams())
    project = validate_params(project_params())
    assert differences(defaults.model_dump(mode="json"), project.model_dump(mode="json")) == []


def test_name_lists_are_the_library_registries() -> None:
    assert set(get_args(DataParams.model_fields["dataset"].annotation)) == set(DATASETS)
    assert set(get_args(BottleneckParams.model_fields["name"].annotation)) == set(list_models("resann[0-9]*"))
    assert get_args(ResANNParams.model_fields["name"].annotation) == ("resann",) and "resann" in list_models()
    assert {float(f) for f in get_args(MilestoneFraction)} == {float(f) for f in MILESTONES.values()}
    static = TuneParams().space.weighting[0]
    assert static.strategy == "static" and set(static.scheme.choice) == set(SCHEMES) - {"opt"}


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
