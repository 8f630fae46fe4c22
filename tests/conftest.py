"""Suite-wide settings: no network beyond loopback, deterministic torch, quiet Ray."""

import os
import sys
from pathlib import Path

# Subprocesses (dvc stages, `ray start`, `ray job` entrypoints, CLI tools) run `python`, `dvc`, ... from
# PATH: make that the interpreter running the tests, even when its venv is not activated.
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Results depend on torch's thread count (reduction order): one thread in the tests and every process they
# start, whatever the caller exported, so a seed gives the same numbers everywhere.
os.environ["OMP_NUM_THREADS"] = "1"

# Shared fixtures, registered once so session-scoped ones (a `ray start` head, digits shards) are built once.
pytest_plugins = ("tests.fixtures.digits", "tests.fixtures.ray_cluster", "tests.fixtures.s3")
