"""The numbers that summarise an EANN, as typed records that travel as JSON (the assemble -> report contract).

All budgets are wall-clock in FLOPs per worker (see :mod:`anytime.eann.schedule`). Curves are compared on
the same horizon, the sequential schedule's total time, so that a schedule that finishes early keeps its
final error until then; before a schedule's first answer there is no prediction, which counts as an error.
Errors are fractions of ``test_size`` test samples; the records keep that size so that a reader can put an
interval around every error (:func:`anytime.metrics.error_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, PositiveInt

from anytime.eann.curves import EannCurve, MemberCurve
from anytime.eann.inflation import Inflation, inflation, inflation_limits
from anytime.metrics import anytime_auc, relative_increase

BASELINES = ("OPT", "OPT+")  # the curves of OPT networks, beside which the EANN schedules are judged


class Record(BaseModel):
    """A JSON record validated on read: unknown, missing or mistyped keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class OptBaseline:
    """An OPT run trained as ``member``'s network up to head ``head`` alone (OPT(j), METHOD.md §6)."""

    member: str
    head: int
    run: MemberCurve


class CurveSummary(Record):
    """One error-vs-budget curve in numbers; ``error_at`` keys are milestone fractions of the deepest cost."""

    label: str
    workers: PositiveInt
    auc: float
    final_test_error: float
    first_answer_budget: float
    finish_budget: float
    total_compute: float
    error_at: dict[str, float | None]


class ScheduleSummary(CurveSummary):
    """An EANN schedule, and (with OPT runs) how it compares with OPT at the same budgets."""

    relative_to_opt: dict[str, float | None] | None = None  # percent, at each milestone
    budget_to_match_opt: list[float | None] | None = None  # per OPT network: budget needed / its cost


class MemberVsOpt(Record):
    """A member head against the OPT network of the same depth (METHOD.md §6)."""

    member: str
    head: int
    flops: float
    trained: bool  # False: EANN weights gave this head no loss, so the comparison says nothing
    test_error: float
    opt_test_error: float
    relative_increase: float | None  # percent; None when untrained or OPT's error is 0


class InflationCases(Record):
    final_only: Inflation
    near_optimal: Inflation


class InflationSummary(Record):
    """Exact inflation B/D(B) of the members' costs per W and, for growing costs, the geometric limits."""

    near_optimal_from: float
    exact: dict[int, InflationCases]
    base: float | None = None
    limits: dict[int, InflationCases] | None = None


class EannSummary(Record):
    """Everything the report shows besides the curves themselves."""

    test_size: PositiveInt
    horizon: float
    milestones: list[float]
    schedules: dict[str, ScheduleSummary]
    baselines: dict[str, CurveSummary]  # OPT and OPT+ when OPT runs exist
    member_vs_opt: list[MemberVsOpt]
    inflation: InflationSummary


class Assembly(Record):
    """What the assemble stage writes and the report stage reads: the members (by depth), every curve
    traced from them, and the summary."""

    members: list[MemberCurve]
    curves: dict[str, EannCurve]
    summary: EannSummary


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


def milestone_key(fraction: float) -> str:
    """The JSON key of a milestone budget fraction: 0.25 -> "0.25", 1.0 -> "1"."""
    return f"{fraction:g}"


def curve_summary(
    curve: EannCurve, *, horizon: float, deepest: float, milestones: Sequence[float]
) -> dict[str, object]:
    """AUC, final error, first answer, finish time, compute, errors at ``milestones`` (of ``deepest``)."""
    return {
        "label": curve.label,
        "workers": curve.workers,
        "auc": curve_auc(curve, horizon),
        "final_test_error": curve.test_error[-1],
        "first_answer_budget": curve.budget[0],
        "finish_budget": curve.budget[-1],
        "total_compute": curve.compute[-1],
        "error_at": {milestone_key(f): curve.error_at(f * deepest) for f in milestones},
    }


def schedule_summary(
    curve: EannCurve, *, horizon: float, deepest: float, milestones: Sequence[float], opt: EannCurve | None
) -> ScheduleSummary:
    """:func:`curve_summary` and, against ``opt``, the relative increase and the budget to match each OPT."""
    numbers = curve_summary(curve, horizon=horizon, deepest=deepest, milestones=milestones)
    if opt is not None:
        numbers["relative_to_opt"] = {
            milestone_key(f): _relative(curve.error_at(f * deepest), opt.error_at(f * deepest))
            for f in milestones
        }
        # Empirical inflation: budget the schedule needs to be as good as each OPT network, over its cost.
        numbers["budget_to_match_opt"] = [
            None if (reached := curve.budget_to_reach(err)) is None else reached / cost
            for cost, err in zip(opt.budget, opt.test_error, strict=True)
        ]
    return ScheduleSummary(**numbers)


def member_vs_opt(members: Sequence[MemberCurve], baselines: Sequence[OptBaseline]) -> list[MemberVsOpt]:
    """METHOD.md §6: each member head j that has an OPT(j) run, its error against OPT's."""
    by_name = {m.name: m for m in members}
    rows = []
    for baseline in baselines:
        member = by_name.get(baseline.member)
        if member is None or baseline.head >= len(member.flops):
            continue
        head, trained = baseline.head, member.trained(baseline.head)
        opt_error = baseline.run.test_error[-1]
        rows.append(
            MemberVsOpt(
                member=member.name,
                head=head,
                flops=member.flops[head],
                trained=trained,
                test_error=member.test_error[head],
                opt_test_error=opt_error,
                relative_increase=_relative(member.test_error[head], opt_error) if trained else None,
            )
        )
    return sorted(rows, key=lambda r: (r.member, r.head))


def inflation_summary(
    costs: Sequence[float], workers: Sequence[int], near_optimal_from: float
) -> InflationSummary:
    """Exact inflation of the members' measured costs per W, and the limits at their average growth base."""

    def per_workers(bound) -> dict[int, InflationCases]:
        return {
            w: InflationCases(final_only=bound(w, 1.0), near_optimal=bound(w, near_optimal_from))
            for w in workers
        }

    exact = per_workers(lambda w, phi: inflation(costs, w, phi))
    if len(costs) > 1 and costs[-1] > costs[0]:
        base = (costs[-1] / costs[0]) ** (1 / (len(costs) - 1))
        limits = per_workers(lambda w, phi: inflation_limits(base, w, phi))
        return InflationSummary(near_optimal_from=near_optimal_from, exact=exact, base=base, limits=limits)
    return InflationSummary(near_optimal_from=near_optimal_from, exact=exact)


def summarise(
    members: Sequence[MemberCurve],
    curves: Mapping[str, EannCurve],
    baselines: Sequence[OptBaseline],
    *,
    test_size: int,
    workers: Sequence[int],
    near_optimal_from: float,
    milestones: Sequence[float],
) -> EannSummary:
    """The summary of ``curves`` (schedules, and ``OPT``/``OPT+`` when present) of ``members`` (by depth)."""
    costs = [m.cost for m in members]
    horizon, deepest = sum(costs), costs[-1]
    opt = curves.get("OPT")
    return EannSummary(
        test_size=test_size,
        horizon=horizon,
        milestones=list(milestones),
        schedules={
            label: schedule_summary(c, horizon=horizon, deepest=deepest, milestones=milestones, opt=opt)
            for label, c in curves.items()
            if label not in BASELINES
        },
        baselines={
            label: CurveSummary(**curve_summary(c, horizon=horizon, deepest=deepest, milestones=milestones))
            for label, c in curves.items()
            if label in BASELINES
        },
        member_vs_opt=member_vs_opt(members, baselines),
        inflation=inflation_summary(costs, workers, near_optimal_from),
    )
