"""The AWS cluster launcher config passes Ray's own schema checks and installs nothing at runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "infra" / "ray" / "cluster-aws.yaml"


@pytest.fixture
def raw_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_launcher_config_passes_ray_validation(raw_config):
    prepared = prepare_config(copy.deepcopy(raw_config))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_misspelled_key_is_rejected_by_ray_schema(raw_config):
    raw_config["available_node_types"]["gpu-g5"]["max_worker"] = 8  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(raw_config))


def test_nodes_install_nothing_at_startup(raw_config):
    """Ray's defaults add `pip install` setup commands; the config must override every one of them."""
    prepared = prepare_config(copy.deepcopy(raw_config))
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert prepared[key] == [], key
    start = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    assert "pip" not in start and "apt" not in start


def test_gpu_worker_groups_autoscale_from_zero(raw_config):
    prepared = prepare_config(copy.deepcopy(raw_config))
    workers = {n: t for n, t in prepared["available_node_types"].items() if n != prepared["head_node_type"]}
    gpu_families = ("g4dn", "g5", "g6", "p3", "p4d", "p5")
    instance_types = [t["node_config"]["InstanceType"] for t in workers.values()]
    assert instance_types and all(it.startswith(gpu_families) for it in instance_types)
    assert all(t["min_workers"] == 0 < t["max_workers"] for t in workers.values())
    assert sum(t["max_workers"] for t in workers.values()) <= prepared["max_workers"]
    assert prepared["docker"]["image"].endswith("-gpu")


def test_every_node_starts_with_token_auth(raw_config):
    starts = raw_config["head_start_ray_commands"] + raw_config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("export RAY_AUTH_MODE=token;" in c for c in ray_starts)
    assert raw_config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
