"""EANN schedules and cost inflation: exact values vs a brute-force grid simulation; METHOD.md §7 limits."""

import numpy as np
import pytest

from anytime.eann import Inflation, fifo_schedule, geometric_costs, inflation, inflation_limits
from anytime.eann.schedule import compute_spent

BASES = (1.5, 2.0, 3.0, 4.0)
WORKERS = (1, 2, 3)
FRACTIONS = (1.0, 0.5)


def simulate(costs, workers, fraction, grid):
    """Independent brute force: a plain worker loop, then D(B) by its definition at every grid budget."""
    free = [0.0] * workers
    starts, finishes = [], []
    for cost in costs:  # depth order; the earliest-free (then lowest) worker takes the next member
        w = min(range(workers), key=lambda i: (free[i], i))
        starts.append(free[w])
        free[w] += cost
        finishes.append(free[w])
    depth = np.zeros_like(grid)
    for s, f, c in zip(starts, finishes, costs, strict=True):
        done = grid - s
        finished = grid >= f
        matched = (done >= 0) & ~finished & (done >= fraction * c)
        depth = np.maximum(depth, np.where(finished, c, np.where(matched, done, 0.0)))
    return grid / depth


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_brute_force_matches_exact_inflation(base, workers, fraction):
    costs = geometric_costs(base, 7)
    exact = inflation(costs, workers, fraction)
    last = max(r.finish for r in fifo_schedule(costs, workers))
    grid = np.linspace(costs[0], last, 400_001)
    ratio = simulate(costs, workers, fraction, grid)
    assert ratio.max() <= exact.worst * (1 + 1e-12)  # never above the exact supremum
    assert ratio.max() >= exact.worst * (1 - 1e-3)  # and approaches it on a fine grid
    assert ratio.mean() == pytest.approx(exact.average, rel=2e-4)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_finite_schedules_converge_to_closed_form_limits(base, workers, fraction):
    limit = inflation_limits(base, workers, fraction)
    members = 60 if base < 2 else 40
    long = inflation(geometric_costs(base, members), workers, fraction)
    assert long.worst == pytest.approx(limit.worst, rel=1e-6)
    assert long.average == pytest.approx(limit.average, rel=1e-5)
    for m in range(2, 12):  # every finite schedule stays under the limiting worst case
        assert inflation(geometric_costs(base, m), workers, fraction).worst <= limit.worst * (1 + 1e-12)


def test_spec_limits_at_base_two():
    assert inflation_limits(2) == Inflation(
        pytest.approx(4.0), pytest.approx(3.0)
    )  # defaults: W = 1, phi = 1
    assert inflation_limits(2, 1, 0.5).worst == pytest.approx(3.0)  # 1 + b/(b-1)
    assert inflation_limits(2, 1, 1.0).worst == pytest.approx(4.0)  # b^2/(b-1)
    assert inflation_limits(2, 1, 1.0).average == pytest.approx(3.0)  # b(b+1)/(2(b-1))
    # the sequential finite worst case is F_{m-1}/c_{m-2} = (2^m - 1)/2^(m-2) with final outputs only
    for m in range(2, 10):
        assert inflation(geometric_costs(2, m)).worst == pytest.approx((2**m - 1) / 2 ** (m - 2))


@pytest.mark.parametrize("base", BASES)
def test_general_base_formulas_and_parallel_workers_shrink_inflation(base):
    assert inflation_limits(base, 1, 1.0).worst == pytest.approx(base**2 / (base - 1))
    assert inflation_limits(base, 1, 1 / base).worst == pytest.approx(1 + base / (base - 1))
    for fraction in FRACTIONS:
        worst = [inflation_limits(base, w, fraction).worst for w in (1, 2, 3, 4)]
        average = [inflation_limits(base, w, fraction).average for w in (1, 2, 3, 4)]
        assert worst == sorted(worst, reverse=True) and worst[0] > worst[-1]
        assert average == sorted(average, reverse=True) and average[0] > average[-1]


def test_fifo_schedule_is_round_robin_for_geometric_costs():
    runs = fifo_schedule(geometric_costs(2, 7), workers=3)
    assert [r.worker for r in runs] == [0, 1, 2, 0, 1, 2, 0]
    assert [r.start for r in runs] == [0, 0, 0, 1, 2, 4, 9]  # member 6 waits for member 3 (1 + 8)
    assert compute_spent(runs, 2.0) == pytest.approx(1 + 2 + 2 + 1)
    assert compute_spent(runs, 1e9) == pytest.approx(sum(geometric_costs(2, 7)))


def test_one_finish_time_has_nothing_to_inflate():
    """A single member, or members of one cost side by side, all end at once: B / D(B) = 1 there."""
    assert inflation([2]) == Inflation(1.0, 1.0)
    assert inflation([2, 2], workers=2, near_optimal_from=0.5) == Inflation(1.0, 1.0)


def test_a_matched_running_member_no_deeper_than_the_finished_one_does_not_count():
    """Costs 2, 2, 2 on two workers, near-optimal from half depth: m0, m1 on [0, 2), m2 on [2, 4).

    m2 is matched from 3 on, but at B - 2 < 2 it is never deeper than the finished members: D = 2 on
    [2, 4], so worst 4 / 2 = 2 and average (4^2 - 2^2) / (2 * 2) / 2 = 1.5.
    """
    assert inflation([2, 2, 2], workers=2, near_optimal_from=0.5) == Inflation(2.0, 1.5)


def test_bad_inputs_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="workers=0"):
        fifo_schedule([1, 2], workers=0)
    with pytest.raises(ValueError, match="ordered by depth"):
        fifo_schedule([2, 1])
    for fraction in (0, 1.5):
        with pytest.raises(
            ValueError, match=rf"^near_optimal_from={fraction} is invalid: must be in \(0, 1\]"
        ):
            inflation([1, 2], near_optimal_from=fraction)
    with pytest.raises(ValueError, match="base=1"):
        inflation_limits(1)
