"""Assemble trained members into an EANN and trace its error against wall-clock budget (METHOD.md §7).

At every budget the candidates are outputs already computed: the final head of finished members and the
latest finished head of running members. The answer is the candidate with the lowest *validation* error;
its *test* error is what the curve reports, so the choice is decided on validation and applied to test.
Sequential (METHOD.md §7): candidates are the latest finished member's final head and the running member's
latest head. FIFO with W workers: every finished member's final head and every running member's latest head.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from anytime.eann.schedule import Run, compute_spent, fifo_schedule


@dataclass(frozen=True)
class MemberCurve:
    """One trained network: cumulative FLOPs and validation/test top-1 error of each head."""

    name: str
    flops: list[float]
    val_error: list[float]
    test_error: list[float]

    def __post_init__(self) -> None:
        sizes = {len(self.flops), len(self.val_error), len(self.test_error)}
        if len(sizes) != 1 or not self.flops:
            raise ValueError(
                f"member {self.name!r}: flops, val_error, test_error must be non-empty lists of one length"
            )
        if any(b < a for a, b in pairwise(self.flops)) or self.flops[0] <= 0:
            raise ValueError(f"member {self.name!r}: flops={self.flops} must be positive and non-decreasing")

    @property
    def cost(self) -> float:
        return self.flops[-1]

    def final_only(self) -> MemberCurve:
        """The same network seen as a plain one: only its final output exists."""
        return MemberCurve(self.name, self.flops[-1:], self.val_error[-1:], self.test_error[-1:])


def load_member(directory: str | Path) -> MemberCurve:
    """Read a member (or OPT run) from its ``metrics.json`` (the train stage's output contract)."""
    path = Path(directory) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        return MemberCurve(
            name=str(metrics.get("member", Path(directory).name)),
            flops=[float(f) for f in metrics["flops"]],
            val_error=[float(e) for e in metrics["val_top1"]],
            test_error=[float(e) for e in metrics["test_top1"]],
        )
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run the train stage first)") from None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a member metrics file ({exc!r})") from None


COLUMNS = ("budget", "test_error", "val_error", "member", "head", "compute")


@dataclass
class EannCurve:
    """Error against wall-clock budget, a step function: ``test_error[i]`` holds from ``budget[i]``."""

    label: str
    workers: int
    budget: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    member: list[int] = field(default_factory=list)
    head: list[int] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)

    @classmethod
    def from_rows(cls, label: str, workers: int, rows: Sequence[Mapping]) -> EannCurve:
        """Rebuild a curve from :meth:`rows` (e.g. read back from JSON)."""
        return cls(label, workers, **{c: [row[c] for row in rows] for c in COLUMNS})

    def error_at(self, budget: float) -> float | None:
        """Test error of the answer available at ``budget`` (``None`` before the first head)."""
        index = next((i for i in reversed(range(len(self.budget))) if self.budget[i] <= budget), None)
        return None if index is None else self.test_error[index]

    def budget_to_reach(self, error: float) -> float | None:
        """The first budget whose answer has test error <= ``error`` (``None`` if never)."""
        return next((b for b, e in zip(self.budget, self.test_error, strict=True) if e <= error), None)

    def rows(self) -> list[dict]:
        """One dict per breakpoint (JSON/CSV-ready)."""
        columns = [getattr(self, c) for c in COLUMNS]
        return [dict(zip(COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]


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
