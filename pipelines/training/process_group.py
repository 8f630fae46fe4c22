"""The process group of a Ray Train run, with its store listening on the node's address only.

torch's ``TCPStore`` server binds the wildcard address (c10d's ``TCPServer`` and its libuv twin; no option or
environment variable names a host) unless handed a socket already listening (``master_listen_fd``). Ray Train
sets ``MASTER_ADDR`` to the node's address (127.0.0.1 on a private loopback cluster) and calls
``init_process_group(init_method="env://")``, which takes no ``store``: so, in each worker, the env
rendezvous' store factory is wrapped to bind that address first (docs/cluster.md, "On one machine").
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass

from ray.train.torch import TorchConfig
from ray.train.torch.config import _TorchBackend


def _bind_store_to_master_addr() -> None:
    """In a Train worker: rank 0's ``torch.distributed`` store listens on ``MASTER_ADDR`` only."""
    from torch.distributed import TCPStore

    rendezvous = importlib.import_module("torch.distributed.rendezvous")  # the name is also a function
    create = rendezvous._create_c10d_store
    if getattr(create, "binds_master_addr", False):
        return

    def create_bound(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or rendezvous._torchelastic_use_agent_store():
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
        listener = socket.create_server((hostname, port), family=family)
        return TCPStore(
            hostname,
            port,
            world_size,
            is_master=True,
            timeout=timeout,
            multi_tenant=True,
            master_listen_fd=listener.detach(),
            use_libuv=use_libuv,
        )

    create_bound.binds_master_addr = True
    rendezvous._create_c10d_store = create_bound


class _NodeAddressTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config) -> None:
        worker_group.execute(_bind_store_to_master_addr)
        super().on_start(worker_group, backend_config)


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """Ray Train's torch setup, with the process group's store listening on the node's address only."""

    @property
    def backend_cls(self):
        return _NodeAddressTorchBackend
