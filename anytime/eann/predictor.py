"""Anytime inference for real on one batch: an ANN, or an EANN's members one after another, head by head.

A thin face over :class:`anytime.eann.engine.AnytimeEngine` (the library's one way to run under a deadline):
the batch shares one FLOPs budget (per sample) and/or one wall-clock deadline, and stops before the first head
that would exceed either (the deadline is checked against each head's calibrated time, so the answer comes
by the deadline plus at most one head's misprediction). Nothing past the last head run is computed.

Which output is answered: for one ANN the latest head; for an EANN (several members, ``val_errors`` given) the
METHOD.md §7 rule, i.e. the lower validation error of the latest finished member's final head and the running
member's latest head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from anytime.eann.curves import load_member
from anytime.eann.engine import AnytimeEngine, Status
from anytime.models import AnytimeNet
from anytime.record import load_network


@dataclass
class Prediction:
    """What an anytime run answered and what it spent: ``flops`` per sample for every head computed."""

    logits: Tensor | None
    member: int | None
    head: int | None
    flops: float
    elapsed_s: float
    heads_computed: int
    stopped_by: str  # "complete", "budget" or "deadline"


class AnytimePredictor:
    """Run one ANN or an EANN (members in depth order) head by head under a budget.

    ``input_shape`` (one sample's ``(C, H, W)``) is needed to count FLOPs and calibrate head times;
    ``val_errors[m][k]`` (validation top-1 error of member ``m``'s head ``k``) selects between candidates
    as in METHOD.md §7. Models are put in eval mode.
    """

    def __init__(
        self,
        models: AnytimeNet | Sequence[AnytimeNet],
        input_shape: Sequence[int],
        val_errors: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.engine = AnytimeEngine(models, input_shape, val_errors=val_errors)
        self.models, self.val_errors = self.engine.models, val_errors
        # spent[m][k]: per-sample FLOPs from the start until member m's head k, every head on the way included
        self.spent: list[list[float]] = [[] for _ in self.models]
        for step in self.engine.steps:
            self.spent[step.member].append(step.flops)

    @classmethod
    def from_outputs(cls, directories: Sequence[str | Path], input_shape: Sequence[int]) -> AnytimePredictor:
        """An EANN from trained member directories (any order), run by depth, choosing on their val errors."""
        loaded = sorted(((load_member(d), load_network(d)) for d in directories), key=lambda p: p[0].cost)
        return cls([m for _, m in loaded], input_shape, val_errors=[c.val_error for c, _ in loaded])

    @property
    def total_flops(self) -> float:
        return self.spent[-1][-1]

    def predict(
        self, x: Tensor, *, flops_budget: float | None = None, deadline_s: float | None = None
    ) -> Prediction:
        """Answer for batch ``x`` within ``flops_budget`` (per sample) and/or ``deadline_s`` from now."""
        if flops_budget is not None and flops_budget < 0:
            raise ValueError(f"flops_budget={flops_budget!r} is invalid: must be >= 0")
        if deadline_s is not None and deadline_s < 0:
            raise ValueError(f"deadline_s={deadline_s!r} is invalid: must be >= 0")
        answers = self.engine.run(x, deadline_s=deadline_s, flops=flops_budget)
        first = answers[0]  # one budget and deadline for the batch: every sample leaves at the same step
        stopped_by = (
            "deadline" if first.status in (Status.EXPIRED, Status.UNREACHABLE) else first.status.value
        )
        logits = None if first.logits is None else torch.stack([a.logits for a in answers])
        elapsed = first.queued_s + first.compute_s
        return Prediction(
            logits, first.member, first.head, first.flops, elapsed, first.steps_computed, stopped_by
        )
