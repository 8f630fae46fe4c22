"""One writer per workspace: a stage that writes outputs holds an exclusive lock on ``outputs/.lock``.

Two stages writing the same outputs at once would delete each other's Ray storage or silently overwrite
each other's results; DVC locks its own runs, but not ``python -m pipelines.<stage>`` run by hand. The
lock is an advisory ``flock``, released by the kernel when its holder dies (no stale lock to clear); the
file names the holder (PID and command line), so a second stage fails at once saying who holds it. Each
``dvc exp run --queue`` job runs in its own copy of the workspace, hence with its own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

import psutil

from pipelines.cli import UserError
from pipelines.paths import WORKSPACE_LOCK


def _holder(fd: int) -> str:
    """``PID <pid> (<command>)`` as the holder wrote it, or a plain description when unreadable."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"PID {int(info['pid'])} ({str(info['command'])[:120]})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def workspace_lock(stage: str) -> Iterator[None]:
    """Hold the workspace lock for the ``with`` block, or fail at once naming its holder."""
    WORKSPACE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(WORKSPACE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{WORKSPACE_LOCK}: the workspace is being written by {_holder(fd)}; the {stage} stage "
                "waits for nothing: run it again once that one has ended"
            ) from None
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "command": " ".join(psutil.Process().cmdline())}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
