"""The train and tune stages on a multi-node loopback cluster (``infra/ray/local_cluster.py``) with storage
on S3 only, and the loss of a node.

One cluster for the module (head with 0 CPUs, two one-CPU workers, each node with a custom resource naming
it); the node-loss test kills two of its worker nodes, which the cluster replaces. The S3 store is moto's
server on 127.0.0.1. The stages run as a Ray job through ``infra/ray/submit_stage.py``, so their drivers run
in the job's copy of the code, not in the checkout.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.fixtures.dvc_project import sh
from tests.fixtures.ray_cluster import MultiNodeCluster, RayHead, assert_loopback_only
from tests.fixtures.s3 import S3Endpoint
from tests.test_cluster_faults import refused
from tests.test_train_ray import check_outputs, history, write_project

ROOT = Path(__file__).resolve().parents[1]
# Keys in the bucket: ray/<run>-<fingerprint>/checkpoint_<time>/checkpoint.pt (train, until the run ends);
# per trial of the tune experiment, its Train run's checkpoints and Tune's result.json.
TRAIN_CHECKPOINT = re.compile(r"ray/(?!tune/)(\S+?)-[0-9a-f]{12}/checkpoint_[^/]+/checkpoint\.pt")
TRIAL_CHECKPOINT = re.compile(r"ray/tune/tune-[0-9a-f]{12}/trials/[^/]+/checkpoint_[^/]+/checkpoint\.pt")
TRIAL_RESULT = re.compile(r"ray/tune/tune-[0-9a-f]{12}/[^/]+/result\.json")
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
    line = refused(project, "train", ray_nodes.env)
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


def s3_project(
    root: Path,
    s3: S3Endpoint,
    shards: Path,
    lrs: tuple[float, ...] = (0.05, 0.1),
    tune_epochs: int = 1,
    **train,
) -> tuple[Path, str]:
    """A project whose shards and run storage (train's and tune's) are only in a fresh bucket; its search
    is one trial per learning rate in ``lrs``."""
    bucket = s3.make_bucket(f"anytime-{secrets.token_hex(4)}")  # the module's S3 server serves every test
    project = write_project(
        root,
        upload_dir(s3, bucket, shards, "shards/digits"),
        storage_path=f"s3://{bucket}/ray",
        scaling={"cpus_per_worker": 1},  # one Train worker per one-CPU worker node at a time
        **train,
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"] |= {
        "member": "m0",
        "epochs": tune_epochs,
        "search_alg": "grid",
        "num_samples": 1,
        "scheduler": {"name": "fifo"},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "storage_path": f"s3://{bucket}/ray/tune",
        "space": {
            "weighting": [{"family": "static", "scheme": "sieve"}],
            "optimizer": {"lr": {"grid": list(lrs)}, "weight_decay": 0.0},
        },
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    working_dir(project)
    return project, bucket


def submit(
    cluster: MultiNodeCluster,
    s3: S3Endpoint,
    bucket: str,
    outs: list[str],
    stage: str,
    env: tuple[str, ...] = (),
) -> list[str]:
    """``infra/ray/submit_stage.py`` as a user runs it: the stage as a Ray job, ``outs`` staged back on S3,
    the S3 settings and the variables named in ``env`` forwarded to the job."""
    return [
        sys.executable, "infra/ray/submit_stage.py", "--address", cluster.dashboard_url,
        f"--staging=s3://{bucket}/staging", *(f"--out={out}" for out in outs),
        *(f"--env={name}" for name in (*s3.env, *env)), "--", "bash", "-c", stage,
    ]  # fmt: skip


def assert_some_side_by_side(cluster: MultiNodeCluster, project: Path, runs: list[str]) -> None:
    """Two runs trained at once: the cluster's second Ray Train worker started before any run had ended.

    Starts come from Ray's state API (its workers' actor-creation tasks; the train stage's come first), ends
    from the logged epochs: a run's logged epochs alone miss its worker's start-up, which under load
    outlasts a tiny run's epochs.
    """
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "list", "tasks", "--address", cluster.dashboard_url,
         "--filter", "type=ACTOR_CREATION_TASK", "--detail", "--format", "json", "--limit", "10000"],
        env=cluster.env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    starts = sorted(  # the CLI prints times as local datetimes (Humanify.timestamp)
        datetime.fromisoformat(t["start_time_ms"]).timestamp() * 1000
        for t in json.loads(listed)
        if t["func_or_class_name"].startswith("RayTrainWorker")
    )
    first_end = min(history(project, name)[-1][1] for name in runs)
    assert len(starts) >= 2 and starts[1] < first_end, (starts, first_end)


def bucket_keys(s3: S3Endpoint, bucket: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.heavy
def test_train_and_tune_as_a_ray_job_run_on_the_worker_nodes_with_storage_only_on_s3(
    ray_nodes: MultiNodeCluster,
    ray_head: RayHead,
    s3_server: S3Endpoint,
    digits_shards: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    """Two EANN members and an OPT run side by side on the two worker nodes, one of them through a crash of
    its Train worker, then a two-trial tune, in one job (one job start for both stages); ``ray_head`` is
    another token-auth cluster on the machine, which the job's drivers must not join. DVC then records the
    outputs that came back (cluster mode A)."""
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's server logs each request
    project, bucket = s3_project(tmp_path / "project", s3_server, digits_shards, epochs=2)
    outs = ["outputs/members", "outputs/opt", "outputs/live", "outputs/tune"]
    stages = "python -m pipelines.train && python -m pipelines.tune"
    marker = tmp_path / "fault-fired"  # pipelines/training/train_worker.py: fire once, in m1 at epoch 1
    fault = {"ANYTIME_FAULT_EPOCH": "1", "ANYTIME_FAULT_MARKER": str(marker), "ANYTIME_FAULT_RUN": "m1"}
    result = subprocess.run(
        submit(ray_nodes, s3_server, bucket, outs, stages, env=tuple(fault)),
        cwd=project,
        env={**ray_nodes.env, **s3_server.env, **fault},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    joined = re.findall(r"joined the Ray cluster at ([^\s;]+)", log)
    assert joined and set(joined) == {ray_nodes.address}, (joined, ray_head.address)
    assert marker.exists() and "injected fault in run 'm1' at epoch 1" in log

    [opt] = (project / "outputs/opt").iterdir()
    runs = {"m0": 3, "m1": 6, opt.name: int(opt.name.removeprefix("m1-opt")) + 1}  # name: heads
    for name, heads in runs.items():
        check_outputs(
            project / "outputs" / ("opt" if name == opt.name else "members") / name, num_heads=heads, epochs=2
        )
        assert [epoch for epoch, _ in history(project, name)] == [0, 1]  # the crash repeated no epoch
    assert_some_side_by_side(ray_nodes, project, list(runs))
    placed = dict(re.findall(r"train: (\S+) epoch 0 on node ([0-9a-f]+)", log))
    workers = {ray_nodes.node(name)["node_id"] for name in ("worker_1", "worker_2")}
    assert set(placed) == {"m0", "m1", opt.name}, log[-4000:]
    assert set(placed.values()) == workers  # both worker nodes trained, the 0-CPU head none
    trials = pd.read_csv(project / "outputs/tune/trials.csv")
    assert sorted(trials["optimizer.lr"]) == [0.05, 0.1] and set(trials["status"]) == {"completed"}
    assert json.loads((project / "outputs/tune/best.json").read_text())["trials"] == 2

    keys = bucket_keys(s3_server, bucket)
    assert not [k for k in keys if k.startswith("staging/")]  # the staged outputs were cleaned up
    assert all(k.startswith(("shards/", "ray/")) for k in keys), keys  # nothing written elsewhere
    # The stage frees a finished run's storage: the S3 server's own log shows every epoch's checkpoint of
    # every train run written to the bucket, the listing that none is left.
    written = set(re.findall(rf'"PUT /{bucket}/({TRAIN_CHECKPOINT.pattern})[ ?]', caplog.text))
    assert sorted(run for _, run in written) == sorted([*placed] * 2)
    assert not [k for k in keys if TRAIN_CHECKPOINT.fullmatch(k)]
    # Every trial's Train checkpoint and Tune result; the results say where each trial trained.
    checkpoints = [k for k in keys if TRIAL_CHECKPOINT.fullmatch(k)]
    results = [k for k in keys if TRIAL_RESULT.fullmatch(k)]
    assert len(checkpoints) == len(results) == 2, keys
    trial_nodes = {
        json.loads(line)["node_id"]
        for key in results
        for line in s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    }
    assert trial_nodes and trial_nodes <= workers

    # Mode A's last step (docs/cluster.md): DVC records what came back, and nothing is left to re-run.
    shutil.copy(ROOT / "dvc.yaml", project)
    shutil.copytree(digits_shards, project / "data/shards/digits")  # the train and tune stages' dep
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    sh(project, "dvc", "commit", "-f", "train", "tune")
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status", "train", "tune")


def wait_for_line(log: Path, pattern: str, job: subprocess.Popen, timeout: float) -> re.Match:
    """Poll the job's streamed log until a line matches (the job still running)."""
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, log.read_text())):
        assert job.poll() is None, "the job ended first"
        assert time.monotonic() < deadline, f"no {pattern!r} in the job's log after {timeout:.0f}s"
        time.sleep(0.2)
    return found


@pytest.mark.heavy
def test_a_run_and_a_trial_on_a_lost_node_finish_on_another_from_their_last_s3_checkpoint(
    ray_nodes: MultiNodeCluster, s3_server: S3Endpoint, digits_shards: Path, tmp_path: Path
):
    """One job trains a member, then tunes it (one trial); a worker node is lost under each. The fixture's
    cluster replaces a lost node (as an autoscaler would) with a new one: a new node id."""
    epochs = 5
    project, bucket = s3_project(
        tmp_path / "project",
        s3_server,
        digits_shards,
        lrs=(0.1,),
        tune_epochs=epochs,
        eann={"members": 1},
        opt={"members": []},
        epochs=epochs,
    )
    outs = ["outputs/members", "outputs/live", "outputs/tune"]
    stages = "python -m pipelines.train && python -m pipelines.tune"
    log = tmp_path / "job.log"
    with log.open("w") as sink:
        job = subprocess.Popen(
            submit(ray_nodes, s3_server, bucket, outs, stages),
            cwd=project,
            env={**ray_nodes.env, **s3_server.env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # The driver has the epoch's report, so Train registered its checkpoint (already in the bucket).
        first = wait_for_line(log, r"train: m0 epoch 0 on node ([0-9a-f]+)", job, timeout=800)
        assert any(TRAIN_CHECKPOINT.fullmatch(k) for k in bucket_keys(s3_server, bucket))
        run_lost = first[1]
        [name] = [node["name"] for node in ray_nodes.nodes if node["node_id"] == run_lost]
        ray_nodes.kill_node(name)
        # The trial's first report came with its checkpoint: lose the node its Train worker is on.
        placed = wait_for_line(log, r"tune: (trial-\d+) epoch 0 on node ([0-9a-f]+)", job, timeout=800)
        trial, trial_lost = placed.groups()
        [name] = [node["name"] for node in ray_nodes.nodes if node["node_id"] == trial_lost]
        ray_nodes.kill_node(name)
        assert job.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        job.kill()

    check_outputs(project / "outputs/members/m0", num_heads=3, epochs=epochs)
    assert [epoch for epoch, _ in history(project, "m0")] == list(range(epochs))  # each epoch once
    moves = [
        (int(e), node)
        for e, node in re.findall(r"train: m0 epoch (\d+) on node ([0-9a-f]+)", log.read_text())
    ]
    assert len(moves) == 2 and moves[0] == (0, run_lost), moves
    assert moves[1][0] >= 1 and moves[1][1] != run_lost  # resumed elsewhere from a checkpoint

    trials = pd.read_csv(project / "outputs/tune/trials.csv")
    assert list(trials["status"]) == ["completed"] and list(trials["epochs"]) == [epochs]
    trial_history = pd.read_csv(project / "outputs/tune/history.csv")
    assert sorted(trial_history["epoch"]) == list(range(epochs))  # each epoch once
    [result] = [k for k in bucket_keys(s3_server, bucket) if TRIAL_RESULT.fullmatch(k)]
    body = s3_server.client().get_object(Bucket=bucket, Key=result)["Body"].read().decode()
    reports = [(row["epoch"], row["node_id"]) for row in map(json.loads, body.splitlines())]
    assert [epoch for epoch, _ in reports] == list(range(epochs)), reports
    assert reports[0][1] == trial_lost and reports[-1][1] != trial_lost, reports
    moved = re.findall(rf"tune: {trial} epoch (\d+) on node ([0-9a-f]+)", log.read_text())
    assert len(moved) == 2 and int(moved[1][0]) >= 1 and moved[1][1] != trial_lost, moved
