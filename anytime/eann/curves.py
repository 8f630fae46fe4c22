"""The two curves an EANN is built from and judged by: a member's error per head, an EANN's error per budget.

A :class:`MemberCurve` is one trained network's errors as its run record holds them (:mod:`anytime.record`);
an :class:`EannCurve` is what an assembly of members answers at each wall-clock budget
(:mod:`anytime.eann.assembly`), a step function that the summary and the report read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from anytime.record import RunRecord, read_record


@dataclass(frozen=True)
class MemberCurve:
    """One trained network: cumulative FLOPs and validation/test top-1 error of each head.

    ``untrained_heads``: how many leading heads training gave no loss (EANN weights, METHOD.md §7); their
    errors are those of untrained classifiers and say nothing about the method.
    """

    name: str
    flops: list[float]
    val_error: list[float]
    test_error: list[float]
    untrained_heads: int = 0

    def __post_init__(self) -> None:
        sizes = {len(self.flops), len(self.val_error), len(self.test_error)}
        if len(sizes) != 1 or not self.flops:
            raise ValueError(
                f"member {self.name!r}: flops, val_error, test_error must be non-empty lists of one length"
            )
        if any(b < a for a, b in pairwise(self.flops)) or self.flops[0] <= 0:
            raise ValueError(f"member {self.name!r}: flops={self.flops} must be positive and non-decreasing")
        if not 0 <= self.untrained_heads < len(self.flops):
            raise ValueError(
                f"member {self.name!r}: untrained_heads={self.untrained_heads} must leave the last head "
                "trained"
            )

    @property
    def cost(self) -> float:
        return self.flops[-1]

    def trained(self, head: int) -> bool:
        """Whether ``head`` had a loss during training (a head EANN weights zeroed did not)."""
        return head >= self.untrained_heads

    @classmethod
    def from_record(cls, record: RunRecord) -> MemberCurve:
        return cls(record.name, record.flops, record.val_error, record.test_error, record.untrained_heads)

    def final_only(self) -> MemberCurve:
        """The same network seen as a plain one: only its final output exists."""
        return MemberCurve(self.name, self.flops[-1:], self.val_error[-1:], self.test_error[-1:])


def load_member(directory: str | Path) -> MemberCurve:
    """A member's (or OPT run's) curve, from its run record (``anytime.record.read_record``)."""
    return MemberCurve.from_record(read_record(directory))


COLUMNS = ("budget", "test_error", "val_error", "member", "head", "compute")


@dataclass
class EannCurve:
    """Error against wall-clock budget, a step function: ``test_error[i]`` holds from ``budget[i]``.

    ``member[i]``/``head[i]`` is the output answering from ``budget[i]`` (index into the members in depth
    order), ``compute[i]`` the compute spent by then summed over workers.
    """

    label: str
    workers: int
    budget: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    test_error: list[float] = field(default_factory=list)
    member: list[int] = field(default_factory=list)
    head: list[int] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len({len(getattr(self, c)) for c in COLUMNS}) != 1:
            raise ValueError(f"curve {self.label!r}: columns {', '.join(COLUMNS)} must have one length")
        if any(b < a for a, b in pairwise(self.budget)):
            raise ValueError(f"curve {self.label!r}: budgets must be non-decreasing")

    def error_at(self, budget: float) -> float | None:
        """Test error of the answer available at ``budget`` (``None`` before the first head)."""
        index = next((i for i in reversed(range(len(self.budget))) if self.budget[i] <= budget), None)
        return None if index is None else self.test_error[index]

    def budget_to_reach(self, error: float) -> float | None:
        """The first budget whose answer has test error <= ``error`` (``None`` if never)."""
        return next((b for b, e in zip(self.budget, self.test_error, strict=True) if e <= error), None)

    def rows(self) -> list[dict]:
        """One dict per breakpoint (CSV-ready)."""
        columns = [getattr(self, c) for c in COLUMNS]
        return [dict(zip(COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]
