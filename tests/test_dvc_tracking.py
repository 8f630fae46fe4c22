"""Every metric and plot survives a commit: small results are tracked by Git, large outputs by the DVC cache.

A tiny whole pipeline in a fresh git copy of the project, committed and pushed to a local DVC remote; then a
clone with the cache pulled is up to date (nothing would re-run), ``dvc exp show`` reads the train, tune and
report metrics at every revision, and an experiment's plots diff against the commit it started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_dvc_repro import copy_project, sh, tiny_params

GIT_TRACKED = (  # small metrics and plot data: what `dvc exp show` / `dvc plots diff` read at a revision
    "outputs/live/metrics.json",
    "outputs/live/history/a.tsv",
    "outputs/live/history/b.tsv",
    "outputs/tune/best.json",
    "outputs/tune/best_params.yaml",
    "outputs/tune/trials.csv",
    "outputs/tune/history.csv",
    "outputs/report/metrics.json",
    "outputs/report/plots/schedules.csv",
    "outputs/report/plots/heads.csv",
)
METRICS = ("outputs/live/metrics.json", "outputs/tune/best.json", "outputs/report/metrics.json")


def commit(project: Path, message: str) -> None:
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def tiny_pipeline(project: Path) -> None:
    """Two one-epoch members and a one-trial, one-epoch search."""
    tiny_params(project, [{"name": "a", "n": 1}, {"name": "b", "n": 2}])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    params["tune"] |= {"member": "a", "epochs": 1, "num_samples": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def metrics_by_revision(project: Path) -> dict[str, dict]:
    """``dvc exp show --json`` as {commit or experiment name: {metrics file: its data}}; fails on errors."""
    rows, found = json.loads(sh(project, "dvc", "exp", "show", "--json")), {}
    while rows:
        row = rows.pop()
        assert not row.get("error"), row
        rows += [rev for exp in row.get("experiments") or [] for rev in exp["revs"]]
        files = row["data"]["metrics"]
        assert all("error" not in files[name] for name in files), files
        for key in filter(None, (row["rev"], row.get("name"))):  # a commit's rev, an experiment's name
            found[key] = {name: files[name]["data"] for name in files}
    return found


@pytest.mark.heavy
def test_a_clone_with_the_cache_pulled_is_up_to_date_and_shows_every_metric_and_plot(tmp_path: Path):
    project = tmp_path / "project"
    copy_project(project)
    tiny_pipeline(project)
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    commit(project, "copy")
    for stage in ("train", "tune", "report"):  # one stage a command: each within sh's time limit
        sh(project, "dvc", "repro", stage)
    sh(project, "dvc", "push")
    commit(project, "tiny run")

    tracked = set(sh(project, "git", "ls-files", "outputs").split())
    assert set(GIT_TRACKED) <= tracked
    assert not [name for name in tracked if name.endswith((".pt", ".npy", ".parquet", ".png"))], tracked

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    sh(clone, "dvc", "pull")
    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status")
    assert (clone / "outputs/members/b/model.pt").is_file()  # from the cache
    head = sh(clone, "git", "rev-parse", "HEAD").strip()
    shown = metrics_by_revision(clone)
    for revision in ("workspace", head):
        assert set(METRICS) <= set(shown[revision])
        live = shown[revision]["outputs/live/metrics.json"]
        assert set(live) == {"a", "b"} and 0 <= live["b"]["test_error"] <= 1
        assert shown[revision]["outputs/tune/best.json"]["trials"] == 1
    overrides = sh(clone, "python", "-m", "pipelines.tune", "--print-overrides")
    assert "-S ++train.weighting.strategy=" in overrides  # best_params.yaml came with the clone

    sh(clone, "dvc", "exp", "run", "-n", "one-worker", "-S", "assemble.workers=[1]")
    shown = metrics_by_revision(clone)
    assert shown["one-worker"]["outputs/live/metrics.json"] == shown[head]["outputs/live/metrics.json"]
    assert set(METRICS) <= set(shown["one-worker"])
    diff = json.loads(sh(clone, "dvc", "plots", "diff", head, "one-worker", "--json"))
    assert not diff.get("errors"), diff["errors"]
    for name in (
        "outputs/live/history/b.tsv",
        "outputs/tune/history.csv",
        "outputs/report/plots/schedules.csv",
    ):
        (plot,) = diff["data"][name]
        assert plot["revisions"] == [head, "one-worker"]
    values = diff["data"]["outputs/live/history/b.tsv"][0]["content"]["data"]["values"]
    series = {(row["rev"], row["head"]) for row in values}
    assert series == {(rev, str(h)) for rev in (head, "one-worker") for h in range(6)}  # 6 heads x 2 revs
    changed = json.loads(sh(clone, "dvc", "metrics", "diff", head, "one-worker", "--json"))
    assert set(changed) == {"outputs/report/metrics.json"}  # the FIFO W=2 numbers went; train, tune did not
