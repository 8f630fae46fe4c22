"""Training one anytime network on Ray Train (V2): the worker loop and the ``TorchTrainer`` that runs it.

Shared by the train stage (EANN members, OPT baselines) and the tune stage. Everything the worker needs is
in its :class:`.worker_config.WorkerConfig` (see :func:`.run_plan.run_config`); the model, loop, weighting,
checkpoint and run-output formats all come from ``anytime``. Every epoch ends with a checkpoint, so a retried
worker group (``FailureConfig(max_failures)``) or a re-run with the same ``RunConfig(name, storage_path)``
resumes after the last finished epoch instead of starting over.

The checkpoint also carries the run's per-epoch record (:data:`EPOCH_RECORD` of every epoch so far), and each
report repeats it as ``history``: a driver killed between an epoch's checkpoint and its log line, then re-run,
still logs that epoch, and its log always matches the checkpoints the run resumed from.

Fault injection (for tests and fire drills): with ``ANYTIME_FAULT_EPOCH=e`` and ``ANYTIME_FAULT_MARKER=path``
in the workers' environment, the first worker to reach epoch ``e`` (of the run named
``ANYTIME_FAULT_RUN``, if set) creates ``path`` and raises; the marker makes it fire once only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer
from torch.optim.lr_scheduler import LRScheduler

from anytime.data import ShardDataset, ShardLoader
from anytime.flops import head_costs
from anytime.integrity import verify_checksums, write_checksums
from anytime.metrics import anytime_auc, head_errors
from anytime.models import create_model
from anytime.record import save_network, save_predictions
from anytime.train import (
    evaluate_shared,
    load_checkpoint,
    make_grad_scaler,
    make_optimizer,
    make_scheduler,
    restore_checkpoint,
    save_checkpoint,
    seed_everything,
    train_one_epoch,
    unwrap_model,
)
from anytime.weighting import WeightingStrategy, create_strategy
from pipelines.training.process_group import NodeAddressTorchConfig
from pipelines.training.worker_config import WorkerConfig

CHECKPOINT_FILE = "checkpoint.pt"
FINAL_DIR = "final"  # in the last epoch's checkpoint: model.pt, probs/labels of val and test, FINAL_SUMMARY
FINAL_SUMMARY = "summary.json"  # what the driver needs for the run's record besides the arrays
EPOCH_RECORD = ("epoch", "val_top1", "head_losses", "time_ms")  # per epoch, in checkpoints and reports
FAULT_EPOCH_ENV, FAULT_MARKER_ENV, FAULT_RUN_ENV = (
    "ANYTIME_FAULT_EPOCH",
    "ANYTIME_FAULT_MARKER",
    "ANYTIME_FAULT_RUN",
)


class InjectedFault(RuntimeError):
    """Raised on purpose by the fault-injection hook."""


def maybe_inject_fault(run: str, epoch: int) -> None:
    """Raise once (marker file created atomically) when the fault-injection variables select this epoch."""
    wanted, marker = os.environ.get(FAULT_EPOCH_ENV), os.environ.get(FAULT_MARKER_ENV)
    if wanted is None or marker is None or int(wanted) != epoch:
        return
    if os.environ.get(FAULT_RUN_ENV, run) != run:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise InjectedFault(f"injected fault in run {run!r} at epoch {epoch} ({FAULT_EPOCH_ENV})")


def _loader(config: WorkerConfig, split: str, *, train: bool) -> ShardLoader:
    """This rank's share of ``split``, on this worker's device, normalised there (``ShardLoader``). Train:
    shuffled and augmented, ``batch_size`` per device. Eval: a contiguous range read in order by this
    process (no loader workers, whose batches would interleave), so the ranks' shares joined in rank order
    are the split in its own order whatever the scaling: every run's outputs then list the samples alike
    (``anytime.train.evaluate_shared``). The share comes from Ray Train's context, here in the training
    process: DataLoader workers never decide it."""
    context = ray.train.get_context()
    dataset = ShardDataset(
        config.shards,
        split,
        batch_size=config.batch_size if train else config.eval_batch_size,
        shuffle=train,
        seed=config.seed,
        augment=train,
        endpoint_url=config.endpoint_url,
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
    )
    workers = config.loader_workers if train else 0
    return ShardLoader(dataset, device=ray.train.torch.get_device(), workers=workers)


def _val_metrics(probs: np.ndarray, labels: np.ndarray, flops: list[int]) -> dict[str, Any]:
    top1 = head_errors(probs, labels, topk=(1,))["top1"]
    return {"val_top1": top1, "val_top1_final": top1[-1], "val_auc": anytime_auc(flops, top1)}


Evaluated = tuple[np.ndarray, np.ndarray]  # probs [K, N, C], labels [N] of a whole split


def _evaluate(state: WorkerState, config: WorkerConfig, loader: ShardLoader) -> Evaluated:
    """Every rank: its share of a split evaluated, all shares gathered (rank 0's network throughout)."""
    return evaluate_shared(
        unwrap_model(state.model), loader, device=ray.train.torch.get_device(), amp=config.amp
    )


def _write_final(
    directory: Path, model: torch.nn.Module, config: WorkerConfig, val: Evaluated, test: Evaluated, flops
) -> None:
    """The run outputs (``anytime.record``) but the record, which the driver writes from them."""
    final = directory / FINAL_DIR
    final.mkdir()
    net = unwrap_model(model)
    save_network(final, net)
    for split, (probs, labels) in (("val", val), ("test", test)):
        save_predictions(final, split, probs, labels)
    summary = {"model": net.config, "flops": flops, "head_units": list(net.head_units)}
    (final / FINAL_SUMMARY).write_text(json.dumps(summary))


@dataclass
class WorkerState:
    """What a worker trains and checkpoints: the network, its head costs and everything that steps with it."""

    model: torch.nn.Module
    flops: list[int]
    strategy: WeightingStrategy
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]] = field(default_factory=list)  # EPOCH_RECORD of each finished epoch

    @classmethod
    def build(cls, config: WorkerConfig, device: torch.device) -> WorkerState:
        """Everything from ``anytime``, in a fixed order (the seeded RNG draws the same weights each time).

        The network moves to ``device`` before the optimiser exists: a restored optimiser state then lands
        on its parameters' device (``Optimizer.load_state_dict`` casts to it), where moving the network
        after a restore (as ``prepare_model`` would) leaves the momentum buffers behind on the CPU.
        """
        model = create_model(**config.model)
        flops = head_costs(model, config.input_shape)
        model.to(device)
        weighting = dict(config.weighting)
        strategy = create_strategy(weighting.pop("strategy"), num_heads=model.num_heads, **weighting)
        optimizer = make_optimizer(model, **config.optimizer)
        scheduler = make_scheduler(optimizer, epochs=config.epochs, **config.schedule)
        return cls(model, flops, strategy, optimizer, scheduler, make_grad_scaler(device, amp=config.amp))

    def parts(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "strategy": self.strategy,
            "scaler": self.scaler,
        }

    def resume(self, resume_from: str | None = None) -> int:
        """The epoch to start at: after the last checkpointed one when Ray hands a checkpoint over (else
        ``resume_from``, the last intact one of a run set aside: :mod:`.checkpoints`), else 0."""
        restored = ray.train.get_checkpoint() or (Checkpoint(resume_from) if resume_from else None)
        if restored is None:
            return 0
        with restored.as_directory() as directory:
            verify_checksums(directory)
            return self.restore(load_checkpoint(Path(directory) / CHECKPOINT_FILE))

    def restore(self, checkpoint: dict[str, Any]) -> int:
        """Load a checkpoint (any device) into the built state; returns the epoch to start at."""
        self.history = list(checkpoint["extra"].get("history", []))
        return restore_checkpoint(checkpoint, **self.parts())

    def save(self, path: Path, epoch: int) -> None:
        save_checkpoint(path, **self.parts(), epoch=epoch, extra={"history": self.history})


def batchnorm_across_ranks(model: torch.nn.Module, config: WorkerConfig, world_size: int) -> torch.nn.Module:
    """With ``sync_batchnorm`` and several ranks, BatchNorm statistics over every rank's batch. The converted
    layers keep the same parameter and buffer objects: the optimiser and the checkpoint keys are unchanged."""
    if not config.sync_batchnorm or world_size < 2:
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def train_loop_per_worker(raw_config: dict[str, Any]) -> None:
    """Ray Train worker: build with ``anytime``, resume from the last checkpoint, train/evaluate/report."""
    config = WorkerConfig.model_validate(raw_config)  # a dict through Ray (its contract), typed again here
    rank, run = ray.train.get_context().get_world_rank(), config.name
    seed_everything(config.seed + rank, deterministic=config.deterministic)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    device = ray.train.torch.get_device()
    state = WorkerState.build(config, device)
    start = state.resume(config.resume_from)
    state.model = batchnorm_across_ranks(state.model, config, ray.train.get_context().get_world_size())
    if config.compile:
        state.model.compile()  # in place: state_dict keys, checkpoints and iter_heads stay the eager ones
    state.model = ray.train.torch.prepare_model(state.model)
    train_data, val_data = _loader(config, "train", train=True), _loader(config, "val", train=False)
    for epoch in range(start, config.epochs):
        train_data.dataset.set_epoch(epoch)
        maybe_inject_fault(run, epoch)
        stats = train_one_epoch(
            state.model,
            train_data,
            state.optimizer,
            state.strategy,
            device=device,
            epoch=epoch,
            scheduler=state.scheduler,
            scaler=state.scaler,
            amp=config.amp,
            progress=False,
        )
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "loss": stats["loss"],
            "head_losses": stats["head_losses"],
            "node_id": _node_id(),
        }
        val = _evaluate(state, config, val_data)  # every rank its share
        final = epoch == config.epochs - 1 and config.final_outputs
        test = _evaluate(state, config, _loader(config, "test", train=False)) if final else None
        if rank == 0:
            _report_validated(state, config, epoch, metrics, val, test)
        else:
            ray.train.report(metrics, checkpoint=None)


def _node_id() -> str | None:
    """The Ray node this worker trains on (multi-node runs report it); None in Train's local mode, which
    runs without a Ray runtime (asking for one would start it)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _report_validated(
    state: WorkerState,
    config: WorkerConfig,
    epoch: int,
    metrics: dict[str, Any],
    val: Evaluated,
    test: Evaluated | None,
) -> None:
    """Rank 0: checkpoint the validated epoch (the last one with the final outputs, given ``test``) and
    report both."""
    metrics |= _val_metrics(*val, state.flops)
    metrics |= {"time_ms": int(time.time() * 1000), "history": state.history}
    state.history = [*state.history, {key: metrics[key] for key in EPOCH_RECORD}]
    # Ray deletes this directory once persisted to storage (local mode keeps it: nothing to upload).
    directory = Path(tempfile.mkdtemp(prefix=f"anytime-{config.name}-"))
    state.save(directory / CHECKPOINT_FILE, epoch)
    if test is not None:
        _write_final(directory, state.model, config, val, test, state.flops)
    write_checksums(directory)
    checkpoint = Checkpoint.from_directory(str(directory))
    ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=True)


def build_trainer(
    config: WorkerConfig,
    *,
    name: str,
    storage_path: str,
    scaling: ScalingConfig,
    max_failures: int,
    callbacks: list[UserCallback] | None = None,
) -> TorchTrainer:
    """One member's ``TorchTrainer``; reusing ``name`` + ``storage_path`` resumes that run's checkpoints."""
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config.model_dump(),
        scaling_config=scaling,
        torch_config=NodeAddressTorchConfig(),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
