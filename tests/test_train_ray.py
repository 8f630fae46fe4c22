"""The train stage on a real token-authenticated ``ray start --head`` cluster (127.0.0.1), end to end.

One ``ray job submit --working-dir`` (as docs/cluster.md shows) runs the fetch and shard stages, then trains
two EANN members and an OPT baseline side by side while an injected worker crash forces a retry; a driver
killed mid-training is re-run and resumes instead of starting over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anytime.models import create_model
from pipelines.live import StageLive
from pipelines.paths import LIVE_DIR, MEMBERS_DIR, OPT_DIR

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
ARRAYS = ("probs_val.npy", "probs_test.npy", "labels_val.npy", "labels_test.npy")


def write_project(root: Path, shards: Path | str | None, **train) -> Path:
    """A working directory with a params.yaml for a tiny, fast train stage (the code is the installed one);
    ``shards=None`` reads the shard stage's output."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] |= {
        "shards": None if shards is None else str(shards),
        "model": {"name": "resann", "c": 4, "period": 1},
        "eann": {"base": 2, "members": 2, "n0": 1},
        "epochs": 3,
        "batch_size": 128,
        "opt": {"members": ["last"], "milestones": [0.5]},
        **train,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def history(project: Path, run: str) -> list[tuple[int, int]]:
    """(epoch, timestamp ms) the driver logged for ``run``, one per epoch (its head-0 row), in order."""
    frame = StageLive(project / LIVE_DIR).history(run)
    first = frame[frame["head"] == 0]
    return [(int(epoch), int(ts)) for epoch, ts in zip(first["epoch"], first["timestamp"], strict=True)]


def check_outputs(out: Path, *, num_heads: int, epochs: int = 3) -> None:
    """DESIGN.md "Member outputs": arrays, metrics.json and a model.pt that rebuilds the network."""
    probs_val, probs_test = np.load(out / "probs_val.npy"), np.load(out / "probs_test.npy")
    labels_val, labels_test = np.load(out / "labels_val.npy"), np.load(out / "labels_test.npy")
    assert probs_val.dtype == np.float32 and labels_val.dtype == np.int64
    assert probs_val.shape == (num_heads, 144, 10) and probs_test.shape == (num_heads, 360, 10)
    assert labels_val.shape == (144,) and labels_test.shape == (360,)
    np.testing.assert_allclose(probs_test.sum(axis=2), 1.0, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["flops"]) == len(metrics["val_top1"]) == len(metrics["test_top1"]) == num_heads
    assert metrics["flops"] == sorted(metrics["flops"]) and metrics["epochs"] == epochs
    final_test_error = float((probs_test[-1].argmax(axis=1) != labels_test).mean())
    assert metrics["test_top1"][-1] == pytest.approx(final_test_error)
    saved = torch.load(out / "model.pt", weights_only=True)
    model = create_model(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    assert model.num_heads == num_heads


def submit(ray_head, command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``ray job submit`` and wait; a fresh or busy head may not have registered its job agent yet (Ray's
    answer then is to retry)."""
    for _ in range(10):
        result = subprocess.run(command, env=ray_head.env, capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in result.stderr:
            return result
        time.sleep(3)
    return result


@pytest.mark.heavy
def test_job_submit_runs_the_data_stages_then_trains_side_by_side_through_a_worker_crash(
    ray_head, tmp_path: Path
):
    checkout = write_project(tmp_path / "checkout", None)  # what `--working-dir .` uploads: code and params
    for package in ("anytime", "pipelines"):
        shutil.copytree(ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "fault-fired"
    fault = {"ANYTIME_FAULT_EPOCH": "1", "ANYTIME_FAULT_MARKER": str(marker), "ANYTIME_FAULT_RUN": "m1"}
    stages = " && ".join(
        ['echo "job dir: $PWD"', *(f"python -m pipelines.{stage}" for stage in ("fetch", "shard", "train"))]
    )
    command = [
        RAY, "job", "submit", "--address", ray_head.dashboard_url, "--working-dir", str(checkout),
        "--runtime-env-json", json.dumps({"env_vars": fault}), "--", "bash", "-c", stages,
    ]  # fmt: skip
    result = submit(ray_head, command)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in log.lower(), log[-4000:]
    assert marker.exists() and "injected fault in run 'm1' at epoch 1" in log
    assert not (checkout / "outputs").exists(), "the job must not write into the submitter's tree"
    # The outputs stay in the job's copy of the working dir on the head node (docs/cluster.md, modes A/B).
    project = Path(re.search(r"^job dir: (\S+)$", log, re.M).group(1))
    assert project.is_relative_to(ray_head.temp_dir)

    runs = {"m0": 3, "m1": 6}  # heads: 3n with n = 1, 2
    opt = [p.name for p in (project / OPT_DIR).iterdir()]
    assert len(opt) == 1 and opt[0].startswith("m1-opt")
    runs[opt[0]] = int(opt[0].removeprefix("m1-opt")) + 1
    for name, heads in runs.items():
        kind = "opt" if "-opt" in name else "members"
        check_outputs(project / "outputs" / kind / name, num_heads=heads)  # on the shard stage's digits
        assert [epoch for epoch, _ in history(project, name)] == [0, 1, 2]  # the crash repeated no epoch
    # Side by side: back to back, every run's training would lie apart from all others'. Trials start a
    # few seconds apart on 2 cores, so a short run may end before the last one starts; each still overlaps
    # some other run. A run trains from about one epoch before its first logged epoch to its last.
    spans = {}
    for name in runs:
        ends = [ts for _, ts in history(project, name)]
        spans[name] = (ends[0] - (ends[1] - ends[0]), ends[-1])
    for a, (start, end) in spans.items():
        overlaps = [b for b, (s, e) in spans.items() if b != a and s < end and start < e]
        assert overlaps, f"run {a} trained alone: {spans}"
    summary = json.loads((project / "outputs/live/metrics.json").read_text())
    assert set(runs) <= set(summary) and 0 <= summary["m1"]["test_error"] <= 1


@pytest.mark.heavy
def test_killed_data_parallel_driver_is_rerun_and_resumes_from_its_last_checkpoint(
    ray_head, digits_shards: Path, tmp_path: Path
):
    project = write_project(
        tmp_path / "project",
        digits_shards,
        eann={"members": 1, "n0": 1},
        opt={"members": []},
        epochs=4,
        scaling={"num_workers": 2, "cpus_per_worker": 0.25},  # data-parallel (gloo DDP) while at it
    )
    command = [sys.executable, "-m", "pipelines.train"]
    driver = subprocess.Popen(command, cwd=project, env=ray_head.env, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(history(project, "m0")) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = time.time() * 1000
    before = history(project, "m0")
    assert 2 <= len(before) < 4, f"driver was not killed mid-training: {before}"
    assert not (project / MEMBERS_DIR / "m0").exists()
    # What an orphaned worker could have left: a checkpoint Ray Train's checkpoint manager never registered
    # (unloadable, and dated after every real one). Resuming must not even look at it.
    [run_dir] = (project / "ray_results").glob("m0-*")
    stray = run_dir / "checkpoint_2099-01-01_00-00-00.000000"
    (stray / "final").mkdir(parents=True)
    (stray / "checkpoint.pt").write_bytes(b"written by an orphan")

    rerun = subprocess.run(
        command, cwd=project, env=ray_head.env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert "worker group of size 2" in rerun.stdout + rerun.stderr
    after = history(project, "m0")
    assert [epoch for epoch, _ in after] == [0, 1, 2, 3]  # each once, including one the killed driver missed
    assert after[: len(before)] == before and before[-1][1] < killed_at  # no logged epoch trained again
    check_outputs(project / MEMBERS_DIR / "m0", num_heads=3, epochs=4)
