"""Budgeted batch classification: each sample leaves at the first head that is confident enough.

A sample exits at head k when its max softmax probability reaches the threshold (the final head takes the
rest). One threshold is chosen on the validation split so that the *average* per-sample cost hits a target
(larger thresholds keep samples longer, so the cost is monotone in it and a search over the observed
confidences finds the best fit). At test time exits are real: samples that leave are dropped from the batch,
so the units after their exit never see them. Heads before ``first_exit`` never let a sample leave: use it
for members trained with EANN weights, whose first half of heads carries no loss (METHOD.md §2): useless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from anytime.flops import forward_flops
from anytime.models import AnytimeNet


def running_costs(model: AnytimeNet, input_shape: Sequence[int]) -> list[float]:
    """Per-sample FLOPs to leave at each head, counting every head computed on the way (their checks)."""
    return [float(forward_flops(model, input_shape, until=k)) for k in range(model.num_heads)]


def exit_heads(probs: np.ndarray, threshold: float, first_exit: int = 0) -> np.ndarray:
    """Exit head of each sample from softmax outputs ``[K, N, C]``: the first with max prob >= threshold."""
    confident = probs.max(axis=2) >= threshold  # [K, N]
    confident[:first_exit] = False
    confident[-1] = True
    return confident.argmax(axis=0)


def average_cost(probs: np.ndarray, costs: Sequence[float], threshold: float, first_exit: int = 0) -> float:
    return float(np.asarray(costs, dtype=np.float64)[exit_heads(probs, threshold, first_exit)].mean())


def calibrate_threshold(
    probs_val: np.ndarray, costs: Sequence[float], target_cost: float, first_exit: int = 0
) -> float:
    """The confidence threshold whose validation average cost is the largest not above ``target_cost``."""
    if not isinstance(first_exit, int) or not 0 <= first_exit < len(costs):
        raise ValueError(
            f"first_exit={first_exit!r} is invalid: must be a head index in [0, {len(costs) - 1}]"
        )
    if not costs[first_exit] <= target_cost:
        raise ValueError(
            f"target_cost={target_cost!r} is invalid: every sample pays at least head {first_exit} "
            f"({costs[first_exit]:.4g} FLOPs)"
        )
    if target_cost >= costs[-1] or first_exit == len(costs) - 1:
        return float("inf")  # the whole network fits: never exit early
    candidates = np.unique(probs_val[first_exit:-1].max(axis=2))
    lo, hi = 0, len(candidates) - 1  # at candidates[0] every sample leaves at head first_exit: it fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if average_cost(probs_val, costs, candidates[mid], first_exit) <= target_cost:
            lo = mid
        else:
            hi = mid - 1
    return float(candidates[lo])


@dataclass
class ExitResult:
    predictions: Tensor  # [N] class indices
    exit_head: Tensor  # [N] head each sample left at
    average_flops: float  # per sample, from the heads actually computed


@torch.no_grad()
def classify_with_exits(
    model: AnytimeNet, x: Tensor, threshold: float, costs: Sequence[float], first_exit: int = 0
) -> ExitResult:
    """Classify ``x``, dropping each sample from the batch at its exit head (real per-sample early exit).

    Walks the model's ``stem``/``units``/``heads`` like ``iter_heads`` does, but between heads it keeps only
    the samples still undecided, which a generator over a fixed batch cannot do.
    """
    model.eval()
    n, last = x.shape[0], model.num_heads - 1
    predictions = torch.empty(n, dtype=torch.long, device=x.device)
    exit_head = torch.empty(n, dtype=torch.long, device=x.device)
    active = torch.arange(n, device=x.device)
    features, head = model.stem(x), 0
    for index, unit in enumerate(model.units):
        features = unit(features)
        if index != model.head_units[head]:
            continue
        confidence, predicted = torch.softmax(model.heads[head](features), dim=1).max(dim=1)
        if head == last:
            leave = torch.ones_like(confidence, dtype=torch.bool)
        else:
            leave = (confidence >= threshold) & (head >= first_exit)
        predictions[active[leave]] = predicted[leave]
        exit_head[active[leave]] = head
        active, features = active[~leave], features[~leave]
        if active.numel() == 0:
            break
        head += 1
    spent = torch.as_tensor(costs, dtype=torch.float64)[exit_head.cpu()]
    return ExitResult(predictions, exit_head, float(spent.mean()))
