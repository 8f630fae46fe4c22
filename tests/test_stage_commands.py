"""Every stage is a proper command: ``--help`` prints its usage and does nothing else, an unknown flag is one
line on stderr and exit 2, and neither writes a file (``fetch`` once ran its work when asked for help)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ("fetch", "shard", "train", "tune", "assemble", "report")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with valid params, so a stage that ignored ``--help`` would get to work."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("stage", STAGES)
def test_help_prints_usage_and_writes_nothing(stage, project: Path, capsys: pytest.CaptureFixture[str]):
    main = importlib.import_module(f"pipelines.{stage}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith(f"usage: python -m pipelines.{stage} ") and "--params" in out
    assert files(project) == ["params.yaml"]


@pytest.mark.parametrize("stage", STAGES)
def test_an_unknown_flag_is_one_line(stage, project: Path, capsys: pytest.CaptureFixture[str]):
    main = importlib.import_module(f"pipelines.{stage}").main
    with pytest.raises(SystemExit) as exit_:
        main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.splitlines() == [
        f"error: python -m pipelines.{stage}: unrecognized arguments: --no-such-flag (see --help)"
    ]
    assert files(project) == ["params.yaml"]


@pytest.mark.parametrize("stage", ["fetch", "report"])
def test_the_module_reads_its_command_line(stage, project: Path):
    """``python -m`` hands the arguments over (the in-process tests above call ``main`` directly)."""
    done = subprocess.run(
        [sys.executable, "-m", f"pipelines.{stage}", "--help"],
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr
    assert files(project) == ["params.yaml"]
