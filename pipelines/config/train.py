"""The ``train`` section of params.yaml: the EANN members, their model, weighting, optimiser and Ray scaling.

Members are either generated (``eann``: ``n = n0 * base**k`` units per group, k = 0..members-1) or listed
explicitly (``members``), each entry able to override the shared model/weighting/epochs/seed, so editing one
entry re-trains only that member. Names (strategies, schemes, models, milestones) and the hyperparameters each
strategy takes come from the library's registries, so a wrong one fails here, before any work.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from anytime.metrics import MILESTONES
from anytime.models import list_models
from anytime.models.resann_imagenet import LAYOUTS
from anytime.train import MIN_BN_BATCH, SCHEDULERS, make_optimizer, make_scheduler
from anytime.weighting import (
    NORMALISATIONS,
    SCHEMES,
    create_strategy,
    list_strategies,
    strategy_hparams,
    takes_eann_weights,
)
from pipelines.paths import member_name

# Literals built from the library's registries: an error names the key, the value and what is allowed.
StrategyName = Literal[tuple(list_strategies())]
SchemeName = Literal[SCHEMES]
Normalisation = Literal[NORMALISATIONS]
BottleneckName = Literal[tuple(list_models("resann[0-9]*"))]
# anytime.metrics.MILESTONES as YAML writes them (0.25, ..., 1), and back to the library's keys.
MilestoneFraction = Literal[tuple(int(f) if f.denominator == 1 else float(f) for f in MILESTONES.values())]
MILESTONE_KEYS = {float(fraction): key for key, fraction in MILESTONES.items()}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_HEADS = (
    4096  # far beyond any trainable member; keeps a typo like eann.members: 300 from hanging the check
)

MAX_MEMBERS = 64  # eann.members and an explicit members list: an EANN of more is no use (METHOD.md §6)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResANNParams(_Section):
    """ResANN for small images (METHOD.md §1); ``n`` comes from the member."""

    name: Literal["resann"] = "resann"
    c: PositiveInt = 16
    period: PositiveInt = 1
    shortcut: Literal["pad", "projection"] = "pad"

    def num_units(self, n: int) -> int:
        return 3 * n  # three groups of n units


class BottleneckParams(_Section):
    """Bottleneck ResANN for ImageNet-size images; the depth is in the name, so members need no ``n``."""

    name: BottleneckName
    width: PositiveInt = 64
    period: PositiveInt = 2

    def num_units(self, n: int | None) -> int:
        return sum(LAYOUTS[int(self.name.removeprefix("resann"))])


ModelParams = Annotated[ResANNParams | BottleneckParams, Field(discriminator="name")]


class WeightingParams(_Section):
    """A strategy of ``anytime.weighting`` and its hyperparameters (unset = the library default)."""

    strategy: StrategyName = "sieve"
    normalisation: Normalisation | None = None
    scheme: SchemeName | None = None
    rho: PositiveFloat | None = None
    gamma: float | None = None
    momentum: float | None = None
    update_period: PositiveInt | None = None
    final_extra: float | None = None
    rho_last: float | None = None

    def hparams(self) -> dict[str, Any]:
        return self.model_dump(exclude={"strategy"}, exclude_none=True)

    def takes(self, hparam: str) -> bool:
        """Whether the library's strategy accepts ``hparam`` (e.g. ``seed``)."""
        return hparam in strategy_hparams(self.strategy)

    @model_validator(mode="after")
    def _known_to_library(self) -> WeightingParams:
        create_strategy(self.strategy, num_heads=4, **self.hparams())  # ValueError names the bad one
        return self


def library_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a library function: the one source of the schema's defaults for its kwargs."""
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not p.empty
    }


OPTIMIZER_DEFAULTS = library_defaults(make_optimizer)
SCHEDULE_DEFAULTS = library_defaults(make_scheduler)


class OptimizerParams(_Section):
    """SGD (``anytime.train.make_optimizer``, whose signature gives the defaults); ``lr`` is the rate at a
    global batch of ``reference_batch``, scaled linearly to the run's global batch
    (``anytime.train.scaled_lr``)."""

    lr: PositiveFloat = OPTIMIZER_DEFAULTS["lr"]
    reference_batch: PositiveInt = 64
    momentum: float = Field(default=OPTIMIZER_DEFAULTS["momentum"], ge=0.0, lt=1.0)
    weight_decay: float = Field(default=OPTIMIZER_DEFAULTS["weight_decay"], ge=0.0)
    nesterov: bool = OPTIMIZER_DEFAULTS["nesterov"]
    decay_norm_and_bias: bool = OPTIMIZER_DEFAULTS["decay_norm_and_bias"]


class ScheduleParams(_Section):
    """Per-epoch learning-rate schedule (``anytime.train.make_scheduler``, its signature the defaults)."""

    name: Literal[SCHEDULERS] = SCHEDULE_DEFAULTS["name"]
    milestones: list[PositiveInt] | None = SCHEDULE_DEFAULTS["milestones"]
    gamma: float = Field(default=SCHEDULE_DEFAULTS["gamma"], gt=0.0, le=1.0)

    def check_epochs(self, epochs: int, epochs_key: str) -> None:
        """Step milestones must be strictly increasing epochs in ``1..epochs`` (``epochs_key`` names it)."""
        if self.milestones is None:
            return
        if self.name != "step":
            raise ValueError(f"train.schedule.milestones apply to name: step only, not {self.name}")
        if self.milestones != sorted(set(self.milestones)) or max(self.milestones, default=0) > epochs:
            raise ValueError(
                f"train.schedule.milestones = {self.milestones}: must be strictly increasing epochs "
                f"in 1..{epochs} ({epochs_key})"
            )


# The rule behind ScalingParams' null defaults (docs/cluster.md, "Feeding the GPU"). On CPU the training
# process shares the cores with the other members' (a quarter each) and reads its own data: loader processes
# would only compete with it. Beside a GPU the training process needs a core of its own to launch kernels, and
# loader processes read ahead while the GPU computes: one delivers >= 100k 32x32 images/s (bench/RESULTS.md),
# over 10x what a GPU trains ResANN at; the second keeps that margin for larger images. Each loader process
# reads continuously, so it is counted as a whole CPU.
TRAIN_CPUS = {"cpu": 0.25, "gpu": 1.0}
LOADER_WORKERS = {"cpu": 0, "gpu": 2}


class ScalingParams(_Section):
    """Ray Train workers of ONE member; members run side by side, so keep CPUs per worker small.

    ``loader_workers`` and ``cpus_per_worker`` left null follow one rule (:data:`TRAIN_CPUS`,
    :data:`LOADER_WORKERS`): no loader processes on CPU and 2 with a GPU, and CPUs per worker = the training
    process's share (0.25 on CPU, 1 with a GPU) + 1 per loader process. They hold numbers once validated.
    """

    num_workers: PositiveInt = 1
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat | None = None
    gpus_per_worker: PositiveFloat | None = None
    loader_workers: NonNegativeInt | None = None
    # Memory one worker may use (Ray schedules by it); null: the driver machine's. A member whose estimated
    # training footprint exceeds it is refused before training (pipelines.training.run_plan.require_fits).
    memory_per_worker_mb: PositiveInt | None = None
    # How long to wait for nodes that could host a worker (an autoscaling cluster adding them); 0 = refuse
    # a request no live node can satisfy at once (docs/cluster.md).
    wait_for_resources_s: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _one_gpu_per_rank(self) -> ScalingParams:
        """NCCL refuses two ranks of one process group on one GPU ("Duplicate GPU"): a fraction of a GPU
        only suits a run of one worker (several such runs then share the GPU)."""
        gpus = self.gpus_per_worker
        if self.use_gpu and gpus is not None and gpus < 1 and self.num_workers > 1:
            raise ValueError(
                f"scaling.gpus_per_worker = {gpus} with num_workers = {self.num_workers}: NCCL runs no two "
                "ranks of a run on one GPU; allowed: gpus_per_worker >= 1, or num_workers: 1 for a fraction"
            )
        return self

    @model_validator(mode="after")
    def _size_from_loader_workers(self) -> ScalingParams:
        device = "gpu" if self.use_gpu else "cpu"
        if self.loader_workers is None:
            self.loader_workers = LOADER_WORKERS[device]
        if self.cpus_per_worker is None:
            self.cpus_per_worker = TRAIN_CPUS[device] + self.loader_workers
        return self


class EannParams(_Section):
    """Generated members: ``members`` ANNs with ``n0 * base**k`` units per group, named m0, m1, ..."""

    base: int = Field(default=2, ge=2)
    members: PositiveInt = Field(default=3, le=MAX_MEMBERS)
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
    scaling: ScalingParams | None = None  # this member's workers (default: train.scaling)


class OptBaselineParams(_Section):
    """OPT(j) networks (METHOD.md §6) at the milestone heads of the named members (``last`` = the deepest)."""

    members: list[str] = Field(default_factory=lambda: ["last"])
    milestones: list[MilestoneFraction] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1])
    scaling: ScalingParams | None = None  # the baselines' workers (default: their member's)


class TrainParams(_Section):
    shards: str | None = None
    storage_path: str = "ray_results"
    eann: EannParams | None = Field(default_factory=EannParams)
    members: list[MemberParams] | None = Field(default=None, max_length=MAX_MEMBERS)
    model: ModelParams = Field(default_factory=ResANNParams)
    weighting: WeightingParams = Field(default_factory=WeightingParams, validate_default=True)
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    epochs: PositiveInt = 8
    batch_size: PositiveInt = 64  # per device (Ray Train worker); the global batch is this x num_workers
    sync_batchnorm: bool = False  # BatchNorm statistics over every worker's batch (multi-GPU only)
    eval_batch_size: PositiveInt = 512
    amp: bool = True
    compile: bool = False
    # GPU kernels: false = cuDNN autotunes (fastest, as bench/ measures); true = reproducible bit for bit
    deterministic: bool = False
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

    @field_validator("weighting")
    @classmethod
    def _eann_weights_usable(cls, weighting: WeightingParams, info: ValidationInfo) -> WeightingParams:
        """EANN weights zero a member's first heads: a strategy that cannot do so is an error, not ignored."""
        eann, members = info.data.get("eann"), info.data.get("members")
        if members is not None:
            asked = [(f"members.{m.name}.eann_weights", m.weighting) for m in members if m.eann_weights]
        elif eann is not None and eann.eann_weights and eann.members > 1:
            asked = [("eann.eann_weights", None)]
        else:
            asked = []
        for key, own in asked:
            strategy = own or weighting
            if not takes_eann_weights(strategy.strategy):
                raise ValueError(
                    f"{key} is true but strategy '{strategy.strategy}' takes no EANN weights (it takes "
                    f"{', '.join(strategy_hparams(strategy.strategy))}): set {key} to false or pick another"
                )
        return weighting

    @model_validator(mode="after")
    def _batch_fits_batchnorm(self) -> TrainParams:
        """BatchNorm needs MIN_BN_BATCH samples per statistic: a device's batch, or with sync_batchnorm all
        workers' together (which only CUDA ranks can share: torch syncs BN over NCCL alone)."""
        for key, scaling in self.run_scalings():
            workers = scaling.num_workers
            if self.sync_batchnorm and workers > 1 and not scaling.use_gpu:
                raise ValueError(
                    f"train.sync_batchnorm = true with {key}.num_workers > 1 needs {key}.use_gpu: true "
                    "(SyncBatchNorm runs on GPUs only); allowed: false on CPU workers"
                )
            statistics = self.batch_size * (workers if self.sync_batchnorm else 1)
            if statistics < MIN_BN_BATCH:
                raise ValueError(
                    f"train.batch_size = {self.batch_size}: BatchNorm would see {statistics} samples per "
                    f"device (fewer than {MIN_BN_BATCH} cost accuracy); allowed: batch_size >= {MIN_BN_BATCH}"
                    f", or sync_batchnorm: true with batch_size x {key}.num_workers >= {MIN_BN_BATCH}"
                )
        return self

    def run_scalings(self) -> list[tuple[str, ScalingParams]]:
        """Every scaling a run may use, with its key: the shared one, members' and the baselines' own."""
        own = [(f"train.members.{m.name}.scaling", m.scaling) for m in self.members or [] if m.scaling]
        opt = [("train.opt.scaling", self.opt.scaling)] if self.opt.scaling else []
        return [("train.scaling", self.scaling), *own, *opt]

    def member_entries(self) -> list[MemberParams]:
        """The members as explicit entries, in order of depth (generated ones named m0, m1, ...)."""
        if self.members is not None:
            return list(self.members)
        eann = self.eann
        assert eann is not None  # _one_member_source guarantees one member source
        return [
            MemberParams(
                name=member_name(k), n=eann.n0 * eann.base**k, eann_weights=eann.eann_weights and k > 0
            )
            for k in range(eann.members)
        ]

    def member_names(self) -> list[str]:
        """The members' names in order of depth (generated ones are m0, m1, ...)."""
        return [m.name for m in self.member_entries()]

    def _member_networks(self) -> list[tuple[str, int | None, ModelParams, WeightingParams]]:
        """(name, n, model, weighting) of every member, shared values filled in."""
        entries = self.member_entries()
        return [(m.name, m.n, m.model or self.model, m.weighting or self.weighting) for m in entries]

    @model_validator(mode="after")
    def _members_trainable(self) -> TrainParams:
        """Rules the Ray workers would otherwise enforce one failed attempt at a time."""
        if self.members == []:
            raise ValueError("train.members is empty: list at least one member, or use train.eann instead")
        for member in self.members or []:
            if isinstance(member.model or self.model, ResANNParams) and member.n is None:
                raise ValueError(f"train.members.{member.name}.n is missing: a resann member needs n >= 1")
        for name, n, model, weighting in self._member_networks():
            units = model.num_units(n)
            if model.period > units:
                raise ValueError(
                    f"train.model.period = {model.period} for member {name}: must be in 1..{units} "
                    "(its units)"
                )
            heads = -(-units // model.period)  # len(head_positions(units, period)), without the list
            if heads > MAX_HEADS:
                raise ValueError(
                    f"train: member {name} would have {heads} heads (n = {n}, period {model.period}): "
                    f"at most {MAX_HEADS}; lower eann.members/base/n0 or raise the period"
                )
            try:
                create_strategy(weighting.strategy, num_heads=heads, **weighting.hparams())
            except ValueError as exc:
                raise ValueError(
                    f"train.weighting {weighting.strategy} for member {name} ({heads} heads): {exc}"
                ) from None
        for member in self.members or []:
            if member.epochs is not None:
                self.schedule.check_epochs(member.epochs, f"train.members.{member.name}.epochs")
        self.schedule.check_epochs(self.epochs, "train.epochs")
        unknown = [m for m in self.opt.members if m != "last" and m not in self.member_names()]
        if unknown:
            raise ValueError(
                f"train.opt.members: {', '.join(map(repr, unknown))} not a member; "
                f"allowed: last, {', '.join(self.member_names())}"
            )
        return self
