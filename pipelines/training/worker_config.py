"""The resolved config of one training run: what a Ray Train worker receives, typed and checked on the driver.

Built by :func:`pipelines.training.run_plan.run_config` from validated params (nothing from params.yaml is
left to resolve); it crosses into Ray as a plain dict (``TorchTrainer(train_loop_config=...)``) and the worker
validates it back, so both ends read attributes, never string keys. ``model``, ``weighting``, ``optimizer``
and ``schedule`` are keyword arguments of the library functions that check them (``create_model``,
``create_strategy``, ``make_optimizer``, ``make_scheduler``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, NonNegativeInt, PositiveInt


class WorkerConfig(BaseModel, frozen=True, extra="forbid"):
    """One run (an EANN member, an OPT baseline or a tune trial) as its workers train it."""

    name: str  # the run's name: "m0", "m2-opt8", ...
    model: dict[str, Any]  # create_model(**model)
    weighting: dict[str, Any]  # {"strategy": registry name, **hyperparameters}: create_strategy's kwargs
    optimizer: dict[str, Any]  # make_optimizer's kwargs, lr already scaled to the run's global batch
    schedule: dict[str, Any]  # make_scheduler's kwargs (the learning-rate schedule)
    epochs: PositiveInt
    batch_size: PositiveInt  # per device
    sync_batchnorm: bool
    eval_batch_size: PositiveInt
    amp: bool  # with use_gpu: the precision trained in (AMP runs on CUDA only)
    compile: bool
    deterministic: bool
    seed: NonNegativeInt
    use_gpu: bool  # other kernels: a CPU run's checkpoint is not resumed on GPUs
    num_workers: PositiveInt
    loader_workers: NonNegativeInt
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt]  # (C, H, W)
    shards: str
    endpoint_url: str | None = None
    resume_from: str | None = (
        None  # a set-aside run's last intact checkpoint (pipelines.training.checkpoints)
    )
    final_outputs: bool = False  # the train stage: the last epoch's checkpoint also holds the run outputs
