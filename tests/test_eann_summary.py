"""An EANN summary worked out by hand: AUC charges "no answer yet" as error 1, and relative-to-OPT is
100 * (err - err_OPT) / err_OPT at every milestone."""

import pytest

from anytime.eann import MemberCurve, eann_curve, opt_curve
from anytime.eann.evaluation import curve_auc, schedule_summary

# Sequential: a runs [0, 2), b runs [2, 8). Answers: t=1 a.h0 (test 0.45), t=2 a.h1 (0.35),
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
    assert summary["error_at"] == {"0.25": 0.45, "0.5": 0.35, "1": 0.35}
    assert summary["opt_error_at"] == {"0.25": 0.3, "0.5": 0.25, "1": 0.1}
    assert summary["relative_to_opt"] == pytest.approx({"0.25": 50.0, "0.5": 40.0, "1": 250.0})
    # the EANN first reaches 0.3 and 0.25 at t=8 (0.15); never 0.1
    *matched, never = summary["budget_to_match_opt"]
    assert matched == pytest.approx([8 / 1.5, 8 / 3]) and never is None
    assert summary["auc"] == pytest.approx(3.55 / 8)
    assert (summary["final_test_error"], summary["finish_budget"], summary["first_answer_budget"]) == (
        0.15,
        8,
        1,
    )
