"""The train stage on a multi-node loopback cluster (``infra/ray/local_cluster.py``) with storage on S3 only.

One cluster per session (head with 0 CPUs, two one-CPU workers, each node with a custom resource naming
it); the S3 store is moto's server on 127.0.0.1. The stage runs as a Ray job through
``infra/ray/submit_stage.py``, so its driver runs in the job's copy of the code, not in the checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.fixtures.ray_cluster import MultiNodeCluster, assert_loopback_only
from tests.test_train_ray import write_project

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, ray
ray.init()
names = [k for n in ray.nodes() for k in n["Resources"] if k.startswith("anytime_")]
@ray.remote(num_cpus=0)
def where():
    return ray.get_runtime_context().get_node_id()
print(json.dumps({name: ray.get(where.options(resources={name: 0.01}).remote()) for name in names}))
"""


def cluster_pids(cluster: MultiNodeCluster) -> list[int]:
    return [cluster.pid, *(p.pid for p in psutil.Process(cluster.pid).children(recursive=True))]


@pytest.mark.heavy
def test_three_loopback_nodes_with_their_own_resources_run_tasks(ray_nodes: MultiNodeCluster):
    assert [n["name"] for n in ray_nodes.nodes] == ["head", "worker_1", "worker_2"]
    assert [n["resources"]["CPU"] for n in ray_nodes.nodes] == [0, 1, 1]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], env=ray_nodes.env, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    ran_on = json.loads(probe.stdout.strip().splitlines()[-1])
    expected = {"anytime_head": "head", "anytime_worker_1": "worker_1", "anytime_worker_2": "worker_2"}
    assert ran_on == {res: ray_nodes.node(name)["node_id"] for res, name in expected.items()}
    assert len(set(ran_on.values())) == 3
    assert_loopback_only(cluster_pids(ray_nodes))


@pytest.mark.heavy
def test_local_shards_on_a_multinode_cluster_are_one_line(
    ray_nodes: MultiNodeCluster, digits_shards: Path, tmp_path: Path
):
    project = write_project(tmp_path / "project", digits_shards, eann={"members": 1}, opt={"members": []})
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.train"],
        cwd=project,
        env=ray_nodes.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "the cluster has 3 nodes but local paths were given" in line
    assert f"train.shards={digits_shards}, train.storage_path=ray_results" in line
