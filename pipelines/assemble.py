"""DVC stage ``assemble``: trained members (and OPT runs) -> EANN error-vs-budget curves and their summary.

Reads the train stage's outputs (``outputs/members/*/``, ``outputs/opt/*/``: DESIGN.md "Member outputs"),
traces the sequential and FIFO W-worker schedules (chosen on validation, reported on test) and writes
``outputs/assemble/assembly.json`` (:class:`anytime.eann.Assembly`, the report stage's input), atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from anytime.eann import Assembly, MemberCurve, OptBaseline, assemble, load_member
from pipelines.cli import UserError, run
from pipelines.config import load_params
from pipelines.io import atomic_path

MEMBERS_DIR = Path("outputs/members")
OPT_DIR = Path("outputs/opt")
OUT_DIR = Path("outputs/assemble")
ASSEMBLY_FILE = "assembly.json"
# The train stage names OPT(j) of member m "<m>-opt<j>" (pipelines/members.py, opt_config).
OPT_RUN_NAME = re.compile(r"^(?P<member>.+)-opt(?P<head>\d+)$")


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` that has a ``metrics.json`` (none if ``root`` does not exist)."""
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir()) if (d / "metrics.json").is_file()]


def opt_baselines(opts: list[MemberCurve]) -> list[OptBaseline]:
    """Which member head each OPT run stands for, read from the train stage's run names."""
    baselines = []
    for opt in opts:
        match = OPT_RUN_NAME.match(opt.name)
        if match is None:
            raise UserError(f"{OPT_DIR}/: run {opt.name!r} is not an OPT run (named <member>-opt<head>)")
        baselines.append(OptBaseline(member=match["member"], head=int(match["head"]), run=opt))
    return baselines


def shared_test_size(directories: list[Path]) -> int:
    """The number of test samples behind every error: the same test split for every run, or an error."""
    sizes = {}
    for d in directories:
        try:
            sizes[d] = int(np.load(d / "labels_test.npy", mmap_mode="r").shape[0])
        except FileNotFoundError:
            raise UserError(f"{d / 'labels_test.npy'}: missing (run the train stage first)") from None
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{d.name}: {n}" for d, n in sizes.items())
        raise UserError(f"runs were tested on test splits of different sizes ({listed}): retrain them")
    return next(iter(sizes.values()))


def main() -> None:
    params = load_params().assemble
    directories, opt_directories = run_dirs(MEMBERS_DIR), run_dirs(OPT_DIR)
    if not directories:
        raise UserError(f"no trained members in {MEMBERS_DIR}/: run the train stage first")
    if params.workers is not None and max(params.workers) > len(directories):
        raise UserError(
            f"assemble.workers = {params.workers}: at most {len(directories)} workers (one per member) "
            "make sense"
        )
    members = [load_member(d) for d in directories]
    baselines = opt_baselines([load_member(d) for d in opt_directories])
    assembly: Assembly = assemble(
        members,
        baselines,
        test_size=shared_test_size(directories + opt_directories),
        workers=params.workers,
        near_optimal_from=params.near_optimal_from,
        milestones=params.milestones,
    )
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        (tmp / ASSEMBLY_FILE).write_text(assembly.model_dump_json(indent=1) + "\n")
    seq = assembly.summary.schedules["sequential"]
    print(
        f"assembled {len(members)} members ({len(baselines)} OPT runs): sequential AUC {seq.auc:.4f}, "
        f"final test error {seq.final_test_error:.4f} on {assembly.summary.test_size} test samples; "
        f"curves for {', '.join(assembly.curves)} in {OUT_DIR}/"
    )


if __name__ == "__main__":
    run(main)
