"""The tune stage end to end on the session's local Ray cluster: its driver killed mid-search, resumed, and
the search discriminates.

Two trials (a grid over the learning rate) train the same tiny ResANN on digits: one with a rate so small
that nothing trains in two epochs, one that learns. The stage is SIGKILLed as soon as a trial has
checkpointed an epoch, then re-run: it must restore the same Tune experiment (same trial ids), finish it,
and name the learning trial best on the validation objective.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from pipelines.paths import TUNE_DIR

ROOT = Path(__file__).resolve().parents[1]
GOOD_LR, DEAD_LR = 0.1, 1e-5
STAGE = [sys.executable, "-m", "pipelines.tune"]


def write_project(root: Path, shards: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] |= {
        "shards": str(shards),
        "model": {"name": "resann", "c": 8, "period": 1},
        "eann": {"base": 2, "members": 1, "n0": 2},  # one member, 6 heads
        "batch_size": 32,
    }
    params["tune"] |= {
        "epochs": 2,
        "search_alg": "grid",
        "num_samples": 1,
        "max_concurrent_trials": 2,
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "space": {
            "weighting": [{"family": "static", "scheme": "sieve"}],
            "optimizer": {"lr": {"grid": [DEAD_LR, GOOD_LR]}, "weight_decay": 0.0},
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def trial_dirs(project: Path) -> dict[str, list[Path]]:
    """Train runs of the trials (one per trial id) and their epoch checkpoints, across experiments."""
    runs = sorted(project.glob("ray_results/tune/*/trials/*"))
    return {run.name: sorted(run.glob("checkpoint_*")) for run in runs if run.is_dir()}


def kill_after_first_checkpoint(
    project: Path, env: dict[str, str], timeout: float = 300
) -> dict[str, list[Path]]:
    """Start the stage, SIGKILL its driver once any trial has checkpointed an epoch (the cluster lives on, and
    Ray ends the dead driver's trials)."""
    log = (project / "first_run.log").open("w")
    process = subprocess.Popen(
        STAGE, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the stage finished before it could be killed"
            runs = trial_dirs(project)
            if any(runs.values()):
                return runs
            time.sleep(0.2)
        raise AssertionError(f"no trial checkpointed within {timeout}s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


@pytest.mark.heavy
def test_killed_search_resumes_and_picks_the_trial_that_learns(ray_head, tmp_path, digits_shards):
    project = write_project(tmp_path / "project", digits_shards)
    before = kill_after_first_checkpoint(project, ray_head.env)
    assert not (project / TUNE_DIR).exists()  # nothing half-written by the killed run

    result = subprocess.run(STAGE, cwd=project, env=ray_head.env, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tune: resuming" in result.stdout
    experiments = list((project / "ray_results/tune").iterdir())
    assert len(experiments) == 1  # the same experiment, restored, not a second one
    after = trial_dirs(project)
    assert set(before) <= set(after) and len(after) == 2  # the same trial ids carried on

    out = project / TUNE_DIR
    trials = pd.read_parquet(out / "trials.parquet")
    table = pd.read_csv(out / "trials.csv")
    assert list(table["trial_id"]) == list(trials["trial_id"])
    assert list(table["objective"]) == pytest.approx(list(trials["objective"]))
    assert sorted(trials["optimizer.lr"]) == [DEAD_LR, GOOD_LR]
    assert set(trials["strategy"]) == {"sieve"}
    history = pd.read_csv(out / "history.csv")
    assert not history.duplicated(["trial_id", "epoch"]).any()

    best = json.loads((out / "best.json").read_text())
    good = trials[trials["optimizer.lr"] == GOOD_LR].iloc[0]
    dead = trials[trials["optimizer.lr"] == DEAD_LR].iloc[0]
    assert best["best_strategy"] == "sieve" and best["trials"] == 2 and good["status"] == "completed"
    assert good["epochs"] == 2 and best["best_objective"] == pytest.approx(good["objective"])
    assert good["objective"] < dead["objective"] - 0.05  # the search really tells them apart
    assert best["objective"] == "val_auc" and "test" not in " ".join(trials.columns)
    for trial in trials.itertuples():  # every epoch once, those before the restore too
        epochs = history.loc[history["trial_id"] == trial.trial_id, "epoch"]
        assert sorted(epochs) == list(range(trial.epochs))

    params = yaml.safe_load((out / "best_params.yaml").read_text())
    assert params["train.optimizer.lr"] == GOOD_LR and params["train.weighting.strategy"] == "sieve"
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"

    # Applying the winner (what `dvc exp run $(... --print-overrides)` does) re-runs the stage under DVC: the
    # trials replace those settings, so the search keeps its name and is restored, not run again.
    printed = subprocess.run(
        [*STAGE, "--print-overrides"], cwd=project, check=True, capture_output=True, text=True
    ).stdout.split()
    apply_overrides(project / "params.yaml", printed[1::2])  # DVC's own code for `-S`
    again = subprocess.run(STAGE, cwd=project, env=ray_head.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tune: resuming" in again.stdout and trial_dirs(project) == after
    assert json.loads((out / "best.json").read_text()) == best
