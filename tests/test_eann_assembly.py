"""EANN assembly on synthetic per-head errors: choices made on validation, schedules, OPT baselines."""

import json

import pytest

from anytime.eann import EannCurve, MemberCurve, eann_curve, load_member, opt_curve, opt_plus_curve

A = MemberCurve("a", [1, 2], [0.5, 0.4], [0.52, 0.41])
B = MemberCurve("b", [1, 2, 3, 4], [0.6, 0.35, 0.3, 0.2], [0.6, 0.30, 0.33, 0.21])
C = MemberCurve("c", [2, 4, 6, 8], [0.7, 0.45, 0.25, 0.1], [0.71, 0.44, 0.2, 0.12])


def steps(curve):
    return [(b, curve.member[i], curve.head[i], curve.test_error[i]) for i, b in enumerate(curve.budget)]


def test_sequential_chooses_by_validation_and_reports_test():
    curve = eann_curve([A, B, C], sequential=True)
    assert steps(curve) == [
        (1, 0, 0, 0.52),
        (2, 0, 1, 0.41),
        (3, 0, 1, 0.41),  # B's first head (val 0.6) loses to A's final (val 0.4)
        (4, 1, 1, 0.30),
        (5, 1, 2, 0.33),  # val 0.30 < 0.35: chosen although its test error is higher
        (6, 1, 3, 0.21),
        (8, 1, 3, 0.21),  # C's early heads are worse on validation than B's final
        (10, 1, 3, 0.21),
        (12, 1, 3, 0.21),
        (14, 2, 3, 0.12),
    ]
    assert curve.error_at(0.5) is None and curve.error_at(5.9) == 0.33 and curve.error_at(100) == 0.12
    assert curve.compute[-1] == pytest.approx(2 + 4 + 8)


def test_fifo_two_workers_runs_members_in_parallel():
    curve = eann_curve([A, B, C], workers=2)
    # A on worker 0 [0, 2), B on worker 1 [0, 4), C on worker 0 [2, 10)
    assert steps(curve) == [
        (1, 0, 0, 0.52),
        (2, 1, 1, 0.30),
        (3, 1, 2, 0.33),
        (4, 1, 3, 0.21),
        (6, 1, 3, 0.21),
        (8, 1, 3, 0.21),
        (10, 2, 3, 0.12),
    ]
    assert curve.compute[3] == pytest.approx(2 + 4 + 2)  # at t = 4: A done, B done, C 2 FLOPs in
    assert curve.budget_to_reach(0.21) == 4 and curve.budget_to_reach(0.05) is None


def test_rows_round_trip():
    curve = eann_curve([A, B, C], workers=2)
    again = EannCurve.from_rows(curve.label, curve.workers, curve.rows())
    assert again == curve and again.rows()[1] == {
        "budget": 2,
        "test_error": 0.30,
        "val_error": 0.35,
        "member": 1,
        "head": 1,
        "compute": 4,
    }


def test_sequential_rule_keeps_only_the_latest_finished_member():
    worse_b = MemberCurve("b", [4], [0.45], [0.44])
    spec_rule = eann_curve([A, worse_b], sequential=True)
    all_finished = eann_curve([A, worse_b], workers=1)
    assert spec_rule.test_error[-1] == 0.44  # latest finished member's final head
    assert all_finished.test_error[-1] == 0.41  # FIFO: every finished final head is a candidate


def test_more_workers_never_answer_later_on_geometric_members():
    members = [MemberCurve(str(k), [2**k], [0.5 / (k + 1)], [0.5 / (k + 1)]) for k in range(5)]
    finish = [eann_curve(members, workers=w).budget_to_reach(0.1) for w in range(1, 6)]
    assert finish == sorted(finish, reverse=True) and finish[0] == 31 and finish[-1] == 16


def test_opt_and_opt_plus():
    opts = [MemberCurve("opt2", [1, 3], [0.9, 0.3], [0.9, 0.31]), MemberCurve("opt0", [1], [0.5], [0.5])]
    opt = opt_curve(opts)
    assert opt.budget == [1, 3] and opt.test_error == [0.5, 0.31]
    plus = opt_plus_curve(opts)
    assert plus.budget == [1, 4] and plus.test_error == [0.5, 0.31]  # run one after the other


def test_load_member_reads_the_train_stage_contract(tmp_path):
    metrics = {"member": "m0", "flops": [10, 20], "val_top1": [0.3, 0.2], "test_top1": [0.31, 0.19]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert load_member(tmp_path) == MemberCurve("m0", [10.0, 20.0], [0.3, 0.2], [0.31, 0.19])
    (tmp_path / "metrics.json").write_text(json.dumps({"member": "m0"}))
    with pytest.raises(ValueError, match="not a member metrics file"):
        load_member(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the train stage"):
        load_member(tmp_path / "missing")


def test_inconsistent_members_are_rejected():
    with pytest.raises(ValueError, match="one length"):
        MemberCurve("x", [1, 2], [0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-decreasing"):
        MemberCurve("x", [2, 1], [0.1, 0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="sequential"):
        eann_curve([A, B], workers=2, sequential=True)
