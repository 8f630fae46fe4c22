"""The temporary folder of a private Ray cluster: short enough for its Unix sockets, and removed after it.

Ray's processes (the dashboard, workers, their DataLoaders) make Unix sockets and ``pymp-*`` folders in the
temporary folder, and leave the folders behind when they are killed at shutdown. A private cluster's
processes get a folder of their own under it (``TMPDIR``, inherited), which the stage removes once the
cluster has stopped; Ray's session folder stays where Ray puts it. A Unix socket's path has at most 107
bytes: a temporary folder too long for the sockets under it is refused in one line, before Ray starts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from ray._common.utils import get_default_system_temp_dir

from pipelines.cli import UserError

UNIX_SOCKET_MAX = 107  # bytes of an AF_UNIX path: sun_path less its NUL
# Longest socket path below each root: multiprocessing's forkserver (pymp-XXXXXXXX/listener-XXXXXXXX)
# under our folder (anytime-XXXXXXXX), Ray's under its session folder.
PRIVATE_PREFIX = "anytime-"
FORKSERVER_TAIL = len("/anytime-xxxxxxxx/pymp-xxxxxxxx/listener-xxxxxxxx")
RAY_TAIL = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")

_made: list[str] = []


def _check(variable: str, root: str, tail: int) -> None:
    if len(root.encode()) + tail > UNIX_SOCKET_MAX:
        raise UserError(
            f"{variable}={root[:80]}: {len(root.encode())} bytes long; the cluster's Unix sockets under it "
            f"would pass the {UNIX_SOCKET_MAX}-byte limit: set {variable} to a path of at most "
            f"{UNIX_SOCKET_MAX - tail} bytes (e.g. /tmp)"
        )


def enter_private_tmp() -> None:
    """Before a private cluster starts: check the paths, then give its processes a folder of their own."""
    ray_root = get_default_system_temp_dir()
    _check("RAY_TMPDIR" if "RAY_TMPDIR" in os.environ else "TMPDIR", ray_root, RAY_TAIL)
    base = tempfile.gettempdir()
    _check("TMPDIR", base, FORKSERVER_TAIL)
    os.environ.setdefault("RAY_TMPDIR", ray_root)  # Ray's session folder stays where it was
    private = tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=base)
    _made.append(private)
    atexit.register(leave_private_tmp)  # before ray.init: Ray's own exit handler (shutdown) runs first
    os.environ["TMPDIR"] = private  # inherited by the processes Ray starts; ours keeps its cached one


def leave_private_tmp() -> None:
    """After the cluster has stopped (at exit, or after an interrupted stage's shutdown): remove its folder
    and the ``pymp-*`` folders left in it."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)
