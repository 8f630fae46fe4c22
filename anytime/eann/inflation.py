r"""Cost inflation of an EANN schedule: the budget it needs over the network it matches (METHOD.md §7).

Model. Member k (cost ``c_k``, run on its worker during ``[S_k, F_k)``) is *near-optimal from a fraction
phi of its depth*: once it has computed ``x >= phi * c_k`` its latest head is as good as an optimal network
of cost ``x`` (``phi = 1``: only final outputs count, ``phi = 1/2``: SIEVE/HALF-END-like members). The depth
the EANN has matched at wall-clock budget ``B`` is

    D(B) = max( max{c_k : F_k <= B},  max{B - S_k : S_k <= B < F_k, B - S_k >= phi * c_k} ),

and the inflation is ``B / D(B)``, studied on ``B in [c_0, F_last]`` (from the first final output on).

Exact value for a finite schedule (:func:`inflation`). Between consecutive *events* (starts ``S_k``,
finishes ``F_k``, thresholds ``S_k + phi c_k``) the finished set and the matched running set are fixed, so
``D(B) = max(C, B - s)`` with ``C`` the deepest finished cost and ``s`` the earliest start among matched
running members; splitting once more at ``B = C + s`` leaves pieces where either ``D = C`` (ratio ``B/C``,
increasing: its supremum is the right-end limit) or ``D = B - s`` (ratio ``B/(B-s)``, decreasing: supremum at
the left end). The worst case is the largest piece supremum; the uniform average integrates each piece in
closed form, ``int B/C dB = (B2^2 - B1^2)/(2C)`` and ``int B/(B-s) dB = (B2-B1) + s ln((B2-s)/(B1-s))``.

Limit for geometric members (:func:`inflation_limits`), ``c_k = b^k`` on W FIFO workers. Worker ``j`` runs
members ``j, j+W, ...`` (round robin: after r rounds worker j is free at ``b^j G_r``, ``G_r = 1 + b^W +
... + b^{(r-1)W}``, and worker ``W-1``'s ``b^{W-1} G_r`` precedes worker 0's ``G_{r+1} = 1 + b^W G_r``), so
``S_k -> a b^k`` and ``F_k -> (a+1) b^k`` with ``a = 1/(b^W - 1)`` once the ``-1`` terms vanish. Finishes
are in depth order, so on the period ``B = b^k u``, ``u in [(a+1)/b, a+1)`` (between ``F_{k-1}`` and
``F_k``) the deepest finished cost is ``b^{k-1}`` (``1/b`` in units of ``b^k``) and among running members
only member k can be the deepest matched (member ``k+i`` needs ``u >= (a+phi) b^i``, which implies member k
is matched with the larger ``u - a``). Hence ``D(u) = max(1/b, (u - a) [u >= a + phi])``: with
``theta = max(phi, 1/b)`` the ratio is ``b u`` up to ``u = a + theta`` and ``u / (u - a)`` after, so

    worst   = b (a + theta) = b/(b^W - 1) + max(b phi, 1)
    average = [ b/2 ((a+theta)^2 - ((a+1)/b)^2) + (1 - theta) + a ln(1/theta) ] / ((a+1)(1 - 1/b)).

The period is self-similar and carries a fraction ``-> 1`` of any long budget range, so the uniform average
over ``[c_0, F_last]`` tends to this per-period average. Checks against METHOD.md §7 (sequential, W = 1):
final outputs only (phi = 1) gives ``b^2/(b-1)`` (4 at b = 2) and average ``b(b+1)/(2(b-1))`` (3 at b = 2);
near-optimal from half depth gives ``b/(b-1) + max(b/2, 1)`` (3 at b = 2, and the papers' ``1 + b/(b-1)``
for every ``b <= 2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from anytime.eann.schedule import Run, check_costs, check_workers, fifo_schedule


@dataclass(frozen=True)
class Inflation:
    """Worst-case (supremum) and uniform-average ``B / D(B)`` over a budget range."""

    worst: float
    average: float


def check_fraction(near_optimal_from: float) -> float:
    if not 0 < near_optimal_from <= 1:
        raise ValueError(
            f"near_optimal_from={near_optimal_from!r} is invalid: must be in (0, 1] (1 = final outputs only)"
        )
    return float(near_optimal_from)


def _pieces(runs: Sequence[Run], near_optimal_from: float) -> list[tuple[float, float, str, float]]:
    """Split ``[c_0, F_last]`` into pieces ``(lo, hi, kind, v)`` with ``D = v`` (``"const"``) or ``B - v``."""
    lo, hi = min(r.finish for r in runs), max(r.finish for r in runs)
    events = {lo, hi}
    for r in runs:
        events.update((r.start, r.finish, r.start + near_optimal_from * r.cost))
    cuts = sorted(e for e in events if lo <= e <= hi)
    pieces = []
    for a, b in pairwise(cuts):
        mid = (a + b) / 2
        finished = max((r.cost for r in runs if r.finish <= mid), default=0.0)
        matched = [
            r.start for r in runs if r.start <= mid < r.finish and mid - r.start >= near_optimal_from * r.cost
        ]
        if not matched:
            pieces.append((a, b, "const", finished))
            continue
        s = min(matched)
        cross = finished + s  # D switches from the finished cost to the running depth here
        if cross <= a:
            pieces.append((a, b, "running", s))
        elif cross >= b:
            pieces.append((a, b, "const", finished))
        else:
            pieces += [(a, cross, "const", finished), (cross, b, "running", s)]
    return pieces


def inflation(costs: Sequence[float], workers: int = 1, near_optimal_from: float = 1.0) -> Inflation:
    """Exact worst-case and uniform-average ``B / D(B)`` of the FIFO schedule, over ``[c_0, F_last]``."""
    check_workers(workers)
    phi = check_fraction(near_optimal_from)
    runs = fifo_schedule(check_costs(costs), workers)
    pieces = _pieces(runs, phi)
    lo, hi = min(r.finish for r in runs), max(r.finish for r in runs)
    if hi <= lo:  # one finish time (a single member, or equal ones side by side): nothing to inflate
        return Inflation(1.0, 1.0)
    worst, area = 0.0, 0.0
    for a, b, kind, v in pieces:
        if kind == "const":
            worst = max(worst, b / v)
            area += (b * b - a * a) / (2 * v)
        else:
            worst = max(worst, a / (a - v))
            area += (b - a) + v * math.log((b - v) / (a - v))
    return Inflation(worst, area / (hi - lo))


def inflation_limits(base: float, workers: int = 1, near_optimal_from: float = 1.0) -> Inflation:
    """Closed-form limits (members -> infinity) for costs ``base**k`` on ``workers`` FIFO workers."""
    if not base > 1:
        raise ValueError(f"base={base!r} is invalid: must be > 1")
    check_workers(workers)
    phi = check_fraction(near_optimal_from)
    b = float(base)
    a = 1.0 / (b**workers - 1.0)
    theta = max(phi, 1.0 / b)
    worst = b * (a + theta)
    u0 = (a + 1.0) / b
    area = b / 2 * ((a + theta) ** 2 - u0**2) + (1.0 - theta) + a * math.log(1.0 / theta)
    return Inflation(worst, area / ((a + 1.0) * (1.0 - 1.0 / b)))
