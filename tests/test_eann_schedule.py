"""FIFO schedules and member costs: the defaults, the allowed boundaries and the inputs that are refused."""

import pytest

from anytime.eann import Run, fifo_schedule, geometric_costs


def test_one_worker_by_default_runs_members_back_to_back():
    assert fifo_schedule([1, 2, 4]) == [Run(0, 0, 0.0, 1.0), Run(1, 0, 1.0, 3.0), Run(2, 0, 3.0, 7.0)]


def test_members_of_equal_depth_are_allowed():
    assert [r.finish for r in fifo_schedule([2, 2], workers=1)] == [2.0, 4.0]


@pytest.mark.parametrize(
    ("costs", "match"),
    [
        ([], r"^costs=\[\] are invalid: need at least one cost, every cost > 0$"),
        ([1, 0], r"^costs=\[1, 0\] are invalid: need at least one cost, every cost > 0$"),
        ([2, 1], r"^costs=\[2.0, 1.0\] are invalid: members must be ordered by depth"),
    ],
)
def test_bad_costs_raise_a_clear_error(costs, match):
    with pytest.raises(ValueError, match=match):
        fifo_schedule(costs)


def test_geometric_costs_from_one_member_up():
    assert geometric_costs(2, 1) == [1.0]
    assert geometric_costs(2, 4) == [1.0, 2.0, 4.0, 8.0]
    assert geometric_costs(1.5, 3, first=4) == [4.0, 6.0, 9.0]


@pytest.mark.parametrize(
    ("base", "members", "match"),
    [
        (1, 3, r"^base=1 is invalid: must be > 1$"),
        (2, 0, r"^members=0 is invalid: must be an integer >= 1$"),
        (2, 2.0, r"^members=2.0 is invalid: must be an integer >= 1$"),
    ],
)
def test_bad_geometric_settings_raise_a_clear_error(base, members, match):
    with pytest.raises(ValueError, match=match):
        geometric_costs(base, members)


@pytest.mark.parametrize("workers", [0, 1.5, True])
def test_bad_worker_counts_raise_a_clear_error(workers):
    with pytest.raises(ValueError, match=rf"^workers={workers!r} is invalid: must be an integer >= 1$"):
        fifo_schedule([1, 2], workers)
