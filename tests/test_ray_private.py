"""The private Ray names the pipelines use (no public API serves them) exist on the installed Ray as used.

Ray is minor-pinned in pyproject.toml for them; an upgrade that moves one fails here, not in a stage."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import ray
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_the_installed_ray_is_within_the_pinned_minor():
    pipelines = PYPROJECT["project"]["optional-dependencies"]["pipelines"]
    (pin,) = [Requirement(r) for r in pipelines if Requirement(r).name == "ray"]
    assert Version(ray.__version__) in pin.specifier and pin.specifier.contains("2.60.9")
    assert not pin.specifier.contains("2.61.0")  # a new minor is checked here before it is allowed


def test_loopback_switch_and_started_processes_are_where_ray_cluster_reads_them():
    from ray._private import node, ray_constants, services, worker

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert "ENABLE_RAY_CLUSTER" in inspect.getsource(services)  # the node's address lookup reads it
    assert hasattr(worker, "_global_node")  # the Node whose all_processes a private cluster reaps
    assert "self.all_processes" in inspect.getsource(node.Node)


def test_the_head_node_resource_is_the_one_ray_gives_the_head():
    from ray._common.constants import HEAD_NODE_RESOURCE_NAME

    assert HEAD_NODE_RESOURCE_NAME == "node:__internal_head__"
