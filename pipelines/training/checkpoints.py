"""Vetting a run's epoch checkpoints in Ray storage before it resumes from them (train and tune drivers).

Each checkpoint folder carries ``checksums.json`` (:mod:`anytime.integrity`, written by the worker). Ray
resumes a run from its newest checkpoint and would fail on a damaged one at every re-run; so before a fit
the driver checks the newest, and when it is damaged sets the run's whole storage folder aside (renamed,
kept for inspection) and hands the newest intact one, if any, to the fresh run as ``resume_from``.
"""

from __future__ import annotations

import time

import pyarrow.fs as pafs
from ray.train import Checkpoint, Result

from anytime.integrity import CorruptFileError, verify_checksums
from pipelines import console

ASIDE_SUFFIX = ".corrupt-"


def _checkpoints(fs: pafs.FileSystem, run_dir: str) -> list[str]:
    """The checkpoint folders Ray Train registered for the run (its checkpoint manager's snapshot), newest
    first: the only ones it resumes from. A folder an orphaned worker uploaded after its driver died is
    never registered, so it is neither vetted nor resumed from."""
    try:
        registered = Result.from_path(run_dir, storage_filesystem=fs).best_checkpoints
    except RuntimeError:  # no run folder or no snapshot: Ray starts the run afresh
        return []
    return sorted((checkpoint.path for checkpoint, _ in registered), reverse=True)


def _problem(fs: pafs.FileSystem, path: str) -> str | None:
    """Why the checkpoint folder at ``path`` is unusable (None: intact)."""
    try:
        with Checkpoint(path, filesystem=fs).as_directory() as directory:
            verify_checksums(directory)
    except CorruptFileError as exc:
        return str(exc)
    return None


def vet_checkpoints(storage: str, ray_name: str, run: str) -> str | None:
    """Check run ``ray_name``'s newest checkpoint under ``storage``; when it is damaged, set the run's folder
    aside, say so in one line, and return the URI of the newest intact checkpoint to resume from (None:
    Ray resumes on its own, or the run starts from scratch)."""
    fs, base = pafs.FileSystem.from_uri(storage)
    run_dir = f"{base.rstrip('/')}/{ray_name}"
    checkpoints = _checkpoints(fs, run_dir)
    if not checkpoints or (first := _problem(fs, checkpoints[0])) is None:
        return None
    good = next((c for c in checkpoints[1:] if _problem(fs, c) is None), None)
    aside = f"{run_dir}{ASIDE_SUFFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    fs.move(run_dir, aside)
    shown = storage.rstrip("/") + aside.removeprefix(base.rstrip("/"))
    if good is None:
        console.say(f"{first}: checkpoints of {run} set aside in {shown}; {run} restarts from scratch")
        return None
    resume = f"{aside}/{good.rsplit('/', 1)[-1]}"
    console.say(
        f"{first}: checkpoints of {run} set aside in {shown}; {run} resumes from its last good one, "
        f"{good.rsplit('/', 1)[-1]}"
    )
    return resume if "://" not in storage else storage.split("://", 1)[0] + "://" + resume
