"""``dvc repro`` of fetch -> shard -> train in a fresh git copy of the project, on a private local Ray.

Proves the three promises of the train stage: a fresh clone trains everything, a repeat with nothing
changed does nothing, and editing one member's params re-trains that member only (the others keep their
outputs and their logged history, timestamps included).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.live import StageLive

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(dest: Path) -> None:
    """The project's files as a clone would have them (tracked + not ignored), no data, no outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if name.startswith("outputs/"):  # Git-tracked results of this checkout's own runs
            continue
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def tiny_params(project: Path, members: list[dict]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"] |= {
        "eann": None,
        "members": members,
        "model": {"name": "resann", "c": 4, "period": 1},
        "epochs": 2,
        "batch_size": 128,
        "opt": {"members": []},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def sh(project: Path, *command: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # stages write __pycache__ into their deps, as for users
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return output


def history(project: Path, run: str) -> list[dict]:
    """The run's logged epochs (their head-0 rows: epoch, timestamp, ...), in order."""
    frame = StageLive(project / "outputs/live").history(run)
    return frame[frame["head"] == 0].to_dict("records")


@pytest.mark.heavy
def test_repro_trains_all_then_nothing_then_only_the_edited_member(tmp_path: Path):
    project = tmp_path / "project"
    copy_project(project)
    tiny_params(project, [{"name": "a", "n": 1}, {"name": "b", "n": 2}])
    sh(project, "git", "init", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")

    first = sh(project, "dvc", "repro", "train")
    for stage in ("fetch", "shard", "train"):
        assert f"Running stage '{stage}'" in first
    assert "2 runs planned, 0 up to date, 2 to train" in first
    for name, heads in (("a", 3), ("b", 6)):
        metrics = json.loads((project / "outputs/members" / name / "metrics.json").read_text())
        assert len(metrics["test_top1"]) == heads and metrics["epochs"] == 2
    a_before, b_before = history(project, "a"), history(project, "b")
    assert [row["epoch"] for row in a_before] == [0, 1]

    second = sh(project, "dvc", "repro", "train")
    assert "Running stage" not in second and "didn't change, skipping" in second

    tiny_params(project, [{"name": "a", "n": 1}, {"name": "b", "n": 2, "epochs": 3}])
    third = sh(project, "dvc", "repro", "train")
    assert "Running stage 'train'" in third and "Running stage 'shard'" not in third
    assert "2 runs planned, 1 up to date, 1 to train" in third
    assert history(project, "a") == a_before  # neither re-trained nor re-logged
    b_after = history(project, "b")
    assert [row["epoch"] for row in b_after] == [0, 1, 2]
    assert min(int(row["timestamp"]) for row in b_after) > max(int(row["timestamp"]) for row in b_before)
    assert json.loads((project / "outputs/members/b/metrics.json").read_text())["epochs"] == 3
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status", "train")
