"""The ``assemble`` section of params.yaml: which EANN schedules to trace and which inflation to report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator


class AssembleParams(BaseModel):
    """EANN assembly (METHOD.md §7) and the numbers the report stage shows."""

    model_config = ConfigDict(extra="forbid")

    # FIFO worker counts to trace; null = 1..m (every count up to the number of members).
    workers: list[PositiveInt] | None = None
    # Members are near-optimal from this fraction of their depth on (0.5: SIEVE/HALF-END-like), for the
    # inflation bounds; the final-outputs-only case (1.0) is always reported beside it.
    near_optimal_from: float = Field(default=0.5, gt=0.0, le=1.0)
    # Budgets, as fractions of the deepest member's cost, at which the EANN's error is reported.
    milestones: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])

    @field_validator("workers")
    @classmethod
    def _distinct_workers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("must be null (1..m) or a non-empty list of distinct worker counts >= 1")
        return None if value is None else sorted(value)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < f <= 4 for f in value):
            raise ValueError(
                "must be a non-empty list of budget fractions in (0, 4] of the deepest member's cost"
            )
        return sorted(set(value))
