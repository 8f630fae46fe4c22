"""The stages' Ray plumbing: joining or starting a cluster, refusing requests it cannot grant, ending
cleanly, storage URIs, worker resources, and the callback that streams reports back to the driver.

A bare ``ray.init()`` would attach to whichever ``ray start`` cluster is newest on the machine, so without
an address we ask for ``address="local"`` explicitly, and that private cluster listens on 127.0.0.1 only
(see :func:`start_loopback_cluster`). Inside ``ray job submit`` Ray sets ``RAY_ADDRESS`` and we join that
cluster. Token authentication (Ray >= 2.52: ``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN`` /
``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token``) is read by Ray from the environment.

Every fault ends in one line: an unreachable address, a worker no node can ever host (after an explicit,
default-zero wait for an autoscaler: ``scaling.wait_for_resources_s``), SIGTERM (handled like Ctrl-C).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import psutil
import ray
from ray._private import ray_constants, worker  # private: why, below
from ray.autoscaler.sdk import request_resources
from ray.train import ScalingConfig, UserCallback
from ray.util.queue import Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines import console
from pipelines.cli import UserError
from pipelines.cluster_tmp import enter_private_tmp, leave_private_tmp

# ray._private, pinned (pyproject.toml: ray <2.61) and checked by tests/test_ray_private.py: no public API
# makes a local cluster listen on 127.0.0.1 only (ray_constants.ENABLE_RAY_CLUSTER, see _stay_on_loopback) or
# lists the processes ray.init started (worker._global_node, see _started_processes).

if TYPE_CHECKING:  # the config imports torch; Train controllers unpickle this module's callback
    from pipelines.config.train import ScalingParams

# Set by Ray's job manager in the driver of a submitted job.
RAY_JOB_CONFIG_JSON_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# Fault-injection variables (see pipelines.training.train_worker) travel to the workers with the job.
FORWARDED_ENV_PREFIX = "ANYTIME_FAULT_"
# "0": Ray keeps every process of a cluster it starts on 127.0.0.1 (its OSX/Windows default).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The interface torch.distributed's gloo backend listens on for its peers (else: the host name's address).
GLOO_INTERFACE_ENV = "GLOO_SOCKET_IFNAME"
CONNECT_TIMEOUT_S = 10.0
RESOURCE_POLL_S = 2.0
# How long a private cluster's workers get to notice their raylet is gone before they are killed.
SHUTDOWN_GRACE_S = 15.0


def _runtime_env() -> dict:
    """The fault-injection variables, for every worker (a submitted job already carries its own env,
    which Ray refuses to have repeated here)."""
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIX)}
    if not env or RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ:
        return {}
    return {"runtime_env": {"env_vars": env}}


def _loopback_interface() -> str | None:
    """The name of the network interface that holds 127.0.0.1 (``lo`` on Linux, ``lo0`` on macOS)."""
    for name, addresses in psutil.net_if_addrs().items():
        if any(address.address == "127.0.0.1" for address in addresses):
            return name
    return None


def _stay_on_loopback() -> None:
    """Make this process (and the Ray processes it starts) take 127.0.0.1 as the node's address.

    Ray uses the machine's network address unless ``ENABLE_RAY_CLUSTER`` is off, a constant it reads from
    ``$RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when imported (``_node_ip_address="127.0.0.1"`` is turned back
    into the network address). Child processes inherit the variable; this process's copy of the constant
    is set too, since Ray was imported before we knew. ``tests/test_cluster_faults.py`` lists the
    listening sockets, so a Ray upgrade cannot undo this silently.
    """
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    if interface := _loopback_interface():  # gloo's connections between a run's workers
        os.environ.setdefault(GLOO_INTERFACE_ENV, interface)


def start_loopback_cluster(**init_kwargs) -> None:
    """``ray.init(address="local")`` whose processes listen on 127.0.0.1 only, in a temporary folder of
    their own (:mod:`pipelines.cluster_tmp`)."""
    _stay_on_loopback()
    enter_private_tmp()
    ray.init(address="local", **init_kwargs)


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``[ray://]host:port`` address; None for "auto" and the like."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def _on_loopback(address: str) -> bool:
    target = _host_port(address)
    return target is not None and ipaddress.ip_address(socket.gethostbyname(target[0])).is_loopback


def _check_reachable(address: str) -> None:
    """One line within seconds for a ``host:port`` nothing answers on (``ray.init`` retries for minutes)."""
    if (target := _host_port(address)) is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect(address: str | None = None) -> None:
    """``ray.init`` for a driver: ``address`` or ``$RAY_ADDRESS`` if given, else a private loopback one."""
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if target is None:
        start_loopback_cluster(log_to_driver=True, **_runtime_env())
        return
    _check_reachable(target)
    if _on_loopback(target):
        _stay_on_loopback()  # a cluster on 127.0.0.1 (infra/ray/local_cluster.py) knows its nodes by it
    ray.init(address=target, log_to_driver=True, **_runtime_env())


def _describe(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:g}" for name, value in sorted(resources.items()))


def _schedulable(node: Mapping[str, float]) -> dict[str, float]:
    """A node's resources without its ``node:<ip>`` labels and memory sizes in bytes (noise in a message)."""
    return {k: v for k, v in node.items() if not k.startswith("node:") and not k.endswith("memory")}


def _node_capacities() -> list[dict[str, float]]:
    """Total resources of every live node (what it could ever grant, busy or not)."""
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def _unmet(per_worker: Mapping[str, float], workers: int, nodes: list[dict[str, float]]) -> bool:
    """True when no node fits one worker, or all nodes together cannot fit ``workers`` of them."""
    fits = [min(node.get(k, 0.0) // v for k, v in per_worker.items() if v > 0) for node in nodes]
    return not fits or max(fits) < 1 or sum(fits) < workers


def require_resources(
    per_worker: Mapping[str, float], workers: int, *, wait_s: float = 0.0, what: str = "worker(s)"
) -> None:
    """Refuse, in one line, a request no node of the cluster can ever satisfy, before any run starts.

    An autoscaling cluster may add nodes: with ``wait_s`` > 0 we ask its autoscaler for them (Ray starts
    none without demand) and poll until they come or time runs out.
    """
    if not _unmet(per_worker, workers, _node_capacities()):
        return
    deadline = time.monotonic() + wait_s
    if wait_s > 0:
        request_resources(bundles=[dict(per_worker)] * workers)
    try:
        while _unmet(per_worker, workers, nodes := _node_capacities()):
            if time.monotonic() >= deadline:
                have = "; ".join(_describe(_schedulable(node)) for node in nodes)
                waited = f" after waiting {wait_s:g}s" if wait_s else ""
                raise UserError(
                    f"the cluster cannot run {workers} {what} of {_describe(per_worker)}{waited}: "
                    f"its nodes have [{have or 'none alive'}] (set scaling.wait_for_resources_s for an "
                    "autoscaling cluster)"
                )
            time.sleep(RESOURCE_POLL_S)
    finally:
        if wait_s > 0:
            request_resources(bundles=[])  # the runs' own requests keep the nodes from now on


def _raise_keyboard_interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _started_processes() -> list[psutil.Process]:
    """The processes of the cluster this driver started, with their workers (none when it joined one)."""
    node = worker._global_node
    infos = [info for kind in (node.all_processes.values() if node else ()) for info in kind]
    processes = []
    for info in infos:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(info.process.pid)
            processes += [process, *process.children(recursive=True)]
    return processes


def _shutdown() -> None:
    """``ray.shutdown``, then wait for a private cluster's workers to exit, killing those that hang on.

    Ray kills the processes it started but leaves their workers to notice the raylet is gone, which a
    worker busy in a training step may take a while to do, on a loaded machine longer than the driver.
    """
    started = _started_processes()
    ray.shutdown()
    _, hanging = psutil.wait_procs(started, timeout=SHUTDOWN_GRACE_S)
    for process in hanging:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(hanging, timeout=SHUTDOWN_GRACE_S)
    leave_private_tmp()


def interrupted(hint: str) -> NoReturn:
    """End an interrupted stage: disconnect (Ray then ends this job's actors and workers), hint, exit 130."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
    _shutdown()
    console.warn(f"interrupted: {hint}")
    sys.exit(130)


def require_shared_paths(paths: Mapping[str, str]) -> None:
    """On a cluster of several nodes, other nodes cannot read this machine's disk: refuse local paths."""
    nodes = len(_node_capacities())
    local = [f"{key}={value}" for key, value in paths.items() if "://" not in value]
    if nodes > 1 and local:
        raise UserError(
            f"the cluster has {nodes} nodes but local paths were given ({', '.join(local)}): "
            "use locations every node reads (s3://...)"
        )


class NodeLog:
    """Where each run reports from (train runs and tune trials alike): a line when a run moves on to another
    node after its node was lost, and on a cluster of several nodes, where each run first reports."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.nodes: dict[str, str] = {}
        self.several = len(_node_capacities()) > 1

    def report(self, run: str, result: Mapping[str, Any]) -> None:
        """Note the node of ``run``'s report; say so if it is a new one."""
        node = result.get("node_id")
        if node is None or self.nodes.get(run) == node:
            return
        line = f"{self.stage}: {run} epoch {result['epoch']} on node {node}"
        if run in self.nodes:
            console.warn(f"{line} (its node was lost)")
        elif self.several:
            console.say(line)
        self.nodes[run] = node


def _say_where(stage: str, joined: bool) -> None:
    """One line: which cluster the stage runs on, and where Ray keeps its processes' own logs."""
    node = worker._global_node
    logs = f"; Ray's own logs on this node: {node.get_logs_dir_path()}" if node else ""
    if joined:
        console.say(f"{stage}: joined the Ray cluster at {ray.get_runtime_context().gcs_address}{logs}")
    else:
        console.say(f"{stage}: started a private Ray cluster on 127.0.0.1{logs}")


@contextlib.contextmanager
def stage_session(
    stage: str,
    address: str | None,
    scalings: Sequence[ScalingParams],
    *,
    shared_paths: Mapping[str, str],
    resume_hint: str,
    trial_driver: Mapping[str, float] | None = None,
) -> Iterator[None]:
    """Connect, check the cluster can run the stage's workers (and a Tune ``trial_driver``), end on SIGTERM
    or Ctrl-C with ``resume_hint``.

    SIGTERM (``timeout``, Kubernetes, Slurm) raises KeyboardInterrupt in the main thread, like Ctrl-C.
    """
    joined = ray.is_initialized() or bool(address or os.environ.get("RAY_ADDRESS"))
    connect(address)
    _say_where(stage, joined)
    # After ray.init, which installs a SIGTERM handler of its own that aborts the driver.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        require_shared_paths(shared_paths)
        for scaling in scalings:  # each run's workers (members and baselines may each set their own)
            require_resources(
                worker_resources(scaling), scaling.num_workers, wait_s=scaling.wait_for_resources_s
            )
        if trial_driver:
            wait_s = max(scaling.wait_for_resources_s for scaling in scalings)
            require_resources(trial_driver, 1, wait_s=wait_s, what="trial driver(s)")
        yield
        _shutdown()  # now, while the stage's output still goes where it is told (pipelines.console)
    except KeyboardInterrupt:
        interrupted(resume_hint)
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_resources(scaling: ScalingParams) -> dict[str, float]:
    """What one Ray Train worker asks for (one source for the trainer and the feasibility check)."""
    resources: dict[str, float] = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker or 1.0
    if scaling.memory_per_worker_mb is not None:
        resources["memory"] = float(scaling.memory_per_worker_mb << 20)
    return resources


def storage_uri(path: str) -> str:
    """Ray needs an absolute path or a URI; relative paths are taken from the working directory."""
    return path if "://" in path else str(Path(path).resolve())


def scaling_config(scaling: ScalingParams) -> ScalingConfig:
    """One run's workers: small fractional CPUs by default, so several runs share a node side by side."""
    return ScalingConfig(
        num_workers=scaling.num_workers,
        use_gpu=scaling.use_gpu,
        resources_per_worker=worker_resources(scaling),
    )


def driver_queue() -> Queue:
    """A queue whose actor lives on the driver's node, as Ray Train's controllers do: left to Ray, it may
    land on a worker node, and losing that node would end the stage instead of one run's workers."""
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})  # the head may have no CPUs


class ReportForwarder(UserCallback):
    """Runs in a Train controller: puts rank 0's report of every epoch on the driver's queue as
    ``(run, metrics, None)``, and a worker group's failure (which Train retries up to ``max_failures``) as
    ``(run, None, what)``.

    Kept in this light module so controllers unpickle it without importing the stage (tqdm, pandas).
    """

    def __init__(self, queue: Queue, run: str) -> None:
        self.queue, self.run = queue, run

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((self.run, metrics[0], None))

    def after_exception(self, run_context, worker_exceptions) -> None:
        what = "; ".join(
            f"worker {rank}: {console.brief(exc)}" for rank, exc in sorted(worker_exceptions.items())
        )
        self.queue.put((self.run, None, what))
