"""The stages' Ray plumbing: joining a cluster, storage URIs, worker resources, and the callback that
streams reports back to the driver.

A bare ``ray.init()`` would attach to whichever ``ray start`` cluster is newest on the machine, so without
an address we ask for ``address="local"`` explicitly. Inside ``ray job submit`` Ray sets ``RAY_ADDRESS``
and we join that cluster. Token authentication (Ray >= 2.52: ``RAY_AUTH_MODE=token`` with
``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token``) is read by Ray from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from ray.train import ScalingConfig, UserCallback
from ray.util.queue import Queue

if TYPE_CHECKING:
    from pipelines.config.train import ScalingParams

# Set by Ray's job manager in the driver of a submitted job.
RAY_JOB_CONFIG_JSON_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Fault-injection variables (see pipelines.training.train_worker) travel to the workers with the job.
FORWARDED_ENV_PREFIX = "ANYTIME_FAULT_"


def connect(address: str | None = None) -> None:
    """``ray.init`` for a driver: ``address`` or ``$RAY_ADDRESS`` if given, else a new local cluster.

    The fault-injection variables, when set, travel to every worker through the job's runtime env (a job
    from ``ray job submit`` already carries its own, which Ray refuses to have repeated here).
    """
    if ray.is_initialized():
        return
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIX)}
    if RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ:
        env = {}
    kwargs = {"runtime_env": {"env_vars": env}} if env else {}
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=target, log_to_driver=True, **kwargs)


def storage_uri(path: str) -> str:
    """Ray needs an absolute path or a URI; relative paths are taken from the working directory."""
    return path if "://" in path else str(Path(path).resolve())


def scaling_config(scaling: ScalingParams) -> ScalingConfig:
    """One run's workers: small fractional CPUs by default, so several runs share a node side by side."""
    resources: dict[str, float] = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker or 1.0
    return ScalingConfig(
        num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
    )


class ReportForwarder(UserCallback):
    """Runs in a Train controller: puts rank 0's report of every epoch on the driver's queue.

    Kept in this light module so controllers unpickle it without importing the stage (dvclive, tqdm).
    """

    def __init__(self, queue: Queue, run: str) -> None:
        self.queue, self.run = queue, run

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((self.run, metrics[0]))
