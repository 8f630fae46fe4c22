"""Nothing corrupt passes, nothing is lost (issue 28): each row damages a workspace as a hostile user would,
runs the real stage, and expects one ``error:`` line naming the file or key (or the one line saying what was
set aside and re-made), nothing half-written, and the good outputs still there.

Rows that fail before Ray starts run in-process; those that need a trained workspace share one (a member of
two epochs, trained once) and copy it. The planner's size check runs under an address-space limit, as in
``tests/test_hostile_inputs.py``: it must refuse a huge network without building it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from anytime.integrity import CorruptFileError, load_array, verify_checksums
from pipelines import assemble, train, tune
from pipelines.cli import run
from pipelines.paths import LIVE_DIR, MEMBERS_DIR
from pipelines.workspace import workspace_lock
from tests.fixtures.stages import REPO
from tests.test_train_ray import write_project

MEMORY_LIMIT = 2 << 30
STAGES = {"train": lambda: train.main([]), "tune": lambda: tune.main([]), "assemble": assemble.main}


@dataclass(frozen=True)
class Case:
    stage: str
    expected: str


def _edit_params(project: Path, **train) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"] |= train
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def _edit_tune(project: Path, **tune_values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"] |= tune_values
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def _append_params(project: Path, text: str) -> None:
    with (project / "params.yaml").open("a") as fh:
        fh.write(text)


def _flip_byte(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(project: Path) -> None:
    path = project / "shards/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["shards"][0]["rows"] -= 1
    manifest["splits"]["train"]["count"] -= 1
    path.write_text(json.dumps(manifest))


def _huge_value(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = [list(range(100)) for _ in range(100)]  # distinct: no YAML anchors
    (project / "params.yaml").write_text(yaml.safe_dump(params))


FAST: dict[str, tuple[Callable[[Path], object], Case]] = {
    "duplicate-key": (
        lambda p: _append_params(p, "train:\n  epochs: 3\n"),
        Case("train", "not valid YAML (duplicate key 'train' (lines"),
    ),
    "anchor-alias": (
        lambda p: _append_params(p, "x: &a [1, 2]\ny: *a\n"),
        Case("train", "anchors and aliases are not allowed in params"),
    ),
    "ten-thousand-leaf-value": (
        _huge_value,
        Case("train", "train.epochs = [[0, 1, 2, 3, 4, 5, ...], [0, 1, 2,"),
    ),
    "num-samples-cap": (
        lambda p: _edit_tune(p, num_samples=10**7),
        Case("tune", "tune.num_samples = 10000000: Input should be less than or equal to 1000"),
    ),
    "flipped-shard-byte": (
        lambda p: _flip_byte(p / "shards/train/part-00000.parquet"),
        Case("train", "shards/train/part-00000.parquet: corrupt (its sha256 differs from manifest.json's)"),
    ),
    "manifest-rows-edited": (
        _edit_manifest,
        Case("train", "train/part-00000.parquet: holds 512 rows, manifest"),
    ),
    "model-too-big": (
        lambda p: _edit_params(
            p,
            model={"name": "resann", "c": 1024, "period": 1},
            eann={"base": 2, "members": 1, "n0": 16},
            scaling={"memory_per_worker_mb": 4096},
        ),
        Case("train", "train: member m0 cannot fit: 6.25e+09 parameters"),
    ),
}


def _project(root: Path, shards: Path) -> Path:
    """A one-member, two-epoch project with its own copy of the digits shards."""
    shutil.copytree(shards, root / "shards")
    return write_project(
        root, root / "shards", eann={"base": 2, "members": 1, "n0": 1}, epochs=2, opt={"members": []}
    )


def _run_in_process(stage: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        run(STAGES[stage])
    except SystemExit as exc:
        return int(exc.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def _one_line(code: int, err: str, expected: str) -> str:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert expected in lines[0] and len(lines[0]) < 600, lines[0]
    return lines[0]


@pytest.mark.parametrize("row", list(FAST))
def test_bad_input_fails_before_any_work_in_one_line(row, tmp_path, monkeypatch, capsys, digits_shards):
    project = _project(tmp_path / "p", digits_shards)
    monkeypatch.chdir(project)
    edit, case = FAST[row]
    edit(project)
    _one_line(*_run_in_process(case.stage, capsys), case.expected)
    assert not (project / "ray_results").exists() and not list((project / "outputs").rglob("*.json"))


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _stage(project: Path, stage: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"pipelines.{stage}", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.heavy
def test_a_network_too_big_is_refused_without_building_it(tmp_path, digits_shards):
    """``train.model.c=4096`` with ``eann.n0=200`` (10^12 parameters): refused under a 2 GiB address space."""
    project = _project(tmp_path / "p", digits_shards)
    huge = {"model": {"name": "resann", "c": 4096, "period": 1}, "eann": {"base": 2, "members": 1, "n0": 200}}
    _edit_params(project, **huge)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2"},
        preexec_fn=_limit_memory,
        capture_output=True,
        text=True,
        timeout=600,
    )
    _one_line(done.returncode, done.stderr, "train: member m0 cannot fit: 1.27e+12 parameters")


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, monkeypatch, capsys, digits_shards):
    project = _project(tmp_path / "p", digits_shards)
    monkeypatch.chdir(project)
    with workspace_lock("test"):
        code, err = _run_in_process("train", capsys)
    line = _one_line(code, err, f"outputs/.lock: the workspace is being written by PID {os.getpid()}")
    assert "pytest" in line or "python" in line  # the holder's command line


@pytest.mark.heavy
def test_a_temporary_folder_too_long_for_unix_sockets_is_one_line(tmp_path, digits_shards):
    project = _project(tmp_path / "p", digits_shards)
    long = tmp_path / ("t" * max(1, 96 - len(str(tmp_path)) - 1))
    long.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "RAY_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train"],
        cwd=project,
        env={**env, "PYTHONPATH": str(REPO), "TMPDIR": str(long)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    _one_line(done.returncode, done.stderr, f"TMPDIR={str(long)[:80]}")
    assert not (project / "outputs/members/m0").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_outputs_are_one_line(tmp_path, monkeypatch, capsys, digits_shards):
    project = _project(tmp_path / "p", digits_shards)
    (project / "outputs").mkdir()
    (project / "outputs").chmod(0o555)
    monkeypatch.chdir(project)
    _one_line(*_run_in_process("train", capsys), "outputs/.lock: Permission denied")


def test_arrays_load_without_pickles_and_name_the_file(tmp_path):
    labels = tmp_path / "labels_test.npy"
    np.save(labels, np.arange(100, dtype=np.int64))
    labels.write_bytes(labels.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"labels_test.npy: not a readable .npy array"):
        load_array(labels)
    noise = tmp_path / "noise.npy"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptFileError, match=r"noise.npy: not a .npy array \(no NumPy header\)"):
        load_array(noise)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match=r"objects.npy: holds pickled objects, not a plain array"):
        load_array(pickled)


# --- rows on a trained workspace ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_shards) -> Path:
    """One member trained for two epochs: the workspace every row below copies and damages."""
    project = _project(tmp_path_factory.mktemp("trained") / "p", digits_shards)
    done = _stage(project, "train")
    assert done.returncode == 0, done.stderr[-3000:]
    return project


def _copy(trained: Path, tmp_path: Path) -> Path:
    project = tmp_path / "p"
    shutil.copytree(trained, project, symlinks=True)
    _edit_params(project, shards=str(project / "shards"))
    return project


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


ASSEMBLE_ROWS: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated-model": (lambda p: _truncate(p / MEMBERS_DIR / "m0/model.pt"), "m0/model.pt: corrupt (sha256"),
    "truncated-labels-test": (
        lambda p: _truncate(p / MEMBERS_DIR / "m0/labels_test.npy"),
        "m0/labels_test.npy: corrupt (sha256",
    ),
    "random-bytes-npy": (
        lambda p: (p / MEMBERS_DIR / "m0/probs_test.npy").write_bytes(os.urandom(4096)),
        "m0/probs_test.npy: corrupt (sha256",
    ),
}


@pytest.mark.heavy
@pytest.mark.parametrize("row", list(ASSEMBLE_ROWS))
def test_a_damaged_member_output_is_named_not_assembled(row, trained, tmp_path, monkeypatch, capsys):
    project = _copy(trained, tmp_path)
    monkeypatch.chdir(project)
    edit, expected = ASSEMBLE_ROWS[row]
    edit(project)
    line = _one_line(*_run_in_process("assemble", capsys), expected)
    assert "re-run the train stage" in line and "unsafely" not in line
    assert not (project / "outputs/assemble").exists()


@pytest.mark.heavy
def test_a_garbage_history_is_named(trained, tmp_path, monkeypatch, capsys):
    project = _copy(trained, tmp_path)
    monkeypatch.chdir(project)
    (project / LIVE_DIR / "history/m0.tsv").write_bytes(b"\x00garbage\tnot\na table\n\xff")
    _one_line(*_run_in_process("train", capsys), "outputs/live/history/m0.tsv: not a history table")
    verify_checksums(project / MEMBERS_DIR / "m0")  # the trained outputs are untouched


@pytest.mark.heavy
def test_a_truncated_model_is_trained_again_not_passed_as_current(trained, tmp_path):
    project = _copy(trained, tmp_path)
    _truncate(project / MEMBERS_DIR / "m0/model.pt")
    done = _stage(project, "train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == (
        "train: outputs/members/m0/model.pt: corrupt (sha256 differs from checksums.json): training m0 again"
    )
    verify_checksums(project / MEMBERS_DIR / "m0")


@pytest.mark.heavy
def test_a_corrupt_checkpoint_is_set_aside_and_the_run_resumes_from_the_last_good_one(trained, tmp_path):
    project = _copy(trained, tmp_path)
    _edit_params(project, epochs=3, max_failures=0)
    marker = tmp_path / "fault"
    failed = _stage(project, "train", ANYTIME_FAULT_EPOCH="2", ANYTIME_FAULT_MARKER=str(marker))
    assert failed.returncode == 1 and marker.exists()
    (run_dir,) = (project / "ray_results").glob("m0-*")
    checkpoints = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2  # epochs 0 and 1
    _truncate(checkpoints[-1] / "checkpoint.pt")
    done = _stage(project, "train")
    assert done.returncode == 0, done.stderr[-3000:]
    aside = f"{run_dir}.corrupt-"
    assert f"{checkpoints[-1]}/checkpoint.pt: corrupt" in done.stdout and aside in done.stdout
    assert f"m0 resumes from its last good one, {checkpoints[0].name}" in done.stdout
    kept = [p for p in (project / "ray_results").glob("*.corrupt-*/checkpoint_*") if p.is_dir()]
    assert len(kept) == 2  # kept for inspection
    frame = pd.read_csv(project / LIVE_DIR / "history/m0.tsv", sep="\t")
    assert sorted(frame.loc[frame["head"] == 0, "epoch"]) == [0, 1, 2]  # nothing repeated, nothing missing
    verify_checksums(project / MEMBERS_DIR / "m0")
