"""``python -m serving`` in a child process on a free loopback port, for the bench and the server tests: up
once it prints its URL, ended with SIGTERM (its own private Ray cluster goes with it)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

INTERRUPTED = 130  # the exit code of a stage or server ended by Ctrl-C or SIGTERM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    outputs: str | Path, name: str, args: Sequence[str] = (), *, start_timeout_s: float = 300, nice: int = 0
) -> Iterator[tuple[str, int]]:
    """Yield ``(base URL, port)`` of a server on ``outputs``; on exit SIGTERM it, check it ended cleanly."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "serving",
        "--outputs",
        str(outputs),
        "--port",
        str(port),
        "--name",
        name,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own private cluster
    process = subprocess.Popen(
        [*(["nice", "-n", str(nice)] if nice else []), *command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []
    try:
        while (
            line := lines.get(timeout=start_timeout_s)
        ).strip() != f"serving {name} at {base}/v2/models/{name}":
            seen.append(line)
    except queue.Empty:
        process.kill()
        raise RuntimeError("the server did not print its URL:\n" + "".join(seen[-30:])) from None
    try:
        yield base, port
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        if code != INTERRUPTED:
            raise RuntimeError(f"the server exited with {code}, not {INTERRUPTED}:\n" + "".join(seen[-30:]))
