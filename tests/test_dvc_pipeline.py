"""The pipeline under real ``dvc``, in a fresh git copy of the project, on the session's local Ray cluster.

``dvc repro`` trains every run, then does nothing, then re-trains only the member whose params changed (the
other keeps its outputs and its logged history, timestamps included). Every metric and plot survives a
commit: small results are tracked by Git, large outputs by the DVC cache. After a push, a clone with the
cache pulled is up to date (nothing would re-run), ``dvc exp show`` reads the train, tune and report metrics
at every revision, and an experiment's plots diff against the commit it started from. One project serves
all of it: each stage run costs a Ray Train start-up.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from dvc.ui.table import SHOW_MAX_WIDTH

from anytime.record import read_record
from tests.fixtures.dvc_project import commit, copy_project, history, sh, tiny_params

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
METRICS = ("outputs/tune/best.json", "outputs/report/metrics.json")  # the columns of `dvc exp show`
LIVE_SUMMARY = "outputs/live/metrics.json"  # per run: tracked by Git, read with `--targets`


def tiny_pipeline(project: Path, b_epochs: int = 1) -> None:
    """Two members (one epoch unless ``b_epochs``) and a one-trial, one-epoch search."""
    tiny_params(project, [{"name": "a", "n": 1}, {"name": "b", "n": 2, "epochs": b_epochs}], epochs=1)
    params = yaml.safe_load((project / "params.yaml").read_text())
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


def exp_show(project: Path, columns: int) -> str:
    """The default ``dvc exp show`` table as a terminal ``columns`` wide draws it."""
    return sh(project, "dvc", "exp", "show", "--no-pager", env={**os.environ, "COLUMNS": str(columns)})


def assert_exp_show_fits(project: Path) -> None:
    """The default ``dvc exp show`` draws every column whole at DVC's own cap on its width: past it, the
    pager view squeezes the table and drops columns (on main it once dropped most of the params)."""
    wide = exp_show(project, 100_000)
    width = max(len(line.rstrip()) for line in wide.splitlines())
    assert width <= SHOW_MAX_WIDTH, f"dvc exp show is {width} columns wide:\n{wide.splitlines()[1]}"
    capped = exp_show(project, SHOW_MAX_WIDTH)
    headers = next(csv.reader(io.StringIO(sh(project, "dvc", "exp", "show", "--csv"))))
    for header in headers[5:]:  # after Experiment, rev, typ, Created, parent (drawn as two columns)
        assert f" {header} " in capped, f"{header} is squeezed or dropped at {SHOW_MAX_WIDTH} columns"


def repro_trains_all_then_nothing_then_only_the_edited_member(project: Path, env: dict[str, str]) -> None:
    first = sh(project, "dvc", "repro", "train", env=env)
    for stage in ("fetch", "shard", "train"):
        assert f"Running stage '{stage}'" in first
    assert "2 runs planned, 0 up to date, 2 to train" in first
    for name, heads in (("a", 3), ("b", 6)):
        record = read_record(project / "outputs/members" / name)
        assert len(record.test_error) == heads and record.epochs == 1
    a_before, b_before = history(project, "a"), history(project, "b")
    assert [row["epoch"] for row in a_before] == [0]

    second = sh(project, "dvc", "repro", "train", env=env)
    assert "Running stage" not in second and "didn't change, skipping" in second

    tiny_pipeline(project, b_epochs=2)
    third = sh(project, "dvc", "repro", "train", env=env)
    assert "Running stage 'train'" in third and "Running stage 'shard'" not in third
    assert "2 runs planned, 1 up to date, 1 to train" in third
    assert history(project, "a") == a_before  # neither re-trained nor re-logged
    b_after = history(project, "b")
    assert [row["epoch"] for row in b_after] == [0, 1]
    assert min(int(row["timestamp"]) for row in b_after) > max(int(row["timestamp"]) for row in b_before)
    assert read_record(project / "outputs/members/b").epochs == 2
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status", "train")


@pytest.mark.heavy
def test_repro_reruns_only_what_changed_and_a_clone_shows_every_metric_and_plot(ray_head, tmp_path: Path):
    """The Ray stages join the session's cluster (``RAY_ADDRESS``, as with ``ray start`` on a workstation):
    a private cluster per stage run would add its start-up to each of them."""
    project = tmp_path / "project"
    copy_project(project)
    tiny_pipeline(project)
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    commit(project, "copy")
    repro_trains_all_then_nothing_then_only_the_edited_member(project, ray_head.env)
    for stage in ("tune", "report"):  # one stage a command: each within sh's time limit
        sh(project, "dvc", "repro", stage, env=ray_head.env)
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
        assert set(shown[revision]) == set(METRICS)
        assert 0 <= shown[revision]["outputs/report/metrics.json"]["auc"] <= 1
        assert shown[revision]["outputs/tune/best.json"]["trials"] == 1
    live = json.loads(sh(clone, "dvc", "metrics", "show", "--json", LIVE_SUMMARY))[""]["data"][LIVE_SUMMARY]
    assert set(live["data"]) == {"a", "b"} and 0 <= live["data"]["b"]["test_error"] <= 1
    overrides = sh(clone, "python", "-m", "pipelines.tune", "--print-overrides")
    assert "-S ++train.weighting.strategy=" in overrides  # best_params.yaml came with the clone

    # A key params.yaml lacks, added with `++`: assemble re-runs, train and tune do not.
    sh(clone, "dvc", "exp", "run", "-n", "two-milestones", "-S", "++assemble.milestones=[0.5,1]")
    shown = metrics_by_revision(clone)
    assert shown["two-milestones"]["outputs/tune/best.json"] == shown[head]["outputs/tune/best.json"]
    assert set(shown["two-milestones"]["outputs/report/metrics.json"]["error_at"]) == {"0.5", "1"}
    diff = json.loads(sh(clone, "dvc", "plots", "diff", head, "two-milestones", "--json"))
    assert not diff.get("errors"), diff["errors"]
    for name in (
        "outputs/live/history/b.tsv",
        "outputs/tune/history.csv",
        "outputs/report/plots/schedules.csv",
    ):
        (plot,) = diff["data"][name]
        assert plot["revisions"] == [head, "two-milestones"]
    values = diff["data"]["outputs/live/history/b.tsv"][0]["content"]["data"]["values"]
    series = {(row["rev"], row["head"]) for row in values}
    assert series == {(rev, str(h)) for rev in (head, "two-milestones") for h in range(6)}  # 6 heads x 2 revs
    changed = json.loads(sh(clone, "dvc", "metrics", "diff", head, "two-milestones", "--json"))
    assert set(changed) == {"outputs/report/metrics.json"}  # the 0.25 and 0.75 errors went; tune's did not
    per_run = sh(clone, "dvc", "metrics", "diff", head, "two-milestones", "--targets", LIVE_SUMMARY, "--json")
    assert json.loads(per_run) == {}  # nothing re-trained
    assert_exp_show_fits(clone)
