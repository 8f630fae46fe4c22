"""Atomic output writing: a stage that dies half-way leaves no half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCRATCH_DIR = ".tmp"


def scratch_dir(path: Path) -> Path:
    """Where the temporary for ``path`` is made: never inside a DVC output, even if the writer is killed.

    The project's outputs sit two levels down (``outputs/members``, ``data/shards/<dataset>``), so a path
    under the working directory gets ``<top-level folder>/.tmp`` (Git-ignored with it, same filesystem for
    the rename); any other path gets its own parent.
    """
    try:
        parts = path.resolve().relative_to(Path.cwd().resolve()).parts
    except ValueError:
        return path.parent
    return Path(parts[0], SCRATCH_DIR) if len(parts) > 1 else path.parent


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success rename it onto ``path``, else delete it.

    Works for files and directories: whatever the caller creates at the yielded path replaces
    ``path`` in one ``os.replace`` (directories: the old one is removed first). The temporary lives in
    :func:`scratch_dir`, so a writer killed half-way leaves nothing inside an output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir(path)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=scratch)) / path.name
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
