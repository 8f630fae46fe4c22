"""Evaluation metrics (METHOD.md §6) on hand-checkable numbers."""

import math

import numpy as np
import pytest

from anytime.metrics import (
    anytime_auc,
    error_interval,
    head_errors,
    milestone_heads,
    relative_increase,
    reported_topk,
)


def test_head_errors_top1_and_topk_by_hand():
    # Two heads, three samples, four classes; labels 0, 1, 2.
    probs = np.array(
        [
            [[0.7, 0.1, 0.1, 0.1], [0.5, 0.2, 0.3, 0.0], [0.1, 0.2, 0.3, 0.4]],  # right, 3rd, 2nd
            [[0.1, 0.2, 0.3, 0.4], [0.1, 0.6, 0.2, 0.1], [0.0, 0.0, 1.0, 0.0]],  # 4th, right, right
        ],
        dtype=np.float32,
    )
    labels = np.array([0, 1, 2])
    errors = head_errors(probs, labels, topk=(1, 2, 3, 4))
    assert errors["top1"] == pytest.approx([2 / 3, 1 / 3])
    assert errors["top2"] == pytest.approx([1 / 3, 1 / 3])
    assert errors["top3"] == pytest.approx([0.0, 1 / 3])
    assert errors["top4"] == [0.0, 0.0]


def test_ties_count_as_argmax_would_resolve_them():
    probs = np.full((1, 4, 4), 0.25, dtype=np.float32)  # a head that knows nothing
    errors = head_errors(probs, np.array([0, 1, 2, 3]), topk=(1, 2))
    assert errors == {"top1": [0.75], "top2": [0.5]}


def test_one_sample_and_one_class_are_valid_shapes():
    # One sample, three classes: head 0 ranks the true class 2nd, head 1 1st.
    probs = np.array([[[0.5, 0.3, 0.2]], [[0.2, 0.7, 0.1]]])
    assert head_errors(probs, np.array([1]), topk=(1, 2)) == {"top1": [1.0, 0.0], "top2": [0.0, 0.0]}
    # A single class: every head is right by construction.
    assert head_errors(np.ones((2, 3, 1)), np.zeros(3, dtype=int)) == {"top1": [0.0, 0.0]}


def test_default_topk_follows_the_spec_reporting_rule():
    assert reported_topk(10) == (1,)
    assert reported_topk(100) == (1, 5)
    rng = np.random.default_rng(0)
    assert set(head_errors(rng.random((2, 5, 10)), np.arange(5))) == {"top1"}
    assert set(head_errors(rng.random((2, 5, 100)), np.arange(5))) == {"top1", "top5"}


@pytest.mark.parametrize(
    ("probs", "labels", "topk", "fragment"),
    [
        (np.ones((3, 4)), np.zeros(3, dtype=int), None, "expected [K heads, N samples, C classes]"),
        (np.ones((2, 0, 4)), np.zeros(0, dtype=int), None, "expected [K heads, N samples, C classes]"),
        (np.ones((2, 3, 0)), np.zeros(3, dtype=int), None, "expected [K heads, N samples, C classes]"),
        (np.ones((2, 3, 4)), np.zeros(2, dtype=int), None, "expected 3 integers"),
        (np.ones((2, 3, 4)), np.zeros(3), None, "expected 3 integers"),
        (np.ones((2, 3, 4)), np.array([0, 4, 1]), None, "classes are 0..3"),
        (np.ones((2, 3, 4)), np.zeros(3, dtype=int), (5,), "topk value 5 is invalid"),
        (np.ones((2, 3, 4)), np.zeros(3, dtype=int), (0,), "topk value 0 is invalid"),
        (np.ones((2, 3, 4)), np.zeros(3, dtype=int), (1.5,), "topk value 1.5 is invalid"),
        (np.ones((2, 3, 4)), np.zeros(3, dtype=int), (True,), "topk value True is invalid"),
    ],
)
def test_head_errors_bad_input(probs, labels, topk, fragment):
    with pytest.raises(ValueError) as info:
        head_errors(probs, labels, topk)
    assert fragment in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_head_errors_refuse_non_finite_probs(bad):
    probs = np.ones((2, 3, 4))
    probs[1, 2, 3] = bad
    with pytest.raises(ValueError) as info:
        head_errors(probs, np.zeros(3, dtype=int))
    assert str(info.value) == "probs are invalid: they contain NaN or infinite values"


def test_milestones_pick_the_last_affordable_head():
    assert milestone_heads([10, 20, 30, 40, 50, 60, 70, 80]) == {"0.25": 1, "0.5": 3, "0.75": 5, "1": 7}
    # Exactly on a milestone counts; just above does not.
    assert milestone_heads([25, 26, 50, 75, 100]) == {"0.25": 0, "0.5": 2, "0.75": 3, "1": 4}
    assert milestone_heads([30, 60, 100]) == {"0.25": None, "0.5": 0, "0.75": 1, "1": 2}


def test_relative_increase_in_percent():
    assert relative_increase(0.11, 0.10) == pytest.approx(10.0)
    assert relative_increase(0.09, 0.10) == pytest.approx(-10.0)
    assert relative_increase(0.0, 0.0) == 0.0
    assert relative_increase(0.01, 0.0) == math.inf
    with pytest.raises(ValueError, match=r"^err_opt=-0\.1 is invalid"):
        relative_increase(0.1, -0.1)
    with pytest.raises(ValueError, match=r"^err=-0\.1 is invalid"):
        relative_increase(-0.1, 0.1)


def test_anytime_auc_by_hand():
    # x = [0.25, 0.5, 1]: first error before head 0, then 0.5 on [0.25, 0.5), 0.3 on [0.5, 1).
    assert anytime_auc([1, 2, 4], [0.5, 0.3, 0.1]) == pytest.approx(0.5 * 0.25 + 0.5 * 0.25 + 0.3 * 0.5)
    # Charging chance error (0.9 for ten classes) before the first head.
    assert anytime_auc([1, 2, 4], [0.5, 0.3, 0.1], initial_error=0.9) == pytest.approx(0.225 + 0.125 + 0.15)
    # A single head covers the whole budget; costs are scale-free.
    assert anytime_auc([7], [0.2]) == pytest.approx(0.2)
    assert anytime_auc([100, 200, 400], [0.5, 0.3, 0.1]) == anytime_auc([1, 2, 4], [0.5, 0.3, 0.1])


def test_anytime_auc_at_the_edges_of_valid_input():
    # A head that costs nothing answers from x = 0: 0.5 on [0, 1).
    assert anytime_auc([0, 2], [0.5, 0.1]) == pytest.approx(0.5)
    # Fractional costs, a final cost of exactly 1: 0.4 before and on [0.5, 1).
    assert anytime_auc([0.5, 1], [0.4, 0.2]) == pytest.approx(0.4)
    # Two heads at one cost (the second has no width): 0.5 * 0.5 + 0.4 * 0.5.
    assert anytime_auc([1, 1, 2], [0.5, 0.4, 0.1]) == pytest.approx(0.45)
    # Errors and the initial error may be 0: 0 * 0.25 + 0.5 * 0.25 + 0.3 * 0.5.
    assert anytime_auc([1, 2, 4], [0.5, 0.3, 0.1], initial_error=0.0) == pytest.approx(0.275)
    assert anytime_auc([1, 2], [0.2, 0.0]) == pytest.approx(0.2)


def test_anytime_auc_prefers_the_better_anytime_curve():
    costs = [1, 2, 3, 4]
    assert anytime_auc(costs, [0.4, 0.3, 0.2, 0.1]) < anytime_auc(costs, [0.9, 0.8, 0.7, 0.1])


@pytest.mark.parametrize(
    ("costs", "errors", "fragment"),
    [
        ([], [], "one cumulative cost per head"),
        ([2, 1], [0.1, 0.1], "non-decreasing"),
        ([0, 0], [0.1, 0.1], "must be finite, >= 0, non-decreasing and the final one > 0"),
        ([-1, 2], [0.1, 0.1], "must be finite, >= 0"),
        ([1, math.inf], [0.1, 0.1], "must be finite"),
        ([1, math.nan], [0.1, 0.1], "must be finite"),
        ([1, None], [0.1, 0.1], "must be finite"),
        ([1, 2], [0.1], "expected 2 finite"),
        ([1, 2], [0.1, float("nan")], "expected 2 finite"),
        ([1, 2], [0.1, None], "expected 2 finite"),
        ([1, 2], [0.1, -0.1], "expected 2 finite non-negative"),
    ],
)
def test_anytime_auc_bad_input(costs, errors, fragment):
    with pytest.raises(ValueError) as info:
        anytime_auc(costs, errors)
    assert fragment in str(info.value)


@pytest.mark.parametrize("initial_error", [-0.5, math.nan, math.inf])
def test_anytime_auc_bad_initial_error(initial_error):
    with pytest.raises(
        ValueError, match=rf"^initial_error={initial_error!r} is invalid: must be finite and >= 0"
    ):
        anytime_auc([1, 2], [0.5, 0.1], initial_error=initial_error)


def test_error_interval_is_wilsons_by_hand():
    # z = 1.959964 (95%), z^2 = 3.841459. 10 errors in 100: centre (0.1 + z^2/200) / (1 + z^2/100)
    # = 0.1192073 / 1.0384146 = 0.1147974; half-width z sqrt(0.1 * 0.9 / 100 + z^2 / 40000) / 1.0384146
    # = 1.959964 * 0.0315601 / 1.0384146 = 0.0595683: [0.0552291, 0.1743657] (the textbook 0.055, 0.174).
    assert error_interval(0.1, 100) == pytest.approx((0.0552291, 0.1743657), abs=2e-7)
    # No error in 10: centre = half-width = (z^2 / 20) / (1 + z^2 / 10) = 0.1920730 / 1.3841459 = 0.1387664.
    assert error_interval(0.0, 10) == pytest.approx((0.0, 0.2775328), abs=2e-7)
    # Symmetric: all wrong mirrors none wrong.
    assert error_interval(1.0, 10) == pytest.approx((1 - 0.2775328, 1.0), abs=2e-7)
    # 90%: z = 1.644854, z^2 = 2.705543; 1 in 4: centre (0.25 + 0.3381929) / 1.6763858 = 0.3508697,
    # half 1.644854 sqrt(0.046875 + 0.0422741) / 1.6763858 = 0.2929623.
    assert error_interval(0.25, 4, confidence=0.9) == pytest.approx((0.0579073, 0.6438320), abs=2e-7)
    # One sample, right: centre = half-width = (z^2 / 2) / (1 + z^2), so the interval is [0, z^2 / (1 + z^2)]
    # = [0, 1 - 1 / 4.8414588] = [0, 0.7934506].
    assert error_interval(0.0, 1) == pytest.approx((0.0, 0.7934506), abs=2e-7)


def test_error_interval_never_leaves_zero_one():
    # All wrong in 9: the upper end is 1 exactly, though centre + half-width rounds to 1 + 2**-52 in floats.
    assert error_interval(1.0, 9)[1] == 1.0
    # None wrong in 2: the lower end is 0 exactly, though centre - half-width rounds below it.
    assert error_interval(0.0, 2)[0] == 0.0


def test_error_interval_narrows_with_the_test_set():
    small, large = error_interval(0.05, 360), error_interval(0.05, 10_000)
    assert small[0] < large[0] < 0.05 < large[1] < small[1]


@pytest.mark.parametrize(
    ("error", "n", "confidence", "fragment"),
    [
        (0.1, 0, 0.95, "n=0 is invalid"),
        (0.1, 10.0, 0.95, "n=10.0 is invalid"),
        (1.5, 10, 0.95, "error=1.5 is invalid"),
        (0.1, 10, 1.0, "confidence=1.0 is invalid"),
        (0.1, 10, 0.0, "confidence=0.0 is invalid"),
    ],
)
def test_error_interval_bad_input(error, n, confidence, fragment):
    with pytest.raises(ValueError, match=fragment):
        error_interval(error, n, confidence)
