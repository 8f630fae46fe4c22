"""The ``tune`` section of params.yaml: a Ray Tune search over weighting strategies and their hyperparameters.

The space is conditional: ``space.weighting`` lists candidate families of weighting strategies, each with
only its own hyperparameters (static scheme; alternating; AdaLoss; a no-regret learner), and
``space.optimizer`` ranges over SGD settings shared by all. A hyperparameter is either a constant or one
distribution written as a one-key mapping, e.g. ``{loguniform: [0.01, 0.5]}``, ``{uniform: [0.8, 0.99]}``,
``{choice: [10, 100]}``, ``{randint: [1, 5]}`` (upper end excluded) or ``{grid: [a, b]}`` (every value, times
``num_samples``).
Every range is checked against ``anytime.weighting`` / the train optimiser schema at both ends, so a bad
bound fails here, before a cluster spends an hour on it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Tag,
    ValidationError,
    model_validator,
)

from anytime.weighting import SCHEMES, create_strategy
from pipelines.config.train import MilestoneFraction, OptimizerParams, ScalingParams

Scalar = bool | int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Choice(_Section):
    """One of the values, uniformly at random."""

    choice: list[Scalar] = Field(min_length=1)

    def extremes(self) -> list[Scalar]:
        return list(self.choice)


class Grid(_Section):
    """Every value in turn (Ray's ``grid_search``): multiplies the number of trials."""

    grid: list[Scalar] = Field(min_length=1)

    def extremes(self) -> list[Scalar]:
        return list(self.grid)


class _Range(_Section):
    """``{<kind>: [low, high]}``: the subclass's one field holds the pair."""

    def bounds(self) -> tuple[float, float]:
        return getattr(self, next(iter(type(self).model_fields)))

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        low, high = self.bounds()
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"[{low}, {high}] is not a range: need finite low < high")
        if isinstance(self, LogUniform) and low <= 0:
            raise ValueError(f"loguniform [{low}, {high}] needs low > 0")
        return self

    def extremes(self) -> list[Scalar]:
        return list(self.bounds())


class Uniform(_Range):
    uniform: tuple[float, float]


class LogUniform(_Range):
    loguniform: tuple[float, float]


class RandInt(_Range):
    """An integer in ``[low, high)`` (Ray's ``randint``)."""

    randint: tuple[int, int]

    def extremes(self) -> list[Scalar]:
        return [self.randint[0], self.randint[1] - 1]


def _dimension_kind(value: Any) -> str:
    """The union tag: the distribution's key (also for already-built models, when serialising)."""
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    if isinstance(value, dict):
        return next(iter(value), "<empty>") if len(value) == 1 else "<several keys>"
    return "constant"


Distribution = Choice | Grid | Uniform | LogUniform | RandInt
Dimension = Annotated[
    Annotated[Scalar, Tag("constant")]
    | Annotated[Choice, Tag("choice")]
    | Annotated[Grid, Tag("grid")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[RandInt, Tag("randint")],
    Discriminator(
        _dimension_kind,
        custom_error_type="dimension",
        custom_error_message=(
            "a search dimension is a constant or one of {choice: [..]}, {grid: [..]}, {uniform: [lo, hi]}, "
            "{loguniform: [lo, hi]}, {randint: [lo, hi]}"
        ),
    ),
]


def extremes(dimension: Dimension) -> list[Scalar]:
    """The values a dimension can take at its ends: what must be legal for every sample to be legal."""
    return dimension.extremes() if isinstance(dimension, Distribution) else [dimension]


class _Candidate(_Section):
    """A family of weighting strategies and the ranges of its own hyperparameters; unset ones take the
    library default. A family is a registered strategy (alternating, adaloss) or a set of them whose member is
    a searched dimension (static: the scheme; noregret: the learner)."""

    family: str

    def dimensions(self) -> dict[str, Dimension]:
        """The hyperparameters set here (constants or distributions), keyed by name."""
        return {k: v for k, v in self if k != "family" and v is not None}

    def resolve(self, sample: dict[str, Scalar]) -> dict[str, Any]:
        """One sample of this family as ``train.weighting``: a registered strategy + its hyperparameters."""
        return {"strategy": self.family, **sample}

    def examples(self) -> list[dict[str, Scalar]]:
        """Samples at every end of every range (one dimension at a time): legal iff every sample is."""
        dims = {k: extremes(v) for k, v in self.dimensions().items()}
        base = {k: values[0] for k, values in dims.items()}
        return [base] + [{**base, k: v} for k, values in dims.items() for v in values[1:]]

    @model_validator(mode="after")
    def _legal_everywhere(self) -> _Candidate:
        for name, dim in self.dimensions().items():
            if isinstance(dim, Grid):
                raise ValueError(f"{name}: grid is only for space.optimizer; use choice inside a strategy")
        for sample in self.examples():
            weighting = self.resolve(sample)
            hparams = {k: v for k, v in weighting.items() if k != "strategy"}
            try:
                create_strategy(weighting["strategy"], num_heads=4, **hparams)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{self.family} candidate cannot take {sample}: {exc}") from None
        return self


class StaticCandidate(_Candidate):
    """A fixed weight vector (METHOD.md §2): the scheme is the searched dimension."""

    family: Literal["static"]
    # Every scheme of the library but OPT(j), which needs the head j.
    scheme: Dimension = {"choice": [s for s in SCHEMES if s != "opt"]}
    normalisation: Dimension | None = None

    def resolve(self, sample: dict[str, Scalar]) -> dict[str, Any]:
        rest = {k: v for k, v in sample.items() if k != "scheme"}
        return {"strategy": sample["scheme"], **rest}


class AlternatingCandidate(_Candidate):
    """One emphasised head per step, sampled from a static scheme (METHOD.md §3)."""

    family: Literal["alternating"]
    scheme: Dimension | None = None
    rho: Dimension | None = None
    normalisation: Dimension | None = None


class AdaLossCandidate(_Candidate):
    """Weights inversely proportional to running-average losses (METHOD.md §4)."""

    family: Literal["adaloss"]
    gamma: Dimension | None = None
    momentum: Dimension | None = None
    update_period: Dimension | None = None
    final_extra: Dimension | None = None


class NoRegretCandidate(_Candidate):
    """No-regret head selection (METHOD.md §5): the learner is a dimension; ``momentum`` is AVG-L's only."""

    family: Literal["noregret"]
    learner: Dimension = {"choice": ["rwm", "exp3", "avgl"]}
    gamma: Dimension | None = None
    rho_last: Dimension | None = None
    rho: Dimension | None = None
    scheme: Dimension | None = None
    momentum: Dimension | None = None

    def resolve(self, sample: dict[str, Scalar]) -> dict[str, Any]:
        learner = sample["learner"]
        rest = {k: v for k, v in sample.items() if k != "learner" and (k != "momentum" or learner == "avgl")}
        return {"strategy": learner, **rest}

    def examples(self) -> list[dict[str, Scalar]]:
        """Every learner with every end of every range, so AVG-L's momentum is checked where it applies."""
        return [
            {**sample, "learner": learner}
            for sample in super().examples()
            for learner in extremes(self.learner)
        ]


Candidate = Annotated[
    StaticCandidate | AlternatingCandidate | AdaLossCandidate | NoRegretCandidate,
    Field(discriminator="family"),
]


def _default_weighting() -> list[dict[str, Any]]:
    """Every family, over the ranges params.yaml documents (static and no-regret: every scheme / learner)."""
    return [
        {"family": "static"},
        {
            "family": "alternating",
            "scheme": {"choice": ["const", "sieve", "half_end"]},
            "rho": {"uniform": [1.5, 4.0]},
        },
        {
            "family": "adaloss",
            "gamma": {"loguniform": [0.01, 0.3]},
            "momentum": {"uniform": [0.8, 0.99]},
            "update_period": {"choice": [1, 10, 100]},
            "final_extra": {"uniform": [0.0, 1.0]},
        },
        {
            "family": "noregret",
            "gamma": {"uniform": [0.1, 0.5]},
            "rho_last": {"uniform": [0.5, 1.0]},
            "momentum": {"uniform": [0.8, 0.99]},
        },
    ]


class SpaceParams(_Section):
    """The searched part of ``train``: one weighting candidate per trial, plus the optimiser's settings."""

    weighting: list[Candidate] = Field(default_factory=_default_weighting, min_length=1)
    optimizer: dict[str, Dimension] = Field(
        default_factory=lambda: {
            "lr": {"loguniform": [0.01, 0.5]},
            "weight_decay": {"loguniform": [1e-5, 1e-3]},
        }
    )

    @model_validator(mode="after")
    def _optimizer_legal_everywhere(self) -> SpaceParams:
        allowed = sorted(OptimizerParams.model_fields)
        for key, dim in self.optimizer.items():
            if key not in allowed:
                raise ValueError(f"optimizer.{key} is not an optimiser setting: allowed are {allowed}")
            for value in extremes(dim):
                try:
                    OptimizerParams.model_validate({key: value})
                except ValidationError as exc:
                    raise ValueError(f"optimizer.{key} = {value!r}: {exc.errors()[0]['msg']}") from None
        return self


class SchedulerParams(_Section):
    """Early stopping of poor trials, measured in epochs (every trial reports once per epoch).

    ``halving`` (synchronous successive halving) and ``fifo`` (none) decide the same on every run; ``asha``
    and ``median`` decide as trials report, so their result depends on timing (pipelines/tuning/halving.py).
    """

    name: Literal["halving", "asha", "median", "fifo"] = "halving"
    grace_period: PositiveInt = 1  # epochs a trial runs before it may be stopped
    reduction_factor: float = Field(default=2.0, gt=1.0)  # halving, asha: keep the best 1/factor per rung
    min_samples_required: PositiveInt = 3  # median: trials needed before the median rule applies


MAX_TRIALS = 1000  # tune.num_samples: far beyond a useful search; a typo (8000000) fails at load


class TuneParams(_Section):
    member: str = "last"  # which train member's network is tuned ("last" = the deepest)
    epochs: PositiveInt = 4  # per trial (ASHA's max_t); the schedule is stretched over these
    objective: Literal["val_auc", "val_top1"] = "val_auc"  # validation split, trained heads (METHOD.md §6)
    milestone: MilestoneFraction = (
        1  # val_top1 objective: error of the head at this fraction of the final cost
    )
    search_alg: Literal["random", "grid"] = "random"
    # random: trials; grid: trials per weighting candidate (x optimizer grids); at most MAX_TRIALS
    num_samples: PositiveInt = Field(default=8, le=MAX_TRIALS)
    max_concurrent_trials: PositiveInt | None = 2  # null: as many as the cluster fits
    seed: NonNegativeInt = 0  # the search's random state (each trial trains with train.seed)
    scheduler: SchedulerParams = Field(default_factory=SchedulerParams)
    scaling: ScalingParams = Field(default_factory=lambda: {"cpus_per_worker": 1.0})
    driver_cpus: NonNegativeFloat = 0.0  # the Tune function only waits on its Train run
    driver_memory_mb: NonNegativeInt = 128
    max_failures: int = Field(default=1, ge=-1)  # worker-group retries in a trial (resume from its epoch)
    trial_max_failures: int = Field(default=0, ge=-1)  # Tune re-runs of a failed trial
    storage_path: str = "ray_results/tune"  # Tune + Train state: the resume point of a killed run
    name: str = Field(default="tune", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    space: SpaceParams = Field(default_factory=SpaceParams)

    @model_validator(mode="after")
    def _driver_requests_something(self) -> TuneParams:
        if self.driver_cpus == 0 and self.driver_memory_mb == 0:
            raise ValueError("driver_cpus and driver_memory_mb are both 0: Ray needs a non-empty request")
        return self
