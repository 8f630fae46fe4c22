"""The reproduction's tables from finished experiments: pure arithmetic on member curves, then Markdown.

Input is one :class:`Trial` per experiment (its seed and every trained network's per-head test error and
cumulative FLOPs); nothing here runs DVC, so tests feed fabricated trials. Spread over seeds is the sample
standard deviation; with one seed it is 0.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from anytime.eann import MemberCurve, assemble
from anytime.metrics import MILESTONES, milestone_heads, relative_increase
from pipelines.paths import OPT_DIR, opt_run_name
from pipelines.trained_runs import opt_baselines

MILESTONE_LABELS = {"0.25": "1/4", "0.5": "1/2", "0.75": "3/4", "1": "1"}


@dataclass(frozen=True)
class Trial:
    """One finished experiment: its seed and its trained networks by name (members and OPT runs)."""

    seed: int
    members: dict[str, MemberCurve]
    opts: dict[str, MemberCurve]
    test_size: int


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one number over seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def format(self, digits: int = 1) -> str:
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}" if self.values else "–"


def opt_errors(trial: Trial, reference: str) -> dict[str, tuple[int, float]]:
    """Milestone key -> (head j, OPT(j)'s final test error) for the OPT runs of ``reference``."""
    heads = milestone_heads(trial.members[reference].flops)
    found = {}
    for key, head in heads.items():
        run = trial.opts.get(opt_run_name(reference, head)) if head is not None else None
        if run is not None:
            found[key] = (head, run.test_error[-1])
    return found


def weighting_table(
    trials: Sequence[Trial], strategies: Iterable[str], reference: str
) -> dict[str, dict[str, Spread]]:
    """Strategy -> milestone -> relative increase (%) of its error over OPT at the milestone head.

    All strategies share ``reference``'s architecture, so its OPT(j) runs serve every row. The row ``OPT``
    holds OPT's own test error (%) at each milestone.
    """
    table: dict[str, dict[str, list[float]]] = {}
    for trial in trials:
        opt = opt_errors(trial, reference)
        table.setdefault("OPT", {})
        for key, (_, error) in opt.items():
            table["OPT"].setdefault(key, []).append(100 * error)
        for name in strategies:
            member = trial.members[name]
            for key, (head, error) in opt.items():
                relative = relative_increase(member.test_error[head], error)
                table.setdefault(name, {}).setdefault(key, []).append(relative)
    return {row: {k: Spread(tuple(v)) for k, v in cols.items()} for row, cols in table.items()}


def flops_to_reach(member: MemberCurve, error: float) -> float | None:
    """Cumulative FLOPs of the first head whose test error is at most ``error`` (None if none is)."""
    return next((f for f, e in zip(member.flops, member.test_error, strict=True) if e <= error), None)


@dataclass(frozen=True)
class CostToReach:
    """A small adaptive ANN's final test error as the target, and what each network spends to reach it."""

    target: Spread  # the small ANN's final test error (%)
    small_flops: Spread
    large_flops: Spread  # over the seeds where the large ANN reaches the target
    reached: int  # seeds where the large ANN reaches it
    seeds: int

    @property
    def ratio(self) -> float | None:
        return self.large_flops.mean / self.small_flops.mean if self.large_flops.values else None


def cost_to_reach(trials: Sequence[Trial], small: str, large: str) -> CostToReach:
    """FLOPs the ``small`` ANN and the ``large`` one need to reach the small one's final test error."""
    targets, small_flops, large_flops = [], [], []
    for trial in trials:
        target = trial.members[small].test_error[-1]
        targets.append(100 * target)
        small_flops.append(flops_to_reach(trial.members[small], target))
        reached = flops_to_reach(trial.members[large], target)
        if reached is not None:
            large_flops.append(reached)
    return CostToReach(
        Spread(tuple(targets)),
        Spread(tuple(small_flops)),
        Spread(tuple(large_flops)),
        reached=len(large_flops),
        seeds=len(trials),
    )


@dataclass(frozen=True)
class ScheduleRow:
    """One EANN schedule against OPT: errors at the milestone budgets and the cost to match each OPT."""

    label: str
    error_at: dict[str, float | None]  # test error (%) at each fraction of the deepest member's cost
    opt_error_at: dict[str, float | None]
    match_ratios: list[float | None]  # budget to match each OPT network / that network's cost
    bound: float | None  # the library's exact worst-case inflation for this schedule's workers


def eann_rows(trial: Trial, near_optimal_from: float = 0.5) -> list[ScheduleRow]:
    """Sequential and FIFO W = 1..m schedules of the trial's members, as the assemble stage traces them."""
    summary = assemble(
        list(trial.members.values()),
        opt_baselines(list(trial.opts.values()), OPT_DIR),
        test_size=trial.test_size,
        near_optimal_from=near_optimal_from,
        milestones=[float(f) for f in MILESTONES.values()],
    ).summary
    opt = summary.baselines.get("OPT")
    rows = []
    for label, schedule in summary.schedules.items():
        bound = summary.inflation.exact.get(schedule.workers)
        rows.append(
            ScheduleRow(
                label,
                {k: _percent(v) for k, v in schedule.error_at.items()},
                {k: _percent(v) for k, v in opt.error_at.items()} if opt else {},
                list(schedule.budget_to_match_opt or []),
                bound.near_optimal.worst if bound else None,
            )
        )
    return rows


def _percent(error: float | None) -> float | None:
    return None if error is None else 100 * error


def _cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_weighting(table: dict[str, dict[str, Spread]], order: Sequence[str]) -> str:
    """The weighting table: relative increase over OPT (%) at each milestone, mean ± sd over seeds."""
    keys = list(MILESTONE_LABELS)
    header = "| weighting | " + " | ".join(f"{MILESTONE_LABELS[k]} of the cost" for k in keys) + " |"
    lines = [header, "|---" * (len(keys) + 1) + "|"]
    for row in order:
        cells = [table[row][k].format() if k in table[row] else "–" for k in keys]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    opt = table.get("OPT", {})
    lines.append(
        "| *OPT test error (%)* | " + " | ".join(opt[k].format(2) if k in opt else "–" for k in keys) + " |"
    )
    return "\n".join(lines)


def markdown_cost_to_reach(rows: dict[str, CostToReach], large: str) -> str:
    """Small adaptive ANNs vs the deeper CONST ANN: FLOPs to reach the small one's final error."""
    lines = [
        f"| small ANN | final test error (%) | its FLOPs | {large} FLOPs to reach it | ratio | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ratio = "never" if row.ratio is None else f"{row.ratio:.2f}x"
        large_flops = row.large_flops.format(0) if row.large_flops.values else "never"
        lines.append(
            f"| {name} | {row.target.format(2)} | {row.small_flops.mean:,.0f} | {large_flops} | {ratio} "
            f"| {row.reached}/{row.seeds} |"
        )
    return "\n".join(lines)


def markdown_eann(rows: Sequence[ScheduleRow]) -> str:
    """EANN schedules vs OPT: test error at each budget, the worst budget ratio to match OPT, the bound."""
    keys = list(MILESTONE_LABELS)
    lines = [
        "| schedule | "
        + " | ".join(f"error at {MILESTONE_LABELS[k]} (OPT)" for k in keys)
        + " | cost to match OPT (worst, measured) | bound (library) |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for row in rows:
        cells = [f"{_cell(row.error_at.get(k), 2)} ({_cell(row.opt_error_at.get(k), 2)})" for k in keys]
        matched = [r for r in row.match_ratios if r is not None]
        worst = f"{max(matched):.2f}x" if matched else "–"
        if len(matched) < len(row.match_ratios):
            worst += f" ({len(row.match_ratios) - len(matched)} never matched)"
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {worst} | {_cell(row.bound, 2)}x |")
    return "\n".join(lines)
