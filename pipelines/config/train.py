"""The ``train`` section of params.yaml: the EANN members, their model, weighting, optimiser and Ray scaling.

Members are either generated (``eann``: ``n = n0 * base**k`` units per group, k = 0..members-1) or listed
explicitly (``members``), each entry able to override the shared model/weighting/epochs/seed, so editing one
entry re-trains only that member. Weighting hyperparameters are checked against ``anytime.weighting`` here,
so a wrong one fails before any work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from anytime.weighting import create_strategy

StrategyName = Literal[
    "const", "linear", "half_end", "sieve", "exp_lin", "alternating", "adaloss", "rwm", "exp3", "avgl"
]
SchemeName = Literal["const", "linear", "half_end", "sieve", "exp_lin"]
MilestoneFraction = Literal[0.25, 0.5, 0.75, 1]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResANNParams(_Section):
    """ResANN for small images (spec §1); ``n`` comes from the member."""

    name: Literal["resann"] = "resann"
    c: PositiveInt = 16
    period: PositiveInt = 1
    shortcut: Literal["pad", "projection"] = "pad"


class BottleneckParams(_Section):
    """Bottleneck ResANN for ImageNet-size images; the depth is in the name, so members need no ``n``."""

    name: Literal["resann26", "resann50", "resann101"]
    width: PositiveInt = 64
    period: PositiveInt = 2


ModelParams = Annotated[ResANNParams | BottleneckParams, Field(discriminator="name")]


class WeightingParams(_Section):
    """A strategy of ``anytime.weighting`` and its hyperparameters (unset = the library default)."""

    strategy: StrategyName = "sieve"
    normalisation: Literal["last", "sum", "none"] | None = None
    scheme: SchemeName | None = None
    rho: PositiveFloat | None = None
    gamma: float | None = None
    momentum: float | None = None
    update_period: PositiveInt | None = None
    final_extra: float | None = None
    rho_last: float | None = None

    def hparams(self) -> dict[str, Any]:
        return self.model_dump(exclude={"strategy"}, exclude_none=True)

    @model_validator(mode="after")
    def _known_to_library(self) -> WeightingParams:
        create_strategy(self.strategy, num_heads=4, **self.hparams())  # ValueError names the bad one
        return self


class OptimizerParams(_Section):
    """SGD (``anytime.train.make_optimizer``)."""

    lr: PositiveFloat = 0.1
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0)
    nesterov: bool = False
    decay_norm_and_bias: bool = True


class ScheduleParams(_Section):
    """Per-epoch learning-rate schedule (``anytime.train.make_scheduler``)."""

    name: Literal["step", "cosine"] = "cosine"
    milestones: list[PositiveInt] | None = None
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)


class ScalingParams(_Section):
    """Ray Train workers of ONE member; members run side by side, so keep CPUs per worker small."""

    num_workers: PositiveInt = 1
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 0.25
    gpus_per_worker: PositiveFloat | None = None
    loader_workers: NonNegativeInt = 0
    # How long to wait for nodes that could host a worker (an autoscaling cluster adding them); 0 = refuse
    # a request no live node can satisfy at once (docs/cluster.md).
    wait_for_resources_s: NonNegativeFloat = 0.0


class EannParams(_Section):
    """Generated members: ``members`` ANNs with ``n0 * base**k`` units per group, named m0, m1, ..."""

    base: int = Field(default=2, ge=2)
    members: PositiveInt = 3
    n0: PositiveInt = 1
    eann_weights: bool = True


class MemberParams(_Section):
    """One explicitly listed member; unset fields take the section's shared value."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    n: PositiveInt | None = None
    model: ModelParams | None = None
    weighting: WeightingParams | None = None
    epochs: PositiveInt | None = None
    seed: NonNegativeInt | None = None
    eann_weights: bool = False


class OptBaselineParams(_Section):
    """OPT(j) networks (spec §6) at the milestone heads of the named members (``last`` = deepest member)."""

    members: list[str] = Field(default_factory=lambda: ["last"])
    milestones: list[MilestoneFraction] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1])


class TrainParams(_Section):
    shards: str | None = None
    storage_path: str = "ray_results"
    eann: EannParams | None = Field(default_factory=EannParams)
    members: list[MemberParams] | None = None
    model: ModelParams = Field(default_factory=ResANNParams)
    weighting: WeightingParams = Field(default_factory=WeightingParams)
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 512
    amp: bool = True
    compile: bool = False
    seed: NonNegativeInt = 0
    scaling: ScalingParams = Field(default_factory=ScalingParams)
    max_failures: int = Field(default=2, ge=-1)
    opt: OptBaselineParams = Field(default_factory=OptBaselineParams)

    @model_validator(mode="after")
    def _one_member_source(self) -> TrainParams:
        if self.members is not None and self.eann is not None and "eann" in self.model_fields_set:
            raise ValueError("give either eann (generated members) or members (an explicit list), not both")
        if self.members is None and self.eann is None:
            raise ValueError("no members: give eann (generated members) or members (an explicit list)")
        if self.members is not None:
            names = [m.name for m in self.members]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"member names must be unique: {', '.join(duplicates)} repeated")
        return self
