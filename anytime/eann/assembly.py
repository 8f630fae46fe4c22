"""Assemble trained members into an EANN and trace its error against wall-clock budget (METHOD.md §7).

At every budget the candidates are outputs already computed: the final head of finished members and the
latest finished head of running members. The answer is the candidate with the lowest *validation* error;
its *test* error is what the curve reports, so the choice is decided on validation and applied to test.
Sequential (METHOD.md §7): candidates are the latest finished member's final head and the running member's
latest head. FIFO with W workers: every finished member's final head and every running member's latest head.
"""

from __future__ import annotations

from collections.abc import Sequence

from anytime.eann.curves import EannCurve, MemberCurve
from anytime.eann.schedule import Run, compute_spent, fifo_schedule
from anytime.eann.summary import Assembly, OptBaseline, summarise


def _candidates(runs: Sequence[Run], members: Sequence[MemberCurve], t: float, sequential: bool):
    """``(member, head)`` outputs available at wall-clock ``t`` under the schedule's candidate rule."""
    finished = [r for r in runs if r.finish <= t]
    if sequential and finished:
        finished = [max(finished, key=lambda r: r.finish)]
    out = [(r.member, len(members[r.member].flops) - 1) for r in finished]
    for r in runs:
        if r.start <= t < r.finish:
            done = [h for h, f in enumerate(members[r.member].flops) if r.start + f <= t]
            if done:
                out.append((r.member, done[-1]))
    return out


def eann_curve(members: Sequence[MemberCurve], workers: int = 1, *, sequential: bool = False) -> EannCurve:
    """Trace the EANN of ``members`` (in depth order) on ``workers`` FIFO workers; choose by validation error.

    ``sequential=True`` (one worker only) applies METHOD.md §7's two-candidate rule. Ties in validation error
    go to the deeper output. Breakpoints are exactly the times at which some head finishes.
    """
    if sequential and workers != 1:
        raise ValueError(f"workers={workers!r} is invalid with sequential=True (one worker)")
    runs = fifo_schedule([m.cost for m in members], workers)
    times = sorted({r.start + f for r in runs for f in members[r.member].flops})
    curve = EannCurve("sequential" if sequential else f"fifo-W{workers}", workers)
    for t in times:
        member, head = min(
            _candidates(runs, members, t, sequential),
            key=lambda mh: (members[mh[0]].val_error[mh[1]], -members[mh[0]].flops[mh[1]], -mh[0]),
        )
        chosen = members[member]
        curve.budget.append(t)
        curve.val_error.append(chosen.val_error[head])
        curve.test_error.append(chosen.test_error[head])
        curve.member.append(member)
        curve.head.append(head)
        curve.compute.append(compute_spent(runs, t))
    return curve


def opt_curve(opts: Sequence[MemberCurve]) -> EannCurve:
    """OPT: for a budget known in advance, run the deepest OPT network that fits (its final output)."""
    ordered = sorted(opts, key=lambda m: m.cost)
    curve = EannCurve("OPT", 1)
    for index, m in enumerate(ordered):
        curve.budget.append(m.cost)
        curve.val_error.append(m.val_error[-1])
        curve.test_error.append(m.test_error[-1])
        curve.member.append(index)
        curve.head.append(len(m.flops) - 1)
        curve.compute.append(m.cost)
    return curve


def opt_plus_curve(opts: Sequence[MemberCurve]) -> EannCurve:
    """OPT+: the OPT networks run one after another by depth (no anytime heads), chosen by validation.

    The fair "no anytime heads" counterpart of the sequential EANN: same schedule, final outputs only.
    """
    curve = eann_curve([m.final_only() for m in sorted(opts, key=lambda m: m.cost)], 1)
    curve.label = "OPT+"
    return curve


def assemble(
    members: Sequence[MemberCurve],
    baselines: Sequence[OptBaseline] = (),
    *,
    test_size: int,
    workers: Sequence[int] | None = None,
    near_optimal_from: float = 0.5,
    milestones: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
) -> Assembly:
    """Every curve (sequential, FIFO per W, and OPT, OPT+ from the ``baselines``' runs) and their summary.

    ``test_size``: the number of test samples every error was measured on. ``workers``: the FIFO worker
    counts to trace (default 1..m).
    """
    members = sorted(members, key=lambda m: m.cost)
    workers = list(workers) if workers is not None else list(range(1, len(members) + 1))
    curves = {"sequential": eann_curve(members, sequential=True)}
    curves.update({f"fifo-W{w}": eann_curve(members, w) for w in workers})
    if baselines:
        opts = [b.run for b in baselines]
        curves["OPT"], curves["OPT+"] = opt_curve(opts), opt_plus_curve(opts)
    summary = summarise(
        members,
        curves,
        baselines,
        test_size=test_size,
        workers=workers,
        near_optimal_from=near_optimal_from,
        milestones=milestones,
    )
    return Assembly(members=members, curves=curves, summary=summary)
