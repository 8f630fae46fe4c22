"""Evaluating one anytime network (METHOD.md §6): per-head errors, milestones, relative increase, anytime AUC.

Heads are 0-based; ``costs[k]`` is the cumulative cost (FLOPs) of reaching head ``k``, so it never decreases,
and the last head is the final output. Errors are fractions in [0, 1] (any non-negative scale works).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

import numpy as np

# Fractions of the final head's cost at which anytime networks are compared with OPT (METHOD.md §6).
MILESTONES: dict[str, Fraction] = {
    "0.25": Fraction(1, 4),
    "0.5": Fraction(1, 2),
    "0.75": Fraction(3, 4),
    "1": Fraction(1),
}


def reported_topk(num_classes: int) -> tuple[int, ...]:
    """METHOD.md §6's reporting rule: top-1 always, top-5 too for datasets with at least 100 classes."""
    return (1, 5) if num_classes >= 100 else (1,)


def head_errors(
    probs: np.ndarray, labels: np.ndarray, topk: Sequence[int] | None = None
) -> dict[str, list[float]]:
    """Top-k error of every head: ``{"top1": [K floats], ...}`` from probs [K, N, C] and labels [N].

    ``topk=None`` follows :func:`reported_topk`; any k in [1, C] may be asked for. Ties are broken towards
    the lower class index (as ``argmax`` does), so a head that outputs the same score for every class is
    wrong on all but one class instead of "right" everywhere.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 3 or probs.shape[1] == 0 or probs.shape[2] == 0:
        raise ValueError(
            f"probs of shape {probs.shape} are invalid: expected [K heads, N samples, C classes]"
        )
    K, N, C = probs.shape
    if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels of shape {labels.shape} ({labels.dtype}) are invalid: expected {N} integers"
        )
    if labels.min() < 0 or labels.max() >= C:
        raise ValueError(f"labels in [{labels.min()}, {labels.max()}] are invalid: classes are 0..{C - 1}")
    if not np.isfinite(probs).all():
        raise ValueError("probs are invalid: they contain NaN or infinite values")
    ks = reported_topk(C) if topk is None else tuple(topk)
    for k in ks:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 1 <= k <= C:
            raise ValueError(f"topk value {k!r} is invalid: must be an integer in [1, {C}] (the classes)")
    classes = np.arange(C)
    # rank[k, n]: how many classes head k puts ahead of the true one (one head at a time bounds memory).
    rank = np.empty((K, N), dtype=np.int64)
    for head in range(K):
        p = probs[head]
        true = p[np.arange(N), labels][:, None]
        ahead = (p > true) | ((p == true) & (classes[None, :] < labels[:, None]))
        rank[head] = ahead.sum(axis=1)
    return {f"top{k}": (rank >= k).mean(axis=1).tolist() for k in ks}


def _check_costs(costs: Sequence[float]) -> np.ndarray:
    values = np.asarray(costs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"costs={list(costs)!r} are invalid: expected one cumulative cost per head")
    if not np.isfinite(values).all() or values.min() < 0 or values[-1] <= 0 or np.any(np.diff(values) < 0):
        raise ValueError(
            f"costs={list(costs)!r} are invalid: cumulative costs must be finite, >= 0, non-decreasing "
            "and the final one > 0"
        )
    return values


def milestone_heads(costs: Sequence[int]) -> dict[str, int | None]:
    """For each milestone fraction f, the last head whose cost does not exceed f * final cost.

    ``None`` when even the first head costs more than that (no prediction exists yet at that budget).
    Integer costs are compared exactly, so a head at exactly a quarter of the final cost counts.
    """
    _check_costs(costs)
    exact = [Fraction(c) for c in costs]
    heads: dict[str, int | None] = {}
    for key, fraction in MILESTONES.items():
        affordable = [k for k, c in enumerate(exact) if c <= fraction * exact[-1]]
        heads[key] = affordable[-1] if affordable else None
    return heads


def relative_increase(err: float, err_opt: float) -> float:
    """100 * (err - err_OPT) / err_OPT: percent more error than the OPT network of the same cost.

    A perfect OPT (error 0) gives 0.0 when ``err`` is 0 too and ``math.inf`` otherwise.
    """
    for name, value in (("err", err), ("err_opt", err_opt)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid: an error rate must be finite and >= 0")
    if err_opt == 0:
        return 0.0 if err == 0 else math.inf
    return 100.0 * (err - err_opt) / err_opt


def error_interval(error: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an error rate measured on ``n`` independent test samples.

    What a test split of that size can tell apart: two errors whose intervals overlap may differ by chance.
    Wilson's interval stays inside [0, 1] and keeps its coverage near 0 and 1, where the normal
    approximation collapses to a point (an error of 0 on 10 samples gives [0, 0.278], not [0, 0]).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n={n!r} is invalid: the test-set size must be an integer >= 1")
    if not 0 <= error <= 1:
        raise ValueError(f"error={error!r} is invalid: an error rate must be in [0, 1]")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is invalid: must be in (0, 1)")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    shrink = 1 + z * z / n
    centre = (error + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(error * (1 - error) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def anytime_auc(
    costs: Sequence[float], errors: Sequence[float], *, initial_error: float | None = None
) -> float:
    """Area under the anytime error curve on normalised cost [0, 1]: one number, lower is better.

    Budget x = cost / final cost. At budget x the network answers with the last head finished by then, so
    the error is a right-continuous step function: ``errors[k]`` on [x_k, x_{k+1}). Before the first head
    (x < x_0) there is no answer yet; that stretch is charged ``initial_error``, by default ``errors[0]``
    (as if the first head answered at once; pass the chance error 1 - 1/C to penalise slow first heads).
    The area equals the expected error when the network is interrupted at a uniformly random fraction of
    its full cost. The final head's error holds only at x = 1 and has no width: report it on its own.
    """
    x = _check_costs(costs) / float(costs[-1])
    err = np.asarray(errors, dtype=np.float64)
    if err.shape != x.shape or not np.isfinite(err).all() or err.min() < 0:
        raise ValueError(
            f"errors={list(errors)!r} are invalid: expected {x.size} finite non-negative errors, one per head"
        )
    first = float(err[0]) if initial_error is None else initial_error
    if not math.isfinite(first) or first < 0:
        raise ValueError(f"initial_error={initial_error!r} is invalid: must be finite and >= 0")
    return first * float(x[0]) + float(np.sum(err[:-1] * np.diff(x)))
