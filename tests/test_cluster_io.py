"""A writer killed inside ``pipelines.io.atomic_path`` leaves nothing inside a DVC output.

A real DVC project in a temporary Git repository: one stage whose output is ``outputs/members`` (as the
train stage's), written through ``atomic_path``; then a process is SIGKILLed half-way through replacing
one member, and ``dvc status`` must still call everything up to date.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.io import SCRATCH_DIR, atomic_path, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
WRITE_MEMBER = """import os, signal, sys
from pipelines.io import atomic_path
with atomic_path(f"outputs/members/{sys.argv[1]}") as tmp:
    tmp.mkdir()
    (tmp / "model.pt").write_bytes(b"weights")
    if sys.argv[2:] == ["kill"]:
        os.kill(os.getpid(), signal.SIGKILL)
"""
DVC_YAML = """stages:
  train:
    cmd: python write_member.py m0 && python write_member.py m1
    deps:
      - write_member.py
    outs:
      - outputs/members
"""


def run(project: Path, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_scratch_dir_is_outside_the_two_level_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert scratch_dir(Path("outputs/members/m0")) == Path("outputs", SCRATCH_DIR)
    assert scratch_dir(Path("data/shards/digits")) == Path("data", SCRATCH_DIR)
    assert scratch_dir(tmp_path / "outputs/tune/best.json") == Path("outputs", SCRATCH_DIR)
    assert scratch_dir(Path("metrics.json")) == Path(".")
    elsewhere = tmp_path.parent / "elsewhere" / "x.json"
    assert scratch_dir(elsewhere) == elsewhere.parent


def test_failed_write_keeps_the_old_output_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    target = Path("outputs/tune/best.json")
    with atomic_path(target) as tmp:
        tmp.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in Path("outputs").rglob("*")) == [SCRATCH_DIR, "best.json", "tune"]


@pytest.mark.heavy
def test_writer_killed_inside_atomic_path_leaves_dvc_status_clean(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / "write_member.py").write_text(WRITE_MEMBER)
    (project / ".gitignore").write_text("/outputs/\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro"]):
        result = run(project, *command)
        assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    killed = run(project, sys.executable, "write_member.py", "m1", "kill")
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (project / "outputs/members").iterdir()) == ["m0", "m1"]
    assert (project / "outputs/members/m1/model.pt").read_bytes() == b"weights"
    assert [p.name[:4] for p in (project / "outputs" / SCRATCH_DIR).iterdir()] == [".m1."]
    status = run(project, "dvc", "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
