"""The reproduction: table arithmetic on fabricated experiments, and its overrides through DVC's parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from anytime.eann import MemberCurve
from experiments.results import splice
from experiments.run import parse_queue_status
from experiments.sets import DEEP_CONST, WEIGHTINGS, experiment_set, set_args
from experiments.tables import Trial, cost_to_reach, eann_rows, flops_to_reach, weighting_table

PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
FLOPS = [1.0, 2.0, 3.0, 4.0]  # milestone heads: 1/4 -> 0, 1/2 -> 1, 3/4 -> 2, 1 -> 3


def curve(name: str, test: list[float], flops: list[float] = FLOPS) -> MemberCurve:
    return MemberCurve(name, flops, test, test)


def opts(errors: list[float]) -> dict[str, MemberCurve]:
    """OPT(j) of ``ref`` for j = 0..3: a network of j + 1 heads whose final error is ``errors[j]``."""
    return {
        f"ref-opt{j}": curve(f"ref-opt{j}", [0.9] * j + [e], FLOPS[: j + 1]) for j, e in enumerate(errors)
    }


def test_weighting_table_is_the_relative_increase_over_opt_per_milestone_mean_and_sd():
    trials = [
        Trial(0, {"ref": curve("ref", [0.5, 0.4, 0.3, 0.2])}, opts([0.4, 0.4, 0.25, 0.2]), 100),
        Trial(1, {"ref": curve("ref", [0.6, 0.4, 0.3, 0.3])}, opts([0.4, 0.2, 0.3, 0.2]), 100),
    ]
    table = weighting_table(trials, ["ref"], "ref")
    # seed 0: 100*(0.5-0.4)/0.4 = 25, 0, 100*(0.3-0.25)/0.25 = 20, 0
    # seed 1: 100*(0.6-0.4)/0.4 = 50, 100*(0.4-0.2)/0.2 = 100, 0, 100*(0.3-0.2)/0.2 = 50
    expected = {"0.25": (25, 50), "0.5": (0, 100), "0.75": (20, 0), "1": (0, 50)}
    for key, values in expected.items():
        assert table["ref"][key].values == pytest.approx(values)
    assert table["ref"]["0.25"].mean == pytest.approx(37.5)
    assert table["ref"]["0.5"].sd == pytest.approx(70.7106781)  # stdev(0, 100) = 100 / sqrt 2
    assert table["OPT"]["0.75"].values == pytest.approx((25, 30))  # OPT's own error in percent
    assert table["ref"]["1"].format() == "25.0 ± 35.4"


def test_cost_to_reach_compares_flops_at_the_small_anns_final_error():
    small = curve("small", [0.5, 0.2], [1.0, 2.0])
    large = curve("large", [0.6, 0.3, 0.2, 0.1], [1.0, 2.0, 3.0, 4.0])
    never = curve("large", [0.6, 0.5, 0.4, 0.3], [1.0, 2.0, 3.0, 4.0])
    assert flops_to_reach(large, 0.2) == 3.0 and flops_to_reach(never, 0.2) is None
    row = cost_to_reach([Trial(0, {"small": small, "large": large}, {}, 100)], "small", "large")
    assert (row.small_flops.mean, row.large_flops.mean, row.ratio, row.reached) == (2.0, 3.0, 1.5, 1)
    assert row.target.values == pytest.approx((20.0,))
    missed = cost_to_reach([Trial(0, {"small": small, "large": never}, {}, 100)], "small", "large")
    assert missed.ratio is None and missed.reached == 0


def test_eann_rows_trace_every_schedule_with_the_librarys_bound():
    members = {
        "m0": curve("m0", [0.5, 0.4], [1.0, 2.0]),
        "m1": curve("m1", [0.45, 0.35, 0.3, 0.2], [1.0, 2.0, 3.0, 4.0]),
    }
    trial = Trial(0, members, {"m1-opt3": curve("m1-opt3", [0.9, 0.9, 0.9, 0.15], FLOPS)}, 100)
    rows = {row.label: row for row in eann_rows(trial)}
    assert set(rows) == {"sequential", "fifo-W1", "fifo-W2"}
    sequential = rows["sequential"]
    # Budget 4 (the deepest member's cost): m0 finished at 2, m1 has run 2 of its 4: its head 1 (cost 2,
    # val 0.35) beats m0's final (val 0.4), so the answer's test error is 0.35.
    assert sequential.error_at["1"] == pytest.approx(35.0)
    assert sequential.opt_error_at["1"] == pytest.approx(15.0)
    assert sequential.match_ratios == [None]  # no head of either member reaches OPT's 0.15
    assert rows["fifo-W2"].bound is not None and rows["fifo-W2"].bound < rows["fifo-W1"].bound


def test_splice_replaces_only_the_generated_block():
    page = "# Results\n\nhand-written\n"
    once = splice(page, "table A", "cpu")
    assert once.startswith(page.rstrip()) and "table A" in once
    twice = splice(once + "\nafter\n", "table B", "cpu")
    assert "table A" not in twice and "table B" in twice and twice.endswith("after\n")
    assert "hand-written" in twice and "table B" in splice(twice, "table B", "full")


def test_overrides_parse_back_through_dvcs_own_parser(tmp_path):
    """Every ``-S`` of the set, applied by DVC to a params file, gives the values the set meant."""
    params = tmp_path / "params.yaml"
    for experiment in experiment_set("cpu"):
        params.write_text(PROJECT_PARAMS.read_text())
        args = set_args(experiment)
        apply_overrides(params, [a for a in args if a != "-S"])
        applied = yaml.safe_load(params.read_text())
        for key, value in experiment.overrides.items():
            node = applied
            for part in key.split("."):
                node = node[part]
            assert node == (list(value) if isinstance(value, tuple) else value), key
    weighting = experiment_set("cpu", ("weighting",))[0].overrides["train.members"]
    assert [m["name"] for m in weighting] == [*WEIGHTINGS, DEEP_CONST]


def test_queue_status_names_the_live_task_of_a_name_queued_again():
    status = """Task     Name                    Created    Status
00303e1  repro-cpu-weighting-s1  06:48 AM   Running
a0a1c74  repro-cpu-weighting-s2  06:48 AM   Queued
38b7f94  repro-cpu-weighting-s1  03:58 AM   Failed
16de598  repro-cpu-weighting-s0  03:58 AM   Success

Worker status: 1 active, 0 idle
"""
    assert parse_queue_status(status) == {
        "repro-cpu-weighting-s1": "Running",  # not the failed task of an earlier try
        "repro-cpu-weighting-s2": "Queued",
        "repro-cpu-weighting-s0": "Success",
    }
