"""The assemble and report stages end to end on member outputs in the train stage's format.

``test_two_members_worked_by_hand`` checks every number of the report's tables, plots and metrics file
against values worked out by hand, not against the code that computes them.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from anytime.eann import MemberCurve, OptBaseline, assemble, eann_curve, inflation
from anytime.integrity import write_checksums
from pipelines.cli import UserError
from pipelines.paths import OPT_DIR, opt_run_name
from pipelines.report import markdown, read_assembly
from pipelines.trained_runs import opt_baselines, shared_test_size
from tests.fixtures.params import project_params
from tests.fixtures.records import make_record, write_run_record
from tests.fixtures.stages import REPO, run_stage


def write_run(root: Path, name: str, flops, val, test, *, test_size: int, eann: bool = False) -> None:
    """One run directory as the train stage writes it (``anytime.record``), minus the model and probs."""
    write_run_record(root / name, make_record(name, flops, val, test, eann=eann))
    np.save(root / name / "labels_test.npy", np.zeros(test_size, dtype=np.int64))
    write_checksums(root / name)


def synthetic_outputs(root: Path, members: int = 3) -> list[MemberCurve]:
    """Members m0..m{members-1} with 2^k * 4 heads and costs 1000 * 2^k, plus OPT runs of the last one."""
    curves = []
    for k in range(members):
        heads = 4 * 2**k
        flops = [1000 * 2**k * (i + 1) // heads for i in range(heads)]
        test = [round(0.6 / (1 + (k + 1) * (i + 1) / heads), 4) for i in range(heads)]
        val = [e + 0.01 * ((i % 3) - 1) for i, e in enumerate(test)]  # validation disagrees a little
        write_run(root / "outputs/members", f"m{k}", flops, val, test, test_size=10_000, eann=k > 0)
        curves.append(MemberCurve(f"m{k}", flops, val, test, untrained_heads=heads // 2 if k else 0))
    last = curves[-1]
    for head in (len(last.flops) // 4 - 1, len(last.flops) - 1):
        err = last.test_error[head] * 0.9
        write_run(
            root / "outputs/opt", f"{last.name}-opt{head}", [last.flops[head]], [err], [err], test_size=10_000
        )
    return curves


def lookup(params: dict, dotted: str):
    return reduce(lambda section, key: section[key], dotted.split("."), params)


def edit_params(workdir: Path, **changes) -> None:
    """Set ``section__key=value`` entries in params.yaml through YAML, and check that each one took (a key
    params.yaml leaves at its default must be one of the reference's)."""
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, value in changes.items():
        *sections, key = name.split("__")
        assert key in reduce(lambda s, k: s[k], sections, project_params()), f"no parameter {name}"
        section = reduce(lambda s, k: s.setdefault(k, {}), sections, params)
        section[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    written = yaml.safe_load(path.read_text())
    for name, value in changes.items():
        assert lookup(written, name.replace("__", ".")) == value


def table(text: str, heading: str) -> list[list[str]]:
    """The cells of the first markdown table from the line holding ``heading`` on (header and separator left
    out)."""
    lines = text[text.rfind("\n", 0, text.index(heading)) + 1 :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.fixture
def workdir(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


# Wilson 95% intervals on n = 20 (z = 1.959964, z^2 = 3.841459): centre (e + z^2/40) / (1 + z^2/20) =
# (e + 0.0960365) / 1.1920729, half-width z sqrt(e (1 - e) / 20 + z^2 / 1600) / 1.1920729
# = 1.644163 sqrt(e (1 - e) / 20 + 0.0024009). E.g. e = 0.15: centre 0.2463 / 1.1921 = 0.2064,
# half 1.644163 sqrt(0.006375 + 0.0024009) = 0.1540: [0.0524, 0.3604].
WILSON_20 = {
    0.6: "0.6000 [0.3866, 0.7812]",  # centre 0.5839, half 0.1973
    0.4: "0.4000 [0.2188, 0.6134]",  # the mirror of 0.6
    0.35: "0.3500 [0.1812, 0.5671]",  # centre 0.3742, half 0.1930
    0.3: "0.3000 [0.1455, 0.5190]",  # centre 0.3322, half 0.1867
    0.15: "0.1500 [0.0524, 0.3604]",
    0.1: "0.1000 [0.0279, 0.3010]",  # centre 0.1645, half 0.1366
    0.9: "0.9000 [0.6990, 0.9721]",  # the mirror of 0.1
}


def two_members_and_opt(root: Path) -> None:
    """Two members on a test split of n = 20 (every error a multiple of 1/20) and OPT(1), OPT(3) of m1.

    m1 has EANN weights: floor(4/2) = 2 heads untrained. Validation ties on purpose: m1's head 2 and m0's
    final head both have validation error 0.3, and the deeper output (m1's head 2, 300 FLOPs) must win.
    """
    members, opt = root / "outputs/members", root / "outputs/opt"
    write_run(members, "m0", [100, 200], [0.5, 0.3], [0.6, 0.4], test_size=20)
    write_run(
        members,
        "m1",
        [100, 200, 300, 400],
        [0.9, 0.9, 0.3, 0.1],
        [0.85, 0.9, 0.35, 0.15],
        test_size=20,
        eann=True,
    )
    write_run(opt, "m1-opt1", [100, 200], [0.7, 0.25], [0.75, 0.3], test_size=20)
    write_run(opt, "m1-opt3", [100, 200, 300, 400], [0.8, 0.6, 0.3, 0.1], [0.8, 0.6, 0.3, 0.1], test_size=20)


def test_two_members_worked_by_hand(workdir):
    two_members_and_opt(workdir)
    edit_params(
        workdir,
        assemble__workers=None,
        assemble__near_optimal_from=0.5,
        assemble__milestones=[0.25, 0.5, 0.75, 1.0],
    )
    assert run_stage("assemble", workdir).returncode == 0
    result = run_stage("report", workdir)
    assert result.returncode == 0, result.stderr
    report = workdir / "outputs/report"
    text = (report / "report.md").read_text()

    # Sequential (one worker): m0 runs [0, 200), m1 [200, 600); a head finishes at every 100 FLOPs.
    #   100: m0 h0 (only output)  0.6 | 200: m0 final  0.4 | 300, 400: m0 final (val 0.3) beats m1 h0, h1
    #   (val 0.9)  0.4 | 500: m1 h2 ties m0 final at val 0.3, deeper wins  0.35 | 600: m1 final  0.15.
    # FIFO W=1 is the same here (m0 is the only finished member before m1 ends). FIFO W=2: both start at 0,
    #   100: m0 h0 (val 0.5) beats m1 h0  0.6 | 200: m0 final  0.4 | 300: m1 h2 ties m0 final, deeper wins
    #   0.35 | 400: m1 final  0.15. Compute at 400: 200 + 400 = 600.
    # AUC on the horizon 200 + 400 = 600, error 1 before the first answer, steps of 1/6 (W=2: last one 2/6):
    #   sequential (1 + 0.6 + 0.4 + 0.4 + 0.4 + 0.35) / 6 = 3.15 / 6 = 0.525;
    #   W=2 (1 + 0.6 + 0.4 + 0.35 + 2 * 0.15) / 6 = 2.65 / 6 = 0.441667.
    # Milestones of the deepest cost 400: 100, 200, 300, 400.
    assert table(text, "## Schedules") == [
        [
            "sequential",
            "0.5250",
            WILSON_20[0.15],
            "600",
            "600",
            WILSON_20[0.6],
            WILSON_20[0.4],
            WILSON_20[0.4],
            WILSON_20[0.4],
        ],
        [
            "fifo-W1",
            "0.5250",
            WILSON_20[0.15],
            "600",
            "600",
            WILSON_20[0.6],
            WILSON_20[0.4],
            WILSON_20[0.4],
            WILSON_20[0.4],
        ],
        [
            "fifo-W2",
            "0.4417",
            WILSON_20[0.15],
            "400",
            "600",
            WILSON_20[0.6],
            WILSON_20[0.4],
            WILSON_20[0.35],
            WILSON_20[0.15],
        ],
    ]
    # OPT: OPT(1) (200 FLOPs, test 0.3) from 200, OPT(3) (400, 0.1) from 400.
    #   AUC (1 + 0.3 + 0.1) / 3 = 0.466667.
    # OPT+: OPT(1) [0, 200) then OPT(3) [200, 600): 0.3 from 200, 0.1 at 600.
    #   AUC 1/3 + 0.3 * 2/3 = 0.533333.
    assert table(text, "## Against OPT") == [
        ["OPT", "0.4667", WILSON_20[0.1], "-", WILSON_20[0.3], WILSON_20[0.3], WILSON_20[0.1]],
        ["OPT+", "0.5333", WILSON_20[0.1], "-", WILSON_20[0.3], WILSON_20[0.3], WILSON_20[0.3]],
    ]
    # Relative increase 100 (err - err_OPT) / err_OPT: no OPT answer at 100; 0.4 vs 0.3 = 33.3333;
    # 0.4 vs 0.1 = 300; W=2: 0.35 vs 0.3 = 16.6667, 0.15 vs 0.1 = 50. Budget to match OPT(1) (0.3):
    # sequential first <= 0.3 at 600 -> 600 / 200 = 3; W=2 at 400 -> 2. Nothing reaches OPT(3)'s 0.1.
    # Every pair's intervals overlap at n = 20 (e.g. 0.4 [0.2188, 0.6134] and 0.1 [0.0279, 0.3010]): all †.
    assert table(text, "rel. increase @") == [
        ["sequential", "-", "33.3333 †", "33.3333 †", "300 †", "3.000, -"],
        ["fifo-W1", "-", "33.3333 †", "33.3333 †", "300 †", "3.000, -"],
        ["fifo-W2", "-", "33.3333 †", "16.6667 †", "50.0000 †", "2.000, -"],
    ]
    assert table(text, "## Members") == [
        ["m0", "2", "0", "200", WILSON_20[0.4]],
        ["m1", "4", "2", "400", WILSON_20[0.15]],
    ]
    # m1's head 1 had weight 0 (EANN): marked, not compared; head 3: 0.15 vs 0.1 = 50%.
    assert table(text, "### Member heads against OPT") == [
        ["m1", "1", "200", WILSON_20[0.9], WILSON_20[0.3], "untrained (EANN weights)"],
        ["m1", "3", "400", WILSON_20[0.15], WILSON_20[0.1], "50.0000 †"],
    ]
    # Inflation of costs (200, 400). W=1: m0 [0, 200), m1 [200, 600), B in [200, 600].
    #   finals only: D = 200 until 600, worst -> 600/200 = 3, average (600^2 - 200^2) / (2 * 200 * 400) = 2.
    #   near-optimal from 1/2: m1 matched from B = 400 (D = B - 200): worst 400/200 = 2, average
    #   [(400^2 - 200^2) / 400 + 200 + 200 ln 2] / 400 = (300 + 200 + 138.6294) / 400 = 1.5966.
    # W=2: both start at 0, B in [200, 400]. finals only: worst 400/200 = 2, average
    #   (400^2 - 200^2) / (2 * 200 * 200) = 1.5; near-optimal: m1 matched from B = 200 with D = B: 1 and 1.
    # Limits at b = 400/200 = 2, worst b/(b^W - 1) + max(b phi, 1): W=1 2 + 2 = 4 and 2 + 1 = 3;
    #   W=2 2/3 + 2 = 2.6667 and 2/3 + 1 = 1.6667.
    assert table(text, "## Cost inflation") == [
        ["1", "3.0000", "2.0000", "2.0000", "1.5966", "4.0000", "3.0000"],
        ["2", "2.0000", "1.5000", "1.0000", "1.0000", "2.6667", "1.6667"],
    ]
    # The paragraph on top: one sample is 1/20 = 5 points; EANN [0.0524, 0.3604] and OPT [0.0279, 0.3010]
    # overlap; half-width (0.3604 - 0.0524) / 2 = 15 points; one sample at OPT's 0.1 is 100 / (20 * 0.1)
    # = 50%.
    findings = text[: text.index("## Schedules")]
    assert "n = 20 test samples (one sample is 5 points of error)" in findings
    assert f"ends at test error {WILSON_20[0.15]}" in findings and f"ends at {WILSON_20[0.1]}" in findings
    assert "the intervals overlap, so at this size the two final errors cannot be told apart" in findings
    assert "about +-15 points" in findings and "moves a relative increase by 50%" in findings
    assert "(m1: first 2 of 4)" in findings

    assert json.loads((report / "metrics.json").read_text()) == {  # the sequential EANN, and OPT's AUC
        "final_error": 0.15,
        "auc": pytest.approx(0.525),
        "error_at": {"0.25": 0.6, "0.5": 0.4, "0.75": 0.4, "1": 0.4},
        "opt_auc": pytest.approx(1.4 / 3),
    }
    with (report / "plots/schedules.csv").open() as f:
        rows = [(r["series"], float(r["budget"]), float(r["test_error"])) for r in csv.DictReader(f)]
    assert {s for s, _, _ in rows} == {"sequential", "fifo-W1", "fifo-W2", "OPT", "OPT+"}
    # Step corners: each new answer is drawn at the old error first, and the last one holds to the horizon.
    assert [(b, e) for s, b, e in rows if s == "OPT+"] == [(200, 0.3), (600, 0.3), (600, 0.1), (600, 0.1)]
    assert [(b, e) for s, b, e in rows if s == "fifo-W2"] == [
        (100, 0.6),
        (200, 0.6),
        (200, 0.4),
        (300, 0.4),
        (300, 0.35),
        (400, 0.35),
        (400, 0.15),
        (600, 0.15),
    ]
    with (report / "plots/heads.csv").open() as f:
        heads = [tuple(r.values()) for r in csv.DictReader(f)]
    assert heads == [
        ("m0", "0", "100.0", "0.6", "True"),
        ("m0", "1", "200.0", "0.4", "True"),
        ("m1", "0", "100.0", "0.85", "False"),
        ("m1", "1", "200.0", "0.9", "False"),
        ("m1", "2", "300.0", "0.35", "True"),
        ("m1", "3", "400.0", "0.15", "True"),
    ]


def test_on_a_large_test_set_differences_are_told_apart():
    """The same errors on n = 10000: intervals of about +-0.7 points no longer overlap, nothing is marked."""
    members = [
        MemberCurve("m0", [100, 200], [0.5, 0.3], [0.6, 0.4]),
        MemberCurve("m1", [100, 200, 300, 400], [0.9, 0.9, 0.3, 0.1], [0.85, 0.9, 0.35, 0.15], 2),
    ]
    opt = OptBaseline("m1", 3, MemberCurve("m1-opt3", [400], [0.1], [0.1]))
    text = markdown(assemble(members, [opt], test_size=10_000), {})
    # 0.15 on 10000: centre (0.15 + 0.000192) / 1.000384 = 0.150134, half 1.959964 sqrt(0.00001275 +
    # 0.0000000096) / 1.000384 = 0.006998: [0.1431, 0.1571]; 0.1: centre 0.100154, half 0.005881:
    # [0.0943, 0.1060].
    assert "0.1500 [0.1431, 0.1571]" in text and "0.1000 [0.0943, 0.1060]" in text
    assert "the intervals do not overlap" in text and "about +-0.7 points" in text
    assert table(text, "### Member heads against OPT") == [
        ["m1", "3", "400", "0.1500 [0.1431, 0.1571]", "0.1000 [0.0943, 0.1060]", "50.0000"]
    ]


def test_assemble_and_report_on_member_outputs(workdir):
    members = synthetic_outputs(workdir)
    edit_params(workdir, assemble__workers=None)
    assert run_stage("assemble", workdir).returncode == 0
    assembly = json.loads((workdir / "outputs/assemble/assembly.json").read_text())
    summary, curves = assembly["summary"], assembly["curves"]
    assert list(curves) == ["sequential", "fifo-W1", "fifo-W2", "fifo-W3", "OPT", "OPT+"]
    expected = eann_curve(members, sequential=True)
    assert curves["sequential"]["test_error"] == expected.test_error
    fifo3 = summary["schedules"]["fifo-W3"]
    assert fifo3["finish_budget"] == 4000 and fifo3["total_compute"] == 7000  # all start at once
    assert summary["schedules"]["sequential"]["finish_budget"] == 7000
    assert summary["inflation"]["exact"]["2"]["final_only"] == vars(inflation([1000, 2000, 4000], 2, 1.0))
    assert summary["inflation"]["base"] == pytest.approx(2.0)
    assert len(summary["schedules"]["sequential"]["budget_to_match_opt"]) == 2
    assert [(r["head"], r["trained"]) for r in summary["member_vs_opt"]] == [(3, False), (15, True)]

    result = run_stage("report", workdir)
    assert result.returncode == 0, result.stderr
    report = workdir / "outputs/report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Anytime report") and "| fifo-W2 |" in text and "## Cost inflation" in text
    for figure in ("members", "eann_vs_opt", "schedules", "inflation"):
        with Image.open(report / "figures" / f"{figure}.png") as image:
            assert image.size[0] > 400 and f"figures/{figure}.png" in text
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["auc"] == summary["schedules"]["sequential"]["auc"] and summary["test_size"] == 10_000


def test_bad_params_fail_before_any_work_and_keep_old_outputs(workdir):
    synthetic_outputs(workdir)
    old = workdir / "outputs/assemble"
    old.mkdir(parents=True)
    (old / "assembly.json").write_text("previous")
    edit_params(workdir, assemble__near_optimal_from=2)
    result = run_stage("assemble", workdir)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "assemble.near_optimal_from" in result.stderr
    assert (old / "assembly.json").read_text() == "previous"


def test_missing_members_and_too_many_workers_are_user_errors(workdir):
    result = run_stage("assemble", workdir)
    assert result.returncode == 2 and "run the train stage first" in result.stderr
    synthetic_outputs(workdir, members=2)
    edit_params(workdir, assemble__workers=[1, 3])
    result = run_stage("assemble", workdir)
    assert result.returncode == 2 and "at most 2 workers" in result.stderr
    assert not (workdir / "outputs/assemble").exists()
    result = run_stage("report", workdir)
    assert result.returncode == 2 and "run the assemble stage first" in result.stderr


def test_runs_on_different_test_splits_are_a_user_error(tmp_path):
    two_members_and_opt(tmp_path)
    runs = sorted((tmp_path / "outputs").glob("*/*"))
    assert shared_test_size(runs) == 20
    np.save(tmp_path / "outputs/opt/m1-opt3/labels_test.npy", np.zeros(21, dtype=np.int64))
    with pytest.raises(UserError, match=r"different sizes .*m1-opt3: 21"):
        shared_test_size(runs)
    (tmp_path / "outputs/opt/m1-opt3/labels_test.npy").unlink()
    with pytest.raises(UserError, match=re.escape("m1-opt3/labels_test.npy: missing")):
        shared_test_size(runs)


def test_opt_runs_are_matched_to_member_heads_by_the_train_stage_names():
    opt = MemberCurve(opt_run_name("m1", 3), [400], [0.1], [0.1])
    assert opt_baselines([opt], OPT_DIR) == [OptBaseline(member="m1", head=3, run=opt)]
    with pytest.raises(UserError, match="run 'baseline' is not an OPT run"):
        opt_baselines([MemberCurve("baseline", [400], [0.1], [0.1])], OPT_DIR)


def test_a_corrupt_assembly_is_one_line_naming_the_file(workdir):
    two_members_and_opt(workdir)
    assert run_stage("assemble", workdir).returncode == 0
    path = workdir / "outputs/assemble/assembly.json"
    assert read_assembly(path).summary.test_size == 20
    assembly = json.loads(path.read_text())
    del assembly["summary"]["test_size"]
    assembly["curves"]["OPT"]["budget"].pop()
    path.write_text(json.dumps(assembly))
    with pytest.raises(UserError) as error:
        read_assembly(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: not an assemble output (2 problems")
    path.write_text('{"members": [')
    with pytest.raises(UserError, match=re.escape("assembly.json: not an assemble output")) as error:
        read_assembly(path)
    assert "\n" not in str(error.value)


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
    shutil.copytree(REPO / ".dvc/plots", tmp_path / ".dvc/plots")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    sh("dvc", "repro", "--single-item", "assemble")
    sh("dvc", "repro", "--single-item", "report")
    shown = json.loads(sh("dvc", "metrics", "show", "--json"))
    metrics = shown[""]["data"]["outputs/report/metrics.json"]["data"]  # "" = the workspace
    assert 0 < metrics["auc"] < 1
    plots = json.loads(sh("dvc", "plots", "show", "--json", "-o", str(tmp_path / "plots")))["data"]
    overlay = plots["outputs/report/plots/schedules.csv"][0]
    assert overlay["content"]["encoding"]["color"]["field"] == "series"  # one chart, a line per schedule
    series = {row["series"] for row in overlay["content"]["data"]["values"]}
    assert series == {"sequential", "fifo-W1", "fifo-W2", "fifo-W3", "OPT", "OPT+"}
    heads = plots["outputs/report/plots/heads.csv"][0]["content"]["data"]["values"]
    assert {row["series"] for row in heads} == {"m0", "m1", "m2"}
    assert "outputs/report/figures/schedules.png" in plots
    assert "up to date" in sh("dvc", "status", "assemble", "report").lower()
