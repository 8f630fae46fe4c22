"""The EANN summary and the assemble -> report contract: typed records that round-trip and validate JSON."""

import json

import pytest
from pydantic import ValidationError

from anytime.eann import Assembly, MemberCurve, OptBaseline, assemble, eann_curve, opt_curve
from anytime.eann.summary import curve_auc, inflation_summary, member_vs_opt, milestone_key, schedule_summary

SMALL = MemberCurve("m0", [1, 2], [0.5, 0.3], [0.55, 0.35])
LARGE = MemberCurve("m1", [1, 2, 3, 4], [0.9, 0.8, 0.3, 0.1], [0.9, 0.85, 0.3, 0.15], untrained_heads=2)
OPT1 = OptBaseline("m1", 1, MemberCurve("m1-opt1", [1, 2], [0.5, 0.25], [0.5, 0.25]))
OPT3 = OptBaseline("m1", 3, MemberCurve("m1-opt3", [1, 2, 3, 4], [0.5, 0.4, 0.2, 0.1], [0.5, 0.4, 0.2, 0.12]))


def test_the_assembly_round_trips_through_json():
    assembly = assemble([LARGE, SMALL], [OPT1, OPT3], test_size=100)
    assert [m.name for m in assembly.members] == ["m0", "m1"]  # by depth
    assert list(assembly.curves) == ["sequential", "fifo-W1", "fifo-W2", "OPT", "OPT+"]
    assert list(assembly.summary.baselines) == ["OPT", "OPT+"]
    again = Assembly.model_validate_json(assembly.model_dump_json())
    assert again == assembly and again.members[1].untrained_heads == 2


def test_without_opt_runs_there_is_nothing_to_compare_with():
    summary = assemble([SMALL, LARGE], test_size=100, workers=[2]).summary
    assert summary.baselines == {} and summary.member_vs_opt == []
    assert list(summary.schedules) == ["sequential", "fifo-W2"]
    assert summary.schedules["sequential"].relative_to_opt is None
    assert list(summary.inflation.exact) == [2]


def test_untrained_heads_are_marked_not_compared():
    # OPT runs of a member that is gone, or of a head past its last one, have nothing to be compared with.
    beyond = OptBaseline("m0", 2, MemberCurve("m0-opt2", [3], [0.2], [0.2]))
    rows = member_vs_opt([SMALL, LARGE], [OPT3, OPT1, OptBaseline("gone", 0, SMALL.final_only()), beyond])
    assert [(r.member, r.head, r.trained) for r in rows] == [("m1", 1, False), ("m1", 3, True)]
    assert rows[0].relative_increase is None and rows[0].test_error == 0.85 and rows[0].opt_test_error == 0.25
    assert rows[1].relative_increase == pytest.approx(100 * (0.15 - 0.12) / 0.12)  # 25%


@pytest.mark.parametrize(
    ("corrupt", "where"),
    [
        (lambda a: a["summary"].pop("test_size"), "summary.test_size"),
        (lambda a: a["summary"].update(extra=1), "summary.extra"),
        (lambda a: a["curves"]["OPT"]["test_error"].pop(), "curves.OPT"),
        (lambda a: a["members"][0].update(flops=[2, 1]), "members.0"),
        (
            lambda a: a["summary"]["schedules"]["sequential"].update(auc="low"),
            "summary.schedules.sequential.auc",
        ),
    ],
)
def test_a_corrupt_assembly_fails_validation_where_it_is_wrong(corrupt, where):
    data = json.loads(assemble([SMALL, LARGE], [OPT1, OPT3], test_size=100).model_dump_json())
    corrupt(data)
    with pytest.raises(ValidationError) as info:
        Assembly.model_validate_json(json.dumps(data))
    assert ".".join(str(p) for p in info.value.errors()[0]["loc"]).startswith(where)


def test_milestone_keys_are_short():
    assert [milestone_key(f) for f in (0.25, 0.5, 0.75, 1.0, 2)] == ["0.25", "0.5", "0.75", "1", "2"]


# Worked by hand: sequential, a runs [0, 2), b runs [2, 8). Answers: t=1 a.h0 (test 0.45), t=2 a.h1 (0.35),
# t=4 a.h1 again (b.h0's val 0.45 loses to a.h1's 0.4), t=8 b.h1 (0.15).
A = MemberCurve("a", [1, 2], [0.5, 0.4], [0.45, 0.35])
B = MemberCurve("b", [2, 6], [0.45, 0.2], [0.4, 0.15])
OPTS = [MemberCurve(f"o{c}", [c], [e], [e]) for c, e in ((1.5, 0.3), (3, 0.25), (6, 0.1))]


def test_auc_counts_the_time_before_the_first_answer_as_error_one():
    curve = eann_curve([A, B], sequential=True)
    assert curve.budget == [1, 2, 4, 8] and curve.test_error == [0.45, 0.35, 0.35, 0.15]
    # horizon 8: error 1 on [0, 1), 0.45 on [1, 2), 0.35 on [2, 8)
    assert curve_auc(curve, 8) == pytest.approx((1 * 1 + 0.45 * 1 + 0.35 * 6) / 8)
    # a longer horizon keeps the final answer until then
    assert curve_auc(curve, 10) == pytest.approx((1 + 0.45 + 0.35 * 6 + 0.15 * 2) / 10)


def test_auc_of_a_curve_that_answers_only_at_the_horizon_is_one():
    curve = eann_curve([A, B], sequential=True)  # first answer at 1
    assert curve_auc(curve, 1) == 1.0


def test_a_ragged_opt_curve_is_refused():
    opt = opt_curve(OPTS)
    opt.budget.append(20)  # a column grown after the fact: refused, not matched against the shorter one
    with pytest.raises(ValueError, match="zip"):
        schedule_summary(eann_curve([A, B]), horizon=8, deepest=6, milestones=(1.0,), opt=opt)


def test_summary_milestones_relative_to_opt_and_budget_to_match():
    curve = eann_curve([A, B], sequential=True)
    summary = schedule_summary(curve, horizon=8, deepest=6, milestones=(0.25, 0.5, 1.0), opt=opt_curve(OPTS))
    # milestone budgets 1.5, 3 and 6: the EANN answers 0.45, 0.35, 0.35; OPT 0.3, 0.25, 0.1
    assert summary.error_at == {"0.25": 0.45, "0.5": 0.35, "1": 0.35}
    assert summary.relative_to_opt == pytest.approx({"0.25": 50.0, "0.5": 40.0, "1": 250.0})
    # the EANN first reaches 0.3 and 0.25 at t=8 (0.15); never 0.1
    *matched, never = summary.budget_to_match_opt
    assert matched == pytest.approx([8 / 1.5, 8 / 3]) and never is None
    assert summary.auc == pytest.approx(3.55 / 8)
    assert (summary.final_test_error, summary.finish_budget, summary.first_answer_budget) == (0.15, 8, 1)


# The assemble stage's hand-worked case (tests/test_assemble_stage.py::test_two_members_worked_by_hand), here
# checked on the summary itself, every field: m1 has EANN weights (2 of 4 heads untrained); at 500 (W=1) and
# 300 (W=2) m1's head 2 ties m0's final head at validation 0.3 and, deeper, answers.
M0 = MemberCurve("m0", [100, 200], [0.5, 0.3], [0.6, 0.4])
M1 = MemberCurve("m1", [100, 200, 300, 400], [0.9, 0.9, 0.3, 0.1], [0.85, 0.9, 0.35, 0.15], untrained_heads=2)
M1_OPT1 = OptBaseline("m1", 1, MemberCurve("m1-opt1", [100, 200], [0.7, 0.25], [0.75, 0.3]))
M1_OPT3 = OptBaseline(
    "m1", 3, MemberCurve("m1-opt3", [100, 200, 300, 400], [0.8, 0.6, 0.3, 0.1], [0.8, 0.6, 0.3, 0.1])
)


def approx_leaves(tree):
    """``tree`` with every float leaf compared approximately (``pytest.approx`` does not nest)."""
    if isinstance(tree, dict):
        return {k: approx_leaves(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [approx_leaves(v) for v in tree]
    return pytest.approx(tree) if isinstance(tree, float) else tree


def test_two_members_and_opt_summary_worked_by_hand():
    assembly = assemble([M1, M0], [M1_OPT3, M1_OPT1], test_size=20, near_optimal_from=0.5)
    # Sequential and FIFO W=1: m0 [0, 200), m1 [200, 600); answers 0.6, 0.4, 0.4, 0.4, 0.35 (tie), 0.15 at
    # 100..600; compute 100 per 100. W=2: both from 0; 0.6, 0.4, 0.35 (tie), 0.15 at 100..400; compute
    # 200 per 100 until m0 ends at 200, then 100: 200, 400, 500, 600.
    sequential = {"budget": [100, 200, 300, 400, 500, 600], "member": [0, 0, 0, 0, 1, 1]}
    sequential |= {"head": [0, 1, 1, 1, 2, 3], "compute": [100, 200, 300, 400, 500, 600]}
    sequential |= {
        "test_error": [0.6, 0.4, 0.4, 0.4, 0.35, 0.15],
        "val_error": [0.5, 0.3, 0.3, 0.3, 0.3, 0.1],
    }
    fifo_w2 = {"budget": [100, 200, 300, 400], "member": [0, 0, 1, 1], "head": [0, 1, 2, 3]}
    fifo_w2 |= {"compute": [200, 400, 500, 600], "test_error": [0.6, 0.4, 0.35, 0.15]}
    fifo_w2 |= {"val_error": [0.5, 0.3, 0.3, 0.1]}
    # OPT: OPT(1) (cost 200, final head 1) from 200, OPT(3) (cost 400, head 3) from 400. OPT+: OPT(1) on
    # [0, 200), OPT(3) on [200, 600), final outputs only (member index, head 0 of the final-only network).
    opt = {"budget": [200, 400], "member": [0, 1], "head": [1, 3], "compute": [200, 400]}
    opt |= {"test_error": [0.3, 0.1], "val_error": [0.25, 0.1]}
    opt_plus = {"budget": [200, 600], "member": [0, 1], "head": [0, 0], "compute": [200, 600]}
    opt_plus |= {"test_error": [0.3, 0.1], "val_error": [0.25, 0.1]}
    expected_curves = {
        "sequential": {"label": "sequential", "workers": 1, **sequential},
        "fifo-W1": {"label": "fifo-W1", "workers": 1, **sequential},
        "fifo-W2": {"label": "fifo-W2", "workers": 2, **fifo_w2},
        "OPT": {"label": "OPT", "workers": 1, **opt},
        "OPT+": {"label": "OPT+", "workers": 1, **opt_plus},
    }
    assert approx_leaves(assembly.model_dump()["curves"]) == expected_curves

    # Horizon 200 + 400 = 600, milestones of the deepest cost 400: 100, 200, 300, 400. AUC: error 1 before
    # the first answer, steps of 1/6: sequential (1 + 0.6 + 0.4 * 3 + 0.35) / 6 = 0.525, W=2
    # (1 + 0.6 + 0.4 + 0.35 + 0.15 * 2) / 6 = 2.65 / 6, OPT (1 * 2 + 0.3 * 2 + 0.1 * 2) / 6 = 2.8 / 6, OPT+
    # (1 * 2 + 0.3 * 4) / 6 = 3.2 / 6. Relative increase on OPT: no OPT answer at 100; 0.4 vs 0.3, 0.4 vs
    # 0.3, 0.4 vs 0.1 (W=2: 0.35 vs 0.3, 0.15 vs 0.1). Budget to match OPT(1)'s 0.3: first at 600 (W=2:
    # 400), over its cost 200; nothing reaches OPT(3)'s 0.1.
    seq_numbers = {"auc": 0.525, "final_test_error": 0.15, "first_answer_budget": 100, "finish_budget": 600}
    seq_numbers |= {"total_compute": 600, "error_at": {"0.25": 0.6, "0.5": 0.4, "0.75": 0.4, "1": 0.4}}
    seq_numbers |= {"relative_to_opt": {"0.25": None, "0.5": 100 / 3, "0.75": 100 / 3, "1": 300.0}}
    seq_numbers |= {"budget_to_match_opt": [3.0, None]}
    w2_numbers = {"auc": 2.65 / 6, "final_test_error": 0.15, "first_answer_budget": 100, "finish_budget": 400}
    w2_numbers |= {"total_compute": 600, "error_at": {"0.25": 0.6, "0.5": 0.4, "0.75": 0.35, "1": 0.15}}
    w2_numbers |= {"relative_to_opt": {"0.25": None, "0.5": 100 / 3, "0.75": 50 / 3, "1": 50.0}}
    w2_numbers |= {"budget_to_match_opt": [2.0, None]}
    opt_numbers = {"auc": 2.8 / 6, "final_test_error": 0.1, "first_answer_budget": 200, "finish_budget": 400}
    opt_numbers |= {"total_compute": 400, "error_at": {"0.25": None, "0.5": 0.3, "0.75": 0.3, "1": 0.1}}
    plus_numbers = {"auc": 3.2 / 6, "final_test_error": 0.1, "first_answer_budget": 200, "finish_budget": 600}
    plus_numbers |= {"total_compute": 600, "error_at": {"0.25": None, "0.5": 0.3, "0.75": 0.3, "1": 0.3}}
    # Inflation of costs (200, 400) (tests/test_assemble_stage.py works the exact values out). Limits at
    # b = 2, a = 1/(b^W - 1), theta = max(phi, 1/b): worst b (a + theta); average [b/2 ((a + theta)^2 -
    # ((a + 1)/b)^2) + (1 - theta) + a ln(1/theta)] / ((a + 1)(1 - 1/b)). W=1 (a = 1): phi = 1: 4 and
    # (4 - 1) / 1 = 3; phi = 1/2: 3 and (2.25 - 1 + 0.5 + ln 2) / 1 = 2.4431472. W=2 (a = 1/3):
    # phi = 1: 8/3 and (16/9 - 4/9) / (2/3) = 2; phi = 1/2: 5/3 and (25/36 - 16/36 + 0.5 + ln(2) / 3) / (2/3)
    # = 0.9810490 / (2/3) = 1.4715736.
    inflation = {
        "near_optimal_from": 0.5,
        "exact": {
            1: {
                "final_only": {"worst": 3.0, "average": 2.0},
                "near_optimal": {"worst": 2.0, "average": 1.5965736},
            },
            2: {"final_only": {"worst": 2.0, "average": 1.5}, "near_optimal": {"worst": 1.0, "average": 1.0}},
        },
        "base": 2.0,
        "limits": {
            1: {
                "final_only": {"worst": 4.0, "average": 3.0},
                "near_optimal": {"worst": 3.0, "average": 2.4431472},
            },
            2: {
                "final_only": {"worst": 8 / 3, "average": 2.0},
                "near_optimal": {"worst": 5 / 3, "average": 1.4715736},
            },
        },
    }
    # m1's head 1 had no loss (EANN weights): not compared; head 3: 0.15 vs OPT(3)'s 0.1 is 50% more.
    member_rows = [
        {"member": "m1", "head": 1, "flops": 200, "trained": False, "test_error": 0.9, "opt_test_error": 0.3},
        {"member": "m1", "head": 3, "flops": 400, "trained": True, "test_error": 0.15, "opt_test_error": 0.1},
    ]
    member_rows[0]["relative_increase"], member_rows[1]["relative_increase"] = None, 50.0
    expected_summary = {
        "test_size": 20,
        "horizon": 600,
        "milestones": [0.25, 0.5, 0.75, 1.0],
        "schedules": {
            "sequential": {"label": "sequential", "workers": 1, **seq_numbers},
            "fifo-W1": {"label": "fifo-W1", "workers": 1, **seq_numbers},
            "fifo-W2": {"label": "fifo-W2", "workers": 2, **w2_numbers},
        },
        "baselines": {
            "OPT": {"label": "OPT", "workers": 1, **opt_numbers},
            "OPT+": {"label": "OPT+", "workers": 1, **plus_numbers},
        },
        "member_vs_opt": member_rows,
        "inflation": inflation,
    }
    summary = assembly.model_dump()["summary"]
    assert summary.keys() == expected_summary.keys()
    for key, expected in expected_summary.items():
        assert approx_leaves(summary[key]) == approx_leaves(expected), key


def test_a_perfect_opt_gives_no_relative_increase():
    """OPT with test error 0: a relative increase is infinite for any error above it, reported as None."""
    perfect = OptBaseline("m0", 1, MemberCurve("m0-opt1", [2], [0.0], [0.0]))
    exact = OptBaseline("m1", 3, MemberCurve("m1-opt3", [4], [0.15], [0.15]))
    rows = member_vs_opt([SMALL, LARGE], [perfect, exact])
    assert [(r.member, r.relative_increase) for r in rows] == [("m0", None), ("m1", 0.0)]
    curve = eann_curve([SMALL], sequential=True)  # answers 0.55 from 1, 0.35 from 2
    summary = schedule_summary(curve, horizon=2, deepest=2, milestones=(1.0,), opt=opt_curve([perfect.run]))
    assert summary.relative_to_opt == {"1": None}


def test_one_member_or_members_of_one_cost_have_no_growth_base():
    """No geometric limits without growth: one member, or every member of the same cost (base 1)."""
    for members in ([SMALL], [SMALL, MemberCurve("m1", [1, 2], [0.4, 0.2], [0.4, 0.25])]):
        summary = assemble(members, test_size=10, workers=[1], near_optimal_from=0.5).summary
        assert summary.inflation.base is None and summary.inflation.limits is None
        assert summary.inflation.near_optimal_from == 0.5 and list(summary.inflation.exact) == [1]
    # One member: nothing to inflate; two of cost 2 on one worker: D = 2 on [2, 4], worst 4 / 2 = 2 and
    # average (16 - 4) / (2 * 2) / 2 = 1.5.
    assert summary.inflation.exact[1].final_only.worst == pytest.approx(2.0)
    assert summary.inflation.exact[1].final_only.average == pytest.approx(1.5)


def test_the_growth_base_is_the_geometric_mean_of_the_cost_ratios():
    # Costs 100, 100, 900: base (900 / 100)^(1/2) = 3; limits at b = 3 on one worker, final outputs only:
    # worst b^2 / (b - 1) = 4.5, average b (b + 1) / (2 (b - 1)) = 3 (METHOD.md §7).
    summary = inflation_summary([100, 100, 900], [1], 1.0)
    assert summary.base == pytest.approx(3.0)
    assert summary.limits[1].final_only.worst == pytest.approx(4.5)
    assert summary.limits[1].final_only.average == pytest.approx(3.0)


def test_milestones_are_fractions_of_the_deepest_members_cost():
    """Three members of costs 1, 2, 4 (sequential: finishes at 1, 3, 7): milestones at 1, 2, 3 and 4."""
    members = [MemberCurve(f"m{k}", [2**k], [0.4 - 0.1 * k], [0.45 - 0.1 * k]) for k in range(3)]
    summary = assemble(members, test_size=10, workers=[1]).summary
    assert summary.schedules["sequential"].error_at == {"0.25": 0.45, "0.5": 0.45, "0.75": 0.35, "1": 0.35}
