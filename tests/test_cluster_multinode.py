"""The train stage on a multi-node loopback cluster (``infra/ray/local_cluster.py``) with storage on S3 only.

One cluster per session (head with 0 CPUs, two one-CPU workers, each node with a custom resource naming
it); the S3 store is moto's server on 127.0.0.1. The stage runs as a Ray job through
``infra/ray/submit_stage.py``, so its driver runs in the job's copy of the code, not in the checkout.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.fixtures.ray_cluster import MultiNodeCluster, assert_loopback_only
from tests.fixtures.s3 import S3Endpoint
from tests.test_train_ray import check_outputs, write_project

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


def upload_dir(s3: S3Endpoint, bucket: str, source: Path, prefix: str) -> str:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.put(bucket, f"{prefix}/{path.relative_to(source).as_posix()}", path.read_bytes())
    return f"s3://{bucket}/{prefix}"


def working_dir(project: Path) -> None:
    """What `ray job submit --working-dir .` takes from a checkout: the code (params are already there)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("anytime", "pipelines", "infra/ray"):
        shutil.copytree(ROOT / package, project / package, ignore=ignore)


@pytest.mark.heavy
def test_runs_train_side_by_side_on_different_nodes_with_shards_and_checkpoints_on_s3(
    ray_nodes: MultiNodeCluster,
    s3_server: S3Endpoint,
    digits_shards: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's server logs each request
    bucket = s3_server.make_bucket("anytime")
    shards = upload_dir(s3_server, bucket, digits_shards, "shards/digits")
    project = write_project(
        tmp_path / "project",
        shards,
        storage_path=f"s3://{bucket}/ray",
        epochs=2,
        scaling={"cpus_per_worker": 1},  # one run per worker node at a time
    )
    working_dir(project)
    env = {**ray_nodes.env, **s3_server.env}
    forwarded = [f"--env={name}" for name in s3_server.env]
    command = [
        sys.executable, "infra/ray/submit_stage.py", "--address", ray_nodes.dashboard_url,
        f"--staging=s3://{bucket}/staging",
        "--out=outputs/members", "--out=outputs/opt", "--out=outputs/live",
        *forwarded, "--", "python", "-m", "pipelines.train",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    for name, heads in (("m0", 3), ("m1", 6)):
        check_outputs(project / "outputs/members" / name, num_heads=heads, epochs=2)
    [opt] = (project / "outputs/opt").iterdir()
    check_outputs(opt, num_heads=int(opt.name.removeprefix("m1-opt")) + 1, epochs=2)
    placed = dict(re.findall(r"train: (\S+) epoch 0 on node ([0-9a-f]+)", log))
    workers = {ray_nodes.node(name)["node_id"] for name in ("worker_1", "worker_2")}
    assert set(placed) == {"m0", "m1", opt.name}, log[-4000:]
    assert set(placed.values()) == workers  # both worker nodes trained, the 0-CPU head none
    # The S3 server's own request log: every epoch's checkpoint of every run went to the bucket.
    uploads = set(
        re.findall(r'"PUT /anytime/ray/(\S+?)-[0-9a-f]{12}/(checkpoint_[^/]+)/checkpoint\.pt', caplog.text)
    )
    assert sorted(run for run, _ in uploads) == sorted([*placed] * 2)  # 2 epochs each
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if k.startswith("staging/")]  # the staged outputs were cleaned up
    assert all(k.startswith(("shards/", "ray/")) for k in keys), keys  # nothing written elsewhere
