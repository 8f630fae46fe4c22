"""Numbers that summarise an EANN: AUC over a common horizon, errors at budgets, comparison with OPT.

All budgets are wall-clock in FLOPs per worker (see :mod:`anytime.eann.schedule`). Curves are compared on
the same horizon, the sequential schedule's total time, so that a schedule that finishes early keeps its
final error until then; before a schedule's first answer there is no prediction, which counts as an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from anytime.eann.assembly import EannCurve, MemberCurve, eann_curve, opt_curve, opt_plus_curve
from anytime.eann.inflation import inflation, inflation_limits
from anytime.metrics import anytime_auc, relative_increase

OPT_NAME = re.compile(r"^(?P<member>.+)-opt(?P<head>\d+)$")  # the train stage's OPT(j) run names


def curve_auc(curve: EannCurve, horizon: float) -> float:
    """Area under test error vs budget on ``[0, horizon]`` / horizon; no answer yet counts as error 1."""
    budgets = [b for b in curve.budget if b < horizon] + [horizon]
    errors = curve.test_error[: len(budgets) - 1]
    errors.append(errors[-1] if errors else 1.0)
    return anytime_auc(budgets, errors, initial_error=1.0)


def _relative(err: float | None, err_opt: float | None) -> float | None:
    if err is None or err_opt is None:
        return None
    value = relative_increase(err, err_opt)
    return None if math.isinf(value) else value


def schedule_summary(
    curve: EannCurve, *, horizon: float, deepest: float, milestones: Sequence[float], opt: EannCurve | None
) -> dict:
    """AUC, final error, finish time, compute, errors at ``milestones`` (fractions of ``deepest``) vs OPT."""
    at = {f"{f:g}": curve.error_at(f * deepest) for f in milestones}
    summary = {
        "label": curve.label,
        "workers": curve.workers,
        "auc": curve_auc(curve, horizon),
        "final_test_error": curve.test_error[-1],
        "finish_budget": curve.budget[-1],
        "total_compute": curve.compute[-1],
        "first_answer_budget": curve.budget[0],
        "error_at": at,
    }
    if opt is not None:
        summary["opt_error_at"] = {k: opt.error_at(f * deepest) for k, f in zip(at, milestones, strict=True)}
        summary["relative_to_opt"] = {k: _relative(at[k], summary["opt_error_at"][k]) for k in at}
        # Empirical inflation: budget the schedule needs to be as good as each OPT network, over its cost.
        ratios = []
        for cost, err in zip(opt.budget, opt.test_error, strict=True):
            reached = curve.budget_to_reach(err)
            ratios.append(None if reached is None else reached / cost)
        summary["budget_to_match_opt"] = ratios
    return summary


def member_vs_opt(members: Sequence[MemberCurve], opts: Sequence[MemberCurve]) -> list[dict]:
    """METHOD.md §6 comparison: each member head j that has an OPT(j) run, its error against OPT's."""
    by_name = {m.name: m for m in members}
    rows = []
    for opt in opts:
        match = OPT_NAME.match(opt.name)
        if not match or match["member"] not in by_name:
            continue
        member, head = by_name[match["member"]], int(match["head"])
        if head >= len(member.flops):
            continue
        rows.append(
            {
                "member": member.name,
                "head": head,
                "flops": member.flops[head],
                "test_error": member.test_error[head],
                "opt_test_error": opt.test_error[-1],
                "relative_increase": _relative(member.test_error[head], opt.test_error[-1]),
            }
        )
    return sorted(rows, key=lambda r: (r["member"], r["head"]))


def inflation_summary(costs: Sequence[float], workers: Sequence[int], near_optimal_from: float) -> dict:
    """Exact inflation of the members' measured costs per W, and the limits at their average growth base."""
    cases = {"final_only": 1.0, "near_optimal": near_optimal_from}

    def per_workers(bound) -> dict:
        return {str(w): {case: vars(bound(w, phi)) for case, phi in cases.items()} for w in workers}

    summary: dict = {
        "near_optimal_from": near_optimal_from,
        "exact": per_workers(lambda w, phi: inflation(costs, w, phi)),
    }
    if len(costs) > 1 and costs[-1] > costs[0]:
        base = (costs[-1] / costs[0]) ** (1 / (len(costs) - 1))
        summary["base"] = base
        summary["limits"] = per_workers(lambda w, phi: inflation_limits(base, w, phi))
    return summary


def assemble(
    members: Sequence[MemberCurve],
    opts: Sequence[MemberCurve],
    *,
    workers: Sequence[int] | None = None,
    near_optimal_from: float = 0.5,
    milestones: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
) -> tuple[dict[str, EannCurve], dict]:
    """Every curve (sequential, FIFO per W, OPT, OPT+) and the summary the report shows."""
    members = sorted(members, key=lambda m: m.cost)
    workers = list(workers) if workers is not None else list(range(1, len(members) + 1))
    curves = {"sequential": eann_curve(members, sequential=True)}
    curves.update({f"fifo-W{w}": eann_curve(members, w) for w in workers})
    opt = None
    if opts:
        opt = opt_curve(opts)
        curves["OPT"], curves["OPT+"] = opt, opt_plus_curve(opts)
    costs = [m.cost for m in members]
    horizon, deepest = sum(costs), costs[-1]
    summary = {
        "members": [
            {"name": m.name, "cost": m.cost, "heads": len(m.flops), "final_test_error": m.test_error[-1]}
            for m in members
        ],
        "horizon": horizon,
        "schedules": {
            label: schedule_summary(c, horizon=horizon, deepest=deepest, milestones=milestones, opt=opt)
            for label, c in curves.items()
            if label not in ("OPT", "OPT+")
        },
        "inflation": inflation_summary(costs, workers, near_optimal_from),
        "member_vs_opt": member_vs_opt(members, opts),
    }
    if opt is not None:
        summary["opt"] = {
            label: {"auc": curve_auc(c, horizon), "final_test_error": c.test_error[-1]}
            for label, c in (("OPT", curves["OPT"]), ("OPT+", curves["OPT+"]))
        }
    return curves, summary
