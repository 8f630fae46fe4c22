"""The ``data:`` section of params.yaml is validated at the door with one line naming key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import ParamsError, validate_params

REPO = Path(__file__).resolve().parents[1]


def params_with(**data: object) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"] = {**raw["data"], **data}
    return raw


def test_repo_defaults_are_valid_and_embedded_digits() -> None:
    data = validate_params(params_with()).data
    assert data.dataset == "digits" and data.rows_per_shard > 0
    assert data.location is None and 0 < data.val_fraction < 1


@pytest.mark.parametrize(
    "location",
    [
        "/data/mnist",
        "relative/dir",
        "https://example.org/cifar-10-binary.tar.gz",
        "s3://my-bucket/cifar/x.tar.gz",
    ],
)
def test_location_forms_accepted(location: str) -> None:
    assert validate_params(params_with(dataset="cifar10", location=location)).data.location == location


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dataset": "imagenet21k"}, r"data\.dataset = 'imagenet21k': Input should be 'digits', 'mnist'"),
        ({"dataset": "mnist"}, r"data\.location = None: .*dataset 'mnist' needs a location"),
        (
            {"dataset": "svhn", "location": "ftp://host/x"},
            r"data\.location = 'ftp://host/x': .*unsupported scheme",
        ),
        ({"dataset": "svhn", "location": "s3://A_bad/x"}, r"data\.location = 's3://A_bad/x': .*valid bucket"),
        ({"location": "/some/path"}, r"data\.location = '/some/path': .*digits is embedded"),
        ({"rows_per_shard": 0}, r"data\.rows_per_shard = 0: Input should be greater than 0"),
        ({"val_fraction": 1.5}, r"data\.val_fraction = 1\.5: Input should be less than 1"),
        ({"sha256": {"a.tar": "xyz"}}, r"data\.sha256: .*64 lowercase hex"),
        ({"files": ["../etc/passwd"]}, r"data\.files = .*relative name"),
        ({"endpoint_url": "minio:9000"}, r"data\.endpoint_url = 'minio:9000': .*http\(s\)://"),
        ({"colour": "red"}, r"unknown key 'data\.colour'"),
    ],
)
def test_bad_values_give_one_line_naming_key_and_value(change: dict, expected: str) -> None:
    with pytest.raises(ParamsError, match=expected) as info:
        validate_params(params_with(**change))
    assert "\n" not in str(info.value)
