"""Every fault of a Ray stage ends cleanly: one line, no process left behind, nothing half-written.

The stages run as users run them (``python -m pipelines.train`` in a project directory); without an
address each starts its own private cluster, which must listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.fixtures.ray_cluster import assert_loopback_only
from tests.fixtures.stages import run_stage
from tests.test_train_ray import history, write_project

TRAIN = [sys.executable, "-m", "pipelines.train"]


def stage_env() -> dict[str, str]:
    """The caller's environment without a cluster address: the stage starts its own."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def refused(project: Path, stage: str, env: dict[str, str]) -> str:
    """Run a stage that must refuse to start: exit 2 and one ``error:`` line, which is returned."""
    result = run_stage(stage, project, env)
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = error_lines(result.stderr)
    return line


def alive(processes: list[psutil.Process]) -> list[str]:
    """The processes still running (zombies count as gone), as "pid name" for the failure message."""
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {proc.name()}")
        except psutil.NoSuchProcess:
            pass
    return left


def wait_for_epochs(project: Path, run: str, driver: subprocess.Popen, epochs: int) -> None:
    deadline = time.monotonic() + 300
    while len(history(project, run)) < epochs and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(history(project, run)) >= epochs, f"no progress (driver exit code {driver.poll()})"


@pytest.mark.heavy
def test_private_cluster_is_loopback_and_sigterm_ends_it_cleanly(digits_shards: Path, tmp_path: Path):
    """A re-run then resumes from the last checkpoint like one after SIGKILL, which
    ``tests/test_train_ray.py`` checks epoch by epoch (a second private cluster here would add a minute)."""
    project = write_project(
        tmp_path / "project", digits_shards, eann={"members": 1, "n0": 1}, opt={"members": []}, epochs=4
    )
    log = tmp_path / "driver.log"  # a file, not a pipe: a full pipe would stall the driver
    with log.open("w") as sink:
        driver = subprocess.Popen(TRAIN, cwd=project, env=stage_env(), stdout=sink, stderr=sink)
    wait_for_epochs(project, "m0", driver, 1)
    cluster = psutil.Process(driver.pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in cluster) and any(p.name() == "gcs_server" for p in cluster)
    assert_loopback_only([driver.pid, *(p.pid for p in cluster)])

    driver.send_signal(signal.SIGTERM)
    driver.wait(timeout=60)
    stderr = log.read_text()
    assert driver.returncode == 130, stderr[-3000:]
    assert "interrupted: re-run to resume every unfinished run from its last epoch" in stderr
    # The driver's own lines (Ray prefixes a worker's forwarded log with "(ActorName pid=...)").
    assert not [line for line in stderr.splitlines() if line.startswith("Traceback")]
    assert not alive(cluster), f"left running after SIGTERM: {alive(cluster)}"
    assert not (project / "outputs/members/m0").exists()
    assert 1 <= len(history(project, "m0")) < 4
    [run_dir] = (project / "ray_results").glob("m0-*")
    assert list(run_dir.glob("checkpoint_*")), "no checkpoint left to resume from"


def test_unreachable_address_is_one_line_within_30s(digits_shards: Path, tmp_path: Path):
    project = write_project(tmp_path / "project", digits_shards, eann={"members": 1}, opt={"members": []})
    started = time.monotonic()
    result = subprocess.run(
        [*TRAIN, "--address", "127.0.0.1:1"], cwd=project, capture_output=True, text=True, timeout=300
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.stderr


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("scaling", "cluster", "asked"),
    [
        ({"use_gpu": True}, "private", "1 worker(s) of CPU=3, GPU=1"),  # CIFAR example: 1 + 2 loaders
        # what an autoscaling cluster sets: ask for the nodes, wait, then give up with one line
        (
            {"cpus_per_worker": 64, "wait_for_resources_s": 3},
            "named",
            "1 worker(s) of CPU=64 after waiting 3s:",
        ),
    ],
)
def test_request_no_node_can_grant_is_one_line_within_30s(
    digits_shards: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    scaling: dict,
    cluster: str,
    asked: str,
):
    """Against the stage's own private cluster and against a named one (``RAY_ADDRESS``: the tests' head)."""
    project = write_project(
        tmp_path / "project", digits_shards, eann={"members": 1}, opt={"members": []}, scaling=scaling
    )
    if cluster == "private":
        env, cpus = stage_env(), os.cpu_count()
    else:
        head = request.getfixturevalue("ray_head")
        env, cpus = head.env, head.num_cpus
    started = time.monotonic()
    result = subprocess.run(TRAIN, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - started < 30, result.stderr[-2000:]
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert f"the cluster cannot run {asked}" in line and f"CPU={cpus}" in line
    assert not (project / "ray_results").exists()  # no run started


@pytest.mark.heavy
def test_a_trial_driver_the_head_cannot_host_is_one_line(ray_head, digits_shards: Path, tmp_path: Path):
    """Tune's trial drivers live on the head node (``pipelines/tune.py``): one that asks for more than the
    head has would wait forever, so the stage refuses it up front."""
    project = write_project(tmp_path / "project", digits_shards, eann={"members": 1}, opt={"members": []})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"] |= {"member": "m0", "driver_cpus": 64}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    line = refused(project, "tune", ray_head.env)
    assert "the cluster cannot run 1 trial driver(s) of CPU=64, memory=" in line, line
    assert f"CPU={ray_head.num_cpus}" in line
    assert not (project / "ray_results").exists()  # no trial started


@pytest.mark.heavy
def test_ray_start_head_of_the_tests_listens_on_loopback_only(ray_head):
    def session(proc: psutil.Process) -> int | None:
        try:
            return os.getsid(proc.pid)
        except OSError:
            return None

    assert_loopback_only([p.pid for p in psutil.process_iter() if session(p) == ray_head.pid])
