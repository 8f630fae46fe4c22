"""EANN assembly on synthetic per-head errors: choices made on validation, schedules, OPT baselines."""

import json

import pytest

from anytime.eann import EannCurve, MemberCurve, assemble, eann_curve, load_member, opt_curve, opt_plus_curve
from tests.fixtures.records import make_record, write_run_record

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


def test_rows_are_the_columns_side_by_side():
    curve = eann_curve([A, B, C], workers=2)
    assert curve.rows()[1] == {
        "budget": 2,
        "test_error": 0.30,
        "val_error": 0.35,
        "member": 1,
        "head": 1,
        "compute": 4,
    }


def test_a_curve_of_columns_of_different_lengths_is_refused():
    message = "curve 'x': columns budget, test_error, val_error, member, head, compute must have one length"
    with pytest.raises(ValueError) as info:
        EannCurve("x", 1, budget=[1, 2], val_error=[0.1], test_error=[0.1], member=[0], head=[0], compute=[1])
    assert str(info.value) == message
    curve = eann_curve([A, B, C], workers=2)
    curve.budget.append(12)  # a column grown after the fact: refused, not cut to the shortest
    with pytest.raises(ValueError, match="zip"):
        curve.rows()
    with pytest.raises(ValueError, match="zip"):
        curve.budget_to_reach(0.05)


def test_budgets_may_repeat_but_not_go_back():
    columns = {"val_error": [0.2, 0.1], "test_error": [0.2, 0.1], "member": [0, 1], "head": [0, 0]}
    assert EannCurve("x", 1, budget=[2, 2], compute=[2, 2], **columns).budget == [2, 2]
    with pytest.raises(ValueError) as info:
        EannCurve("x", 1, budget=[2, 1], compute=[2, 2], **columns)
    assert str(info.value) == "curve 'x': budgets must be non-decreasing"
    # Two OPT networks of one cost answer from the same budget.
    opt = opt_curve([MemberCurve("o1", [1, 3], [0.5, 0.3], [0.5, 0.3]), MemberCurve("o2", [3], [0.2], [0.2])])
    assert opt.budget == [3, 3] and opt.test_error == [0.3, 0.2]


def test_validation_ties_go_to_the_deeper_output():
    shallow = MemberCurve("s", [1, 2], [0.5, 0.3], [0.5, 0.4])
    deep = MemberCurve("d", [1, 2, 3], [0.9, 0.3, 0.3], [0.9, 0.35, 0.25])
    # Sequential: at 4 the running member's head 1 (2 FLOPs in) ties the finished one's final head (2 FLOPs)
    # at val 0.3: the same depth, so the later member answers (0.35, not 0.4).
    assert eann_curve([shallow, deep], sequential=True).test_error == [0.5, 0.4, 0.4, 0.35, 0.25]
    # Two workers: at 2 the same tie (0.35); at 3 the deep member's final head (3 FLOPs) ties the shallow
    # one's final (2 FLOPs) at val 0.3 and, deeper, answers (0.25, not 0.4).
    assert eann_curve([shallow, deep], workers=2).test_error == [0.5, 0.35, 0.25]


def test_sequential_rule_keeps_only_the_latest_finished_member():
    worse_b = MemberCurve("b", [4], [0.45], [0.44])
    spec_rule = eann_curve([A, worse_b], sequential=True)
    all_finished = eann_curve([A, worse_b], workers=1)
    assert spec_rule.test_error[-1] == 0.44  # latest finished member's final head
    assert all_finished.test_error[-1] == 0.41  # FIFO: every finished final head is a candidate
    curves = assemble([A, worse_b], test_size=10).curves
    assert (
        curves["sequential"].test_error == spec_rule.test_error and curves["sequential"].label == "sequential"
    )
    assert curves["fifo-W1"].test_error == all_finished.test_error


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


def test_a_member_seen_as_a_plain_network_keeps_only_its_final_output():
    assert B.final_only() == MemberCurve("b", [4], [0.2], [0.21])


def test_load_member_reads_the_train_stage_contract(tmp_path):
    write_run_record(tmp_path, make_record("m0", [10, 20], [0.3, 0.2], [0.31, 0.19]))
    assert load_member(tmp_path) == MemberCurve("m0", [10.0, 20.0], [0.3, 0.2], [0.31, 0.19])
    (tmp_path / "record.json").write_text(json.dumps({"format_version": 1, "name": "m0"}))
    with pytest.raises(ValueError, match=r"record\.json: not a run record"):
        load_member(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the train stage"):
        load_member(tmp_path / "missing")


@pytest.mark.parametrize(
    ("heads", "eann", "untrained"), [(5, True, 2), (4, True, 2), (4, False, 0), (1, True, 0)]
)
def test_load_member_knows_which_heads_eann_weights_left_untrained(tmp_path, heads, eann, untrained):
    """EANN weights zero the first floor(K/2) head weights (METHOD.md §7): those heads never had a loss."""
    flops = list(range(1, heads + 1))
    write_run_record(tmp_path, make_record("m1", flops, [0.5] * heads, [0.5] * heads, eann=eann))
    member = load_member(tmp_path)
    assert member.untrained_heads == untrained
    assert [member.trained(h) for h in range(heads)] == [h >= untrained for h in range(heads)]


def test_inconsistent_members_are_rejected():
    with pytest.raises(ValueError, match="one length"):
        MemberCurve("x", [1, 2], [0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-decreasing"):
        MemberCurve("x", [2, 1], [0.1, 0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"flops=\[0, 1\] must be positive"):
        MemberCurve("x", [0, 1], [0.1, 0.1], [0.1, 0.2])
    assert MemberCurve("x", [1, 1], [0.1, 0.1], [0.1, 0.2]).cost == 1  # two heads at one cost are allowed
    with pytest.raises(ValueError, match="last head trained"):
        MemberCurve("x", [1, 2], [0.1, 0.1], [0.1, 0.2], untrained_heads=2)
    with pytest.raises(ValueError, match="sequential"):
        eann_curve([A, B], workers=2, sequential=True)
