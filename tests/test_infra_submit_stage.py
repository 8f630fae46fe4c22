"""infra/ray/submit_stage.py: a stage run as a Ray job on a real local head, outputs brought back here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.ray_cluster import RayHead

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path("infra/ray/submit_stage.py")
WRITE_OUTPUT = (
    "import json, os, pathlib; p = pathlib.Path('outputs/members/m0'); p.mkdir(parents=True);"
    "shards = pathlib.Path('data/shards/toy/manifest.json');"
    "seen = shards.read_text() if shards.exists() else None;"
    "(p / 'metrics.json').write_text(json.dumps({'ran_in': os.getcwd(), 'shards': seen}))"
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with the script, the project's .gitignore and a stale output from an earlier run."""
    root = tmp_path / "checkout"
    (root / SCRIPT.parent).mkdir(parents=True)
    shutil.copy(ROOT / SCRIPT, root / SCRIPT)
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    (root / "outputs" / "members" / "old").mkdir(parents=True)
    (root / "data" / "shards" / "toy").mkdir(parents=True)
    (root / "data" / "shards" / "toy" / "manifest.json").write_text('{"dataset": "toy"}')
    return root


def _run(checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_a_job_address_the_stage_runs_here(checkout: Path):
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6379"}  # a GCS address, as inside a job: not a jobs API
    env.pop("RAY_API_SERVER_ADDRESS", None)
    result = _run(checkout, env, "--", sys.executable, "-c", WRITE_OUTPUT)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((checkout / "outputs/members/m0/metrics.json").read_text())
    assert metrics == {"ran_in": str(checkout), "shards": '{"dataset": "toy"}'}


@pytest.mark.heavy
def test_job_outputs_replace_local_ones_and_failures_change_nothing(
    ray_head: RayHead,
    checkout: Path,
    tmp_path: Path,
):
    env = {**ray_head.env, "ANYTIME_STAGING": str(tmp_path / "staging")}
    args = ["--address", ray_head.dashboard_url, "--out", "outputs/members", "--in", "data/shards/toy"]

    failed = _run(checkout, env, *args, "--", "python", "-c", "raise SystemExit(3)")
    assert failed.returncode == 1 and "ended FAILED; local outputs left unchanged" in failed.stderr
    assert sorted(p.name for p in (checkout / "outputs/members").iterdir()) == ["old"]

    result = _run(checkout, env, *args, "--", "python", "-c", WRITE_OUTPUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (checkout / "outputs/members").iterdir()) == ["m0"]
    metrics = json.loads((checkout / "outputs/members/m0/metrics.json").read_text())
    assert Path(metrics["ran_in"]).is_relative_to(ray_head.temp_dir)  # the job's working dir on the head
    assert metrics["shards"] == '{"dataset": "toy"}', "--in data (Git-ignored, so not in the upload) arrived"
    assert not any((tmp_path / "staging").iterdir()), "the staging copy is removed once fetched"


@pytest.mark.heavy
def test_plain_ray_job_submit_runs_in_a_copy_of_the_working_dir(ray_head: RayHead, checkout: Path):
    """``ray job submit --working-dir .`` (docs/cluster.md) without the script: the job runs in its own copy
    on the head and writes nothing into the checkout. A fresh head may not have registered its job agent
    yet; Ray's answer then is to retry."""
    command = [
        str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", ray_head.dashboard_url,
        "--working-dir", str(checkout), "--", "python", "-c", WRITE_OUTPUT + "; print('ran in', os.getcwd())",
    ]  # fmt: skip
    for _ in range(10):
        result = subprocess.run(command, env=ray_head.env, capture_output=True, text=True, timeout=300)
        if "No available agent to submit job" not in result.stderr:
            break
        time.sleep(3)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in log.lower(), log[-3000:]
    [ran_in] = re.findall(r"^ran in (\S+)$", log, re.M)
    assert Path(ran_in).is_relative_to(ray_head.temp_dir)
    assert json.loads((Path(ran_in) / "outputs/members/m0/metrics.json").read_text())["ran_in"] == ran_in
    assert sorted(p.name for p in (checkout / "outputs/members").iterdir()) == ["old"]
