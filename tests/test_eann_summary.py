"""The EANN summary and the assemble -> report contract: typed records that round-trip and validate JSON."""

import json

import pytest
from pydantic import ValidationError

from anytime.eann import Assembly, MemberCurve, OptBaseline, assemble, eann_curve, opt_curve
from anytime.eann.summary import curve_auc, member_vs_opt, milestone_key, schedule_summary

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
    rows = member_vs_opt([SMALL, LARGE], [OPT3, OPT1, OptBaseline("gone", 0, SMALL.final_only())])
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
