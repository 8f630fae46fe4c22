"""Which networks the train stage trains: EANN members and OPT baselines, each as one resolved config.

A run's config is a :class:`.worker_config.WorkerConfig` (what :func:`.train_worker.train_loop_per_worker`
receives); its fingerprint hashes everything that changes the trained weights (config, data manifest, training
code), so the stage re-trains exactly the runs whose fingerprint differs from the one in their outputs'
record (``anytime.record``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from anytime.budget import footprint, meta_model
from anytime.flops import head_costs
from anytime.integrity import CorruptFileError, verify_checksums
from anytime.metrics import milestone_heads
from anytime.record import read_record
from anytime.train import scaled_lr
from pipelines.config.train import (
    MILESTONE_KEYS,
    MemberParams,
    ModelParams,
    ResANNParams,
    ScalingParams,
    TrainParams,
    WeightingParams,
)
from pipelines.paths import MEMBERS_DIR, OPT_DIR, PROJECT_ROOT, opt_run_name, shards_dir
from pipelines.training.worker_config import WorkerConfig

# Code whose change changes trained weights: the workers' import closure, in the train and tune stages' deps
# (tests/test_dvc_deps.py checks both).
TRAINING_CODE = (
    "anytime/__init__.py",
    "anytime/models",
    "anytime/weighting",
    "anytime/data",
    "anytime/train.py",
    "anytime/flops.py",
    "anytime/integrity.py",
    "anytime/metrics.py",
    "pipelines/__init__.py",
    "pipelines/training/__init__.py",
    "pipelines/training/process_group.py",
    "pipelines/training/train_worker.py",
    "pipelines/training/worker_config.py",
    "anytime/record.py",
)
# Config keys that change where or how fast a run goes, not what it learns.
NOT_FINGERPRINTED = (
    "shards",
    "endpoint_url",
    "eval_batch_size",
    "loader_workers",
    "final_outputs",
    "resume_from",
)


@dataclass(frozen=True)
class PlannedRun:
    """One network to train: a member (``kind="member"``) or an OPT(j) baseline (``kind="opt"``)."""

    name: str
    kind: str
    config: WorkerConfig
    fingerprint: str
    scaling: ScalingParams = field(default_factory=ScalingParams)  # its Ray Train workers

    @property
    def out_dir(self) -> Path:
        return (MEMBERS_DIR if self.kind == "member" else OPT_DIR) / self.name

    @property
    def ray_name(self) -> str:
        """Ray run name: a changed config never resumes an old run's checkpoint, a killed one always does."""
        return f"{self.name}-{self.fingerprint[:12]}"

    def is_current(self) -> bool:
        """Whether the outputs hold a readable record of this very fingerprint (an old format is not) and
        are intact (see :meth:`damage`)."""
        return self.fingerprint_matches() and self.damage() is None

    def fingerprint_matches(self) -> bool:
        try:
            return read_record(self.out_dir).fingerprint == self.fingerprint
        except (OSError, ValueError):
            return False

    def damage(self) -> str | None:
        """The first output file that does not match the checksums written with it, in one line (None:
        every file intact)."""
        try:
            verify_checksums(self.out_dir)
        except CorruptFileError as exc:
            return str(exc)
        return None


def code_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the training code's Python files (path + content) as imported, in a stable order."""
    digest = hashlib.sha256()
    for entry in TRAINING_CODE:
        base = root / entry
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(config: dict[str, Any], manifest: dict[str, Any], code: str) -> str:
    """sha256 of what changes the trained weights: ``config`` (a ``WorkerConfig`` dumped as JSON, less
    :data:`NOT_FINGERPRINTED`), the data manifest and the training code's digest."""
    relevant = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"config": relevant, "manifest": manifest, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _model_config(model: ModelParams, n: int | None, manifest: dict[str, Any]) -> dict[str, Any]:
    config = model.model_dump()
    if isinstance(model, ResANNParams):
        if n is None:
            raise ValueError(f"model {model.name} needs n (units per group) for every member")
        config["n"] = n
    config["num_classes"] = int(manifest["num_classes"])
    config["in_channels"] = int(manifest["image_shape"][2])
    return config


def _weighting_config(weighting: WeightingParams, *, seed: int, eann: bool) -> dict[str, Any]:
    """The strategy's kwargs: ``seed`` where it takes one; ``eann`` as asked (the schema checks it may)."""
    hparams = weighting.hparams()
    if weighting.takes("seed"):
        hparams["seed"] = seed
    if eann:
        hparams["eann"] = True
    return {"strategy": weighting.strategy, **hparams}


def sgd_config(params: TrainParams, scaling: ScalingParams) -> dict[str, Any]:
    """``make_optimizer``'s kwargs, the rate scaled from ``reference_batch`` to the run's global batch."""
    sgd = params.optimizer.model_dump(exclude={"reference_batch"})
    global_batch = params.batch_size * scaling.num_workers
    return sgd | {"lr": scaled_lr(sgd["lr"], global_batch, params.optimizer.reference_batch)}


def run_scaling(params: TrainParams, entry: MemberParams) -> ScalingParams:
    """A member's workers: its own ``scaling`` where it sets one, else the shared ``train.scaling``."""
    return entry.scaling or params.scaling


def opt_scaling(params: TrainParams, entry: MemberParams) -> ScalingParams:
    """The OPT baselines' workers: ``train.opt.scaling`` where set, else those of their member."""
    return params.opt.scaling or run_scaling(params, entry)


def worker_keys(params: TrainParams, scaling: ScalingParams) -> dict[str, Any]:
    """The config keys that follow a run's workers: the device, how many, the rate for their global batch."""
    return {
        "optimizer": sgd_config(params, scaling),
        "use_gpu": scaling.use_gpu,  # other kernels: a CPU run's checkpoint is not resumed on GPUs
        "num_workers": scaling.num_workers,
        "loader_workers": scaling.loader_workers,
    }


def resolve_shards(params: TrainParams, dataset: str) -> str:
    """Shard location: ``train.shards`` (e.g. an s3:// URI on a cluster) or the shard stage's output."""
    if params.shards is not None:
        return params.shards
    return str(shards_dir(dataset).resolve())


def run_config(
    params: TrainParams,
    entry: MemberParams,
    manifest: dict[str, Any],
    *,
    shards: str,
    endpoint_url: str | None,
) -> WorkerConfig:
    """The resolved config of one member: what ``train_loop_per_worker`` needs, nothing from params left."""
    seed = entry.seed if entry.seed is not None else params.seed
    height, width, channels = manifest["image_shape"]
    return WorkerConfig(
        name=entry.name,
        model=_model_config(entry.model or params.model, entry.n, manifest),
        weighting=_weighting_config(entry.weighting or params.weighting, seed=seed, eann=entry.eann_weights),
        schedule=params.schedule.model_dump(),
        epochs=entry.epochs or params.epochs,
        batch_size=params.batch_size,
        sync_batchnorm=params.sync_batchnorm,
        eval_batch_size=params.eval_batch_size,
        amp=params.amp,
        compile=params.compile,
        deterministic=params.deterministic,
        seed=seed,
        input_shape=(int(channels), int(height), int(width)),
        shards=shards,
        endpoint_url=endpoint_url,
        **worker_keys(params, run_scaling(params, entry)),
    )


def opt_config(params: TrainParams, entry: MemberParams, member: WorkerConfig, j: int) -> WorkerConfig:
    """OPT(j): the member's backbone truncated after head j, trained on head j alone (METHOD.md §6), on
    :func:`opt_scaling`'s workers."""
    return member.model_copy(
        update={
            "name": opt_run_name(member.name, j),
            "model": {**member.model, "truncate_at": j},
            "weighting": {"strategy": "opt", "j": j},
            **worker_keys(params, opt_scaling(params, entry)),
        }
    )


def opt_heads(member: WorkerConfig, milestones: list[float]) -> list[int]:
    """Distinct milestone heads of a member (measured FLOPs), in increasing order."""
    costs = head_costs(meta_model(member.model), member.input_shape)
    heads = milestone_heads(costs)
    headless = [m for m in milestones if heads[MILESTONE_KEYS[m]] is None]
    if headless:
        raise ValueError(
            f"train.opt.milestones {headless} select no head of member {member.name} (its first head "
            f"costs {costs[0] / costs[-1]:.2f} of the last): drop them or choose a deeper member"
        )
    return sorted({heads[MILESTONE_KEYS[m]] for m in milestones})


def worker_memory(scaling: ScalingParams) -> int:
    """Bytes one worker may use: ``scaling.memory_per_worker_mb``, else this machine's memory."""
    if scaling.memory_per_worker_mb is not None:
        return scaling.memory_per_worker_mb << 20
    return psutil.virtual_memory().total


def require_fits(member: WorkerConfig, scaling: ScalingParams, section: str = "train") -> None:
    """Refuse, with the numbers, a member one worker cannot train: estimated from its config on the meta
    device (:func:`anytime.budget.footprint`), before any network is built for real."""
    cost = footprint(member.model, member.input_shape)
    batch = member.batch_size  # per device
    need = cost.train_bytes(batch)
    have = worker_memory(scaling)
    if need > have:
        key = f"{section}.scaling.memory_per_worker_mb"
        limit = "" if scaling.memory_per_worker_mb is None else f"{key} allows "
        raise ValueError(
            f"{section}: member {member.name} cannot fit: {cost.params:.3g} parameters and "
            f"{cost.activations_per_sample:.3g} activations per sample x {batch} samples per worker need at "
            f"least {need / 2**30:.3g} GiB per worker ({cost.step_flops(batch):.3g} FLOPs per step), "
            f"{limit or 'this machine has '}{have / 2**30:.3g} GiB: shrink the model, its depth or batch_size"
        )


def plan_runs(
    params: TrainParams,
    manifest: dict[str, Any],
    *,
    shards: str,
    endpoint_url: str | None = None,
    code: str | None = None,
) -> list[PlannedRun]:
    """Every member, then every OPT baseline, each with its fingerprint."""
    code = code if code is not None else code_digest()
    entries = {e.name: e for e in params.member_entries()}
    configs = {
        name: run_config(params, e, manifest, shards=shards, endpoint_url=endpoint_url)
        for name, e in entries.items()
    }
    for name, config in configs.items():
        require_fits(config, run_scaling(params, entries[name]))

    def planned(kind: str, config: WorkerConfig, scaling: ScalingParams) -> PlannedRun:
        digest = fingerprint(config.model_dump(mode="json"), manifest, code)
        return PlannedRun(config.name, kind, config, digest, scaling)

    runs = [planned("member", cfg, run_scaling(params, entries[n])) for n, cfg in configs.items()]
    for wanted in dict.fromkeys(params.opt.members):
        name = list(entries)[-1] if wanted == "last" else wanted
        if name not in configs:
            raise ValueError(f"train.opt.members: {wanted!r} is not a member (members: {', '.join(configs)})")
        scaling = opt_scaling(params, entries[name])
        for j in opt_heads(configs[name], list(params.opt.milestones)):
            runs.append(planned("opt", opt_config(params, entries[name], configs[name], j), scaling))
    return list({run.name: run for run in runs}.values())
