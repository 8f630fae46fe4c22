"""When each EANN member runs: the sequential schedule and FIFO schedules on W workers (METHOD.md §7).

Members are queued by depth; a free worker takes the next one. Time is wall-clock measured in the same
unit as the costs (FLOPs of one sample on one worker), so a budget ``t`` means "``t`` FLOPs per worker".
The sequential schedule is the FIFO schedule with one worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Run:
    """One member's slot in a schedule: ``[start, finish)`` on ``worker``."""

    member: int
    worker: int
    start: float
    finish: float

    @property
    def cost(self) -> float:
        return self.finish - self.start


def check_costs(costs: Sequence[float]) -> list[float]:
    """Costs must be positive numbers in depth order (the FIFO queue is by depth)."""
    values = [float(c) for c in costs]
    if not values or any(c <= 0 for c in values):
        raise ValueError(f"costs={list(costs)!r} are invalid: need at least one cost, every cost > 0")
    if any(b < a for a, b in pairwise(values)):
        raise ValueError(f"costs={values!r} are invalid: members must be ordered by depth (non-decreasing)")
    return values


def check_workers(workers: int) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid: must be an integer >= 1")
    return workers


def fifo_schedule(costs: Sequence[float], workers: int = 1) -> list[Run]:
    """Run members in depth order on ``workers`` FIFO workers; ties go to the lowest worker index.

    Event-exact (no time grid): each member starts when the earliest-free worker frees up.
    """
    values = check_costs(costs)
    check_workers(workers)
    free = [(0.0, w) for w in range(workers)]
    heapq.heapify(free)
    runs = []
    for member, cost in enumerate(values):
        start, worker = heapq.heappop(free)
        runs.append(Run(member, worker, start, start + cost))
        heapq.heappush(free, (start + cost, worker))
    return runs


def geometric_costs(base: float, members: int, first: float = 1.0) -> list[float]:
    """Costs ``first * base**k`` for ``k = 0..members-1``: the EANN's exponentially deepening members."""
    if not base > 1:
        raise ValueError(f"base={base!r} is invalid: must be > 1")
    if not isinstance(members, int) or members < 1:
        raise ValueError(f"members={members!r} is invalid: must be an integer >= 1")
    return [first * base**k for k in range(members)]


def compute_spent(runs: Sequence[Run], t: float) -> float:
    """Total compute (summed over workers) spent by wall-clock time ``t``."""
    return sum(min(max(t - r.start, 0.0), r.cost) for r in runs)
