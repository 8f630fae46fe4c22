"""A multi-node Ray cluster on one machine, every process on 127.0.0.1: a head and N worker nodes.

    python infra/ray/local_cluster.py                   # head (0 CPUs) + 2 workers (1 CPU each); Ctrl-C stops
    python infra/ray/local_cluster.py --workers 3 --worker-cpus 2 --info cluster.json
    python infra/ray/local_cluster.py --replace-lost    # a worker node whose processes die comes back

Each node has its own CPU count and a custom resource naming it (``anytime_head``, ``anytime_worker_1``,
...), so a request can be pinned to a node. Like the AWS cluster (docs/cluster.md), the head advertises no
CPUs by default: work goes to the workers. Token authentication is on (a fresh token per cluster).

Why ``ray.cluster_utils.Cluster`` (Ray's own multi-node test harness) and not ``ray start``: given
``--node-ip-address 127.0.0.1``, ``ray start`` still advertises the machine's network address and listens
on every interface; with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` everything stays on loopback, but then
``ray start --address`` refuses to add worker nodes. ``Cluster`` adds them under that setting, and every
node's processes are children of this one, so stopping it (SIGTERM, Ctrl-C) stops exactly those.

With ``--replace-lost`` a worker node whose raylet dies is replaced by a fresh node of the same name and
resources (a new node id), as an autoscaler or KubeRay replaces a lost machine, and the description is
rewritten: a test can lose a node more than once.

When the cluster is up, one JSON line goes to stdout (and to ``--info``): the GCS ``address`` (for
``RAY_ADDRESS``), the jobs API ``dashboard_url``, the ``token`` (``RAY_AUTH_TOKEN``, with
``RAY_AUTH_MODE=token``), and per node its ``name``, ``node_id``, ``resources`` and ``pids`` (its Ray
processes; its workers are children of its raylet, the first pid).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by Ray at import: loopback only
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_TOKEN", os.urandom(16).hex())
# Its nodes share one machine: the GCS may declare a node lost after 3 missed 1 s health checks rather than
# Ray's 5 missed 3 s ones, so a killed node's work moves on within seconds.
os.environ.setdefault("RAY_health_check_period_ms", "1000")
os.environ.setdefault("RAY_health_check_failure_threshold", "3")

import argparse  # after the environment Ray reads at import
import json
import shutil
import signal
import socket
import tempfile
import threading
from itertools import count
from pathlib import Path

from ray._private.node import Node
from ray._private.utils import write_ray_address
from ray.cluster_utils import Cluster

REPLACE_POLL_S = 1.0
GENERATIONS = count(1)  # the temp dir suffix of each replacement node


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_info(name: str, node, resources: dict[str, float]) -> dict:
    processes = node.all_processes
    raylet = [info.process.pid for info in processes.get("raylet", [])]
    others = [info.process.pid for kind, infos in processes.items() if kind != "raylet" for info in infos]
    return {"name": name, "node_id": node.node_id, "resources": resources, "pids": raylet + others}


def add_worker(cluster: Cluster, args: argparse.Namespace, k: int, generation: int = 0) -> tuple[Node, dict]:
    """Worker node ``k`` (its ``generation``-th incarnation); its description as in the JSON line."""
    resources = {f"anytime_worker_{k}": 1.0}
    # A session directory per node, as on separate machines: nodes sharing one would unpack a job's
    # working dir over the copy the head's driver runs in, pulling its cwd away.
    temp_dir = f"{args.temp_dir}/w{k}" + (f"-{generation}" if generation else "")
    node = cluster.add_node(
        object_store_memory=args.object_store_mb * 2**20,
        node_ip_address="127.0.0.1",
        num_cpus=args.worker_cpus,
        resources=resources,
        temp_dir=temp_dir,
    )
    # What `ray start` writes in each node's temp dir. A submitted job's driver is given the address read
    # from there; without it Ray falls back to any Ray process on the machine (another cluster's, whose
    # token this one's driver lacks: InvalidAuthToken).
    write_ray_address(cluster.address, node.get_temp_dir_path())
    return node, node_info(f"worker_{k}", node, {"CPU": args.worker_cpus, **resources})


def start(args: argparse.Namespace) -> tuple[Cluster, list[Node], dict]:
    """Start the head and the workers; return the cluster, its worker nodes and what clients need."""
    dashboard_port = free_port()
    head_resources = {"CPU": args.head_cpus, "anytime_head": 1.0}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "object_store_memory": args.object_store_mb * 2**20,
            "node_ip_address": "127.0.0.1",
            "num_cpus": args.head_cpus,
            "resources": {"anytime_head": 1.0},
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            # Any free port (as Cluster gives worker nodes), not Ray's fixed 52365: a second cluster on the
            # machine would find it taken, and its jobs API would wait forever for "an available agent".
            "dashboard_agent_listen_port": None,
            "temp_dir": f"{args.temp_dir}/h",
        },
    )
    write_ray_address(cluster.address, cluster.head_node.get_temp_dir_path())
    workers = [add_worker(cluster, args, k) for k in range(1, args.workers + 1)]
    cluster.wait_for_nodes()
    info = {
        "address": cluster.address,
        "dashboard_url": f"http://127.0.0.1:{dashboard_port}",
        "token": os.environ["RAY_AUTH_TOKEN"],
        "nodes": [node_info("head", cluster.head_node, head_resources), *(desc for _, desc in workers)],
    }
    return cluster, [node for node, _ in workers], info


def replace_lost(cluster: Cluster, args: argparse.Namespace, workers: list[Node], info: dict) -> bool:
    """Replace every worker node whose raylet has died; True if any was (``workers``, ``info`` updated)."""
    replaced = False
    for k, node in enumerate(workers, start=1):
        if node.all_processes["raylet"][0].process.poll() is None:
            continue
        cluster.remove_node(node, allow_graceful=False)  # what is left of it, zombies reaped
        workers[k - 1], info["nodes"][k] = add_worker(cluster, args, k, generation=next(GENERATIONS))
        replaced = True
    return replaced


def write_info(path: Path, info: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--head-cpus", type=int, default=0, help="CPUs the head advertises (default 0)")
    parser.add_argument("--worker-cpus", type=int, default=1, help="CPUs each worker advertises (default 1)")
    parser.add_argument("--object-store-mb", type=int, default=150, help="object store per node (MiB)")
    parser.add_argument("--info", type=Path, help="also write the cluster's JSON description here")
    parser.add_argument(
        "--replace-lost", action="store_true", help="replace a worker node whose processes die (new node id)"
    )
    parser.add_argument(
        "--temp-dir", help="Ray's directory, one sub-directory per node (default: a new short /tmp/ray-*)"
    )
    args = parser.parse_args(argv)
    if args.workers < 0 or args.head_cpus < 0 or args.worker_cpus < 1:
        parser.error("need --workers >= 0, --head-cpus >= 0 and --worker-cpus >= 1")
    made_temp = args.temp_dir is None
    args.temp_dir = args.temp_dir or tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # socket paths stay short
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    cluster, workers, info = start(args)
    try:
        if args.info:
            write_info(args.info, info)
        print(json.dumps(info), flush=True)
        while not stop.wait(REPLACE_POLL_S):
            if args.replace_lost and replace_lost(cluster, args, workers, info) and args.info:
                write_info(args.info, info)
    finally:
        cluster.shutdown()
        if made_temp:
            shutil.rmtree(args.temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
