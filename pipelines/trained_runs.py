"""Reading the train stage's run outputs back (their format: ``anytime.record``), for the assemble stage.

OPT runs are matched to member heads by their names (:func:`pipelines.paths.opt_run_name`), so the library
never sees the pipeline's naming.
"""

from __future__ import annotations

from pathlib import Path

from anytime.eann import MemberCurve, OptBaseline
from anytime.integrity import CorruptFileError, load_array, verify_checksums
from anytime.record import labels_file
from pipelines.cli import UserError
from pipelines.paths import OPT_RUN_NAME


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (none if ``root`` does not exist; hidden ones are scratch space),
    each checked against the checksums the train stage wrote with it."""
    if not root.is_dir():
        return []
    directories = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    for directory in directories:
        try:
            verify_checksums(directory)
        except CorruptFileError as exc:
            raise UserError(f"{exc}: re-run the train stage, which trains {directory.name} again") from None
    return directories


def opt_baselines(opts: list[MemberCurve], root: Path) -> list[OptBaseline]:
    """Which member head each OPT run (read from ``root``) stands for, from its run name."""
    baselines = []
    for opt in opts:
        match = OPT_RUN_NAME.match(opt.name)
        if match is None:
            raise UserError(f"{root}/: run {opt.name!r} is not an OPT run (named <member>-opt<head>)")
        baselines.append(OptBaseline(member=match["member"], head=int(match["head"]), run=opt))
    return baselines


def shared_test_size(directories: list[Path]) -> int:
    """The number of test samples behind every error: the same test split for every run, or an error."""
    sizes = {}
    for d in directories:
        try:
            sizes[d] = int(load_array(d / labels_file("test"), mmap_mode="r").shape[0])
        except FileNotFoundError:
            raise UserError(f"{d / labels_file('test')}: missing (run the train stage first)") from None
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{d.name}: {n}" for d, n in sizes.items())
        raise UserError(f"runs were tested on test splits of different sizes ({listed}): retrain them")
    return next(iter(sizes.values()))
