"""`ray job submit` of the pipeline's data and train stages to a real local head, as docs/cluster.md shows.

The job ships a copy of the repository's code and params as its working dir (what `--working-dir .` sends
from a checkout), prepares the digits shards and trains one tiny member on the cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.ray_cluster import RayHead

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def tiny_params(storage: Path) -> dict:
    """The project's params.yaml, cut down to one member of one epoch and no OPT baselines."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=1, batch_size=128, amp=False, storage_path=str(storage))
    params["train"]["eann"]["members"] = 1
    params["train"]["opt"]["members"] = []
    return params


@pytest.fixture
def working_dir(tmp_path: Path) -> Path:
    """What `ray job submit --working-dir .` uploads from a checkout: code and params, no data/outputs."""
    workdir = tmp_path / "checkout"
    for package in ("anytime", "pipelines"):
        shutil.copytree(ROOT / package, workdir / package, ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path / "ray_storage")))
    return workdir


@pytest.mark.heavy
def test_job_submit_runs_data_and_train_stages_on_the_cluster(ray_head: RayHead, working_dir: Path):
    stages = "python -m pipelines.fetch && python -m pipelines.shard && python -m pipelines.train --only m0"
    command = [RAY, "job", "submit", "--address", ray_head.dashboard_url, "--working-dir", str(working_dir)]
    for _ in range(10):  # a fresh or busy head may not have registered its job agent yet (Ray says: retry)
        result = subprocess.run(
            [*command, "--", "bash", "-c", stages],
            env=ray_head.env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        if "No available agent to submit job" not in result.stderr:
            break
        time.sleep(3)
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-4000:]
    assert "train: 1 of 1 runs done" in logs
    assert "succeeded" in logs.lower()

    # The outputs stay in the job's copy of the working dir on the head node (docs/cluster.md, modes A/B).
    (metrics_path,) = ray_head.temp_dir.glob(
        "session_latest/runtime_resources/working_dir_files/*/outputs/members/m0/metrics.json"
    )
    metrics = json.loads(metrics_path.read_text())
    assert metrics["member"] == "m0" and metrics["epochs"] == 1
    assert len(metrics["val_top1"]) == len(metrics["flops"]) > 1
    assert not (working_dir / "outputs").exists(), "the job must not write into the submitter's tree"
