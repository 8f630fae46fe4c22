"""The assemble and report stages end to end on member outputs in the train stage's format."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from anytime.eann import MemberCurve, eann_curve, inflation

REPO = Path(__file__).resolve().parents[1]


def write_run(root: Path, name: str, flops, val, test) -> None:
    (root / name).mkdir(parents=True)
    metrics = {"member": name, "flops": flops, "val_top1": val, "test_top1": test, "head_units": []}
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def synthetic_outputs(root: Path, members: int = 3) -> list[MemberCurve]:
    """Members m0..m{members-1} with 2^k * 4 heads and costs 1000 * 2^k, plus OPT runs of the last one."""
    curves = []
    for k in range(members):
        heads = 4 * 2**k
        flops = [1000 * 2**k * (i + 1) // heads for i in range(heads)]
        test = [round(0.6 / (1 + (k + 1) * (i + 1) / heads), 4) for i in range(heads)]
        val = [e + 0.01 * ((i % 3) - 1) for i, e in enumerate(test)]  # validation disagrees a little
        write_run(root / "outputs/members", f"m{k}", flops, val, test)
        curves.append(MemberCurve(f"m{k}", flops, val, test))
    last = curves[-1]
    for head in (len(last.flops) // 4 - 1, len(last.flops) - 1):
        err = last.test_error[head] * 0.9
        write_run(root / "outputs/opt", f"{last.name}-opt{head}", [last.flops[head]], [err], [err])
    return curves


def stage(cwd: Path, name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"pipelines.{name}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def workdir(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_assemble_and_report_on_member_outputs(workdir):
    members = synthetic_outputs(workdir)
    assert stage(workdir, "assemble").returncode == 0
    summary = json.loads((workdir / "outputs/assemble/summary.json").read_text())
    curves = json.loads((workdir / "outputs/assemble/curves.json").read_text())
    assert list(curves) == ["sequential", "fifo-W1", "fifo-W2", "fifo-W3", "OPT", "OPT+"]
    expected = eann_curve(members, sequential=True)
    assert [r["test_error"] for r in curves["sequential"]["rows"]] == expected.test_error
    fifo3 = summary["schedules"]["fifo-W3"]
    assert fifo3["finish_budget"] == 4000 and fifo3["total_compute"] == 7000  # all start at once
    assert summary["schedules"]["sequential"]["finish_budget"] == 7000
    exact = summary["inflation"]["exact"]["2"]["final_only"]
    assert exact == vars(inflation([1000, 2000, 4000], 2, 1.0))
    assert summary["inflation"]["base"] == pytest.approx(2.0)
    assert len(summary["schedules"]["sequential"]["budget_to_match_opt"]) == 2
    assert {r["head"] for r in summary["member_vs_opt"]} == {3, 15}

    result = stage(workdir, "report")
    assert result.returncode == 0, result.stderr
    report = workdir / "outputs/report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Anytime report") and "| fifo-W2 |" in text and "## Cost inflation" in text
    for figure in ("members", "eann_vs_opt", "schedules", "inflation"):
        with Image.open(report / "figures" / f"{figure}.png") as image:
            assert image.size[0] > 400 and f"figures/{figure}.png" in text
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["eann"]["sequential"]["auc"] == summary["schedules"]["sequential"]["auc"]
    assert metrics["inflation"]["W1"]["final_only"]["worst"] == pytest.approx(3.5)  # F_2 / c_1 = 7000/2000
    with (report / "curves/sequential.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["budget"]) == 7000 and float(rows[-1]["test_error"]) == expected.test_error[-1]
    assert sorted(p.name for p in (report / "members").iterdir()) == ["m0.csv", "m1.csv", "m2.csv"]


def test_bad_params_fail_before_any_work_and_keep_old_outputs(workdir):
    synthetic_outputs(workdir)
    old = workdir / "outputs/assemble"
    old.mkdir(parents=True)
    (old / "summary.json").write_text("previous")
    params = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(params.replace("near_optimal_from: 0.5", "near_optimal_from: 2"))
    result = stage(workdir, "assemble")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "assemble.near_optimal_from" in result.stderr
    assert (old / "summary.json").read_text() == "previous"


def test_missing_members_and_too_many_workers_are_user_errors(workdir):
    result = stage(workdir, "assemble")
    assert result.returncode == 2 and "run the train stage first" in result.stderr
    synthetic_outputs(workdir, members=2)
    params = (workdir / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(params.replace("workers: null", "workers: [1, 3]"))
    result = stage(workdir, "assemble")
    assert result.returncode == 2 and "at most 2 workers" in result.stderr
    assert not (workdir / "outputs/assemble").exists()
    result = stage(workdir, "report")
    assert result.returncode == 2 and "run the assemble stage first" in result.stderr


@pytest.mark.heavy
def test_dvc_runs_the_stages_and_shows_metrics_and_plots(tmp_path):
    """Real DVC in a temp git repo: the stages as defined in dvc.yaml, then ``dvc metrics/plots show``."""
    for entry in ("anytime", "pipelines"):
        shutil.copytree(REPO / entry, tmp_path / entry, ignore=shutil.ignore_patterns("__pycache__"))
    for entry in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / entry, tmp_path / entry)
    synthetic_outputs(tmp_path)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # stages write __pycache__ into their deps, as for users

    def sh(*cmd):
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
        return result.stdout

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    sh("dvc", "repro", "--single-item", "assemble")
    sh("dvc", "repro", "--single-item", "report")
    shown = json.loads(sh("dvc", "metrics", "show", "--json"))
    metrics = shown[""]["data"]["outputs/report/metrics.json"]["data"]  # "" = the workspace
    assert 0 < metrics["eann"]["sequential"]["auc"] < 1
    plots = json.loads(sh("dvc", "plots", "show", "--json", "-o", str(tmp_path / "plots")))["data"]
    assert "outputs/report/curves/fifo-W2.csv" in plots and "outputs/report/figures/schedules.png" in plots
    assert "up to date" in sh("dvc", "status", "assemble", "report").lower()
