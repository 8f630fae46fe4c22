"""The train stage on a real token-authenticated ``ray start --head`` cluster (127.0.0.1), end to end: a
driver killed mid-training is re-run and resumes instead of starting over. Its helpers (a tiny project,
the logged history, the outputs' checks) serve the other Ray tests; runs side by side on several nodes,
through a worker crash, are in ``tests/test_cluster_multinode.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from anytime.data import ShardDataset
from anytime.record import load_network, read_record
from pipelines.live import StageLive
from pipelines.paths import LIVE_DIR, LOGS_DIR, MEMBERS_DIR

ROOT = Path(__file__).resolve().parents[1]
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
    """The run outputs (``anytime.record``): arrays, record.json and a model.pt that rebuilds the network."""
    probs_val, probs_test = np.load(out / "probs_val.npy"), np.load(out / "probs_test.npy")
    labels_val, labels_test = np.load(out / "labels_val.npy"), np.load(out / "labels_test.npy")
    assert probs_val.dtype == np.float32 and labels_val.dtype == np.int64
    assert probs_val.shape == (num_heads, 144, 10) and probs_test.shape == (num_heads, 360, 10)
    assert labels_val.shape == (144,) and labels_test.shape == (360,)
    np.testing.assert_allclose(probs_test.sum(axis=2), 1.0, atol=1e-4)
    record = read_record(out)
    assert len(record.flops) == len(record.val_error) == len(record.test_error) == num_heads
    assert record.flops == sorted(record.flops) and record.epochs == epochs and record.name == out.name
    final_test_error = float((probs_test[-1].argmax(axis=1) != labels_test).mean())
    assert record.test_error[-1] == pytest.approx(final_test_error)
    assert load_network(out).num_heads == num_heads


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
    assert "train: m0 resumed from its checkpoint of epoch" in rerun.stdout
    assert "worker group of size 2" in (project / LOGS_DIR / "train.log").read_text()  # Ray's, in the log
    after = history(project, "m0")
    assert [epoch for epoch, _ in after] == [0, 1, 2, 3]  # each once, including one the killed driver missed
    assert after[: len(before)] == before and before[-1][1] < killed_at  # no logged epoch trained again
    check_outputs(project / MEMBERS_DIR / "m0", num_heads=3, epochs=4)
    # both ranks evaluated their share, gathered in the split's own order (as one process reads it)
    for split in ("val", "test"):
        alone = ShardDataset(str(digits_shards), split, batch_size=64, rank=0, world_size=1)
        labels = [label for _, batch in alone for label in batch.tolist()]
        assert np.load(project / MEMBERS_DIR / "m0" / f"labels_{split}.npy").tolist() == labels
