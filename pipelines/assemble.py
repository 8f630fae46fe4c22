"""DVC stage ``assemble``: trained members (and OPT runs) -> EANN error-vs-budget curves and their summary.

Reads the train stage's run records (``outputs/members/*/``, ``outputs/opt/*/``: ``anytime.record``),
traces the sequential and FIFO W-worker schedules (chosen on validation, reported on test) and writes
``outputs/assemble/assembly.json`` (:class:`anytime.eann.Assembly`, the report stage's input), atomically.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from anytime.eann import Assembly, assemble, load_member
from pipelines.cli import UserError, run_command, stage_parser
from pipelines.config import load_params
from pipelines.io import atomic_path
from pipelines.paths import ASSEMBLE_DIR, ASSEMBLY_FILE, MEMBERS_DIR, OPT_DIR
from pipelines.trained_runs import opt_baselines, run_dirs, shared_test_size


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    return stage_parser("pipelines.assemble", __doc__).parse_args(argv)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    params = load_params(args.params).assemble
    directories, opt_directories = run_dirs(MEMBERS_DIR), run_dirs(OPT_DIR)
    if not directories:
        raise UserError(f"no trained members in {MEMBERS_DIR}/: run the train stage first")
    if params.workers is not None and max(params.workers) > len(directories):
        raise UserError(
            f"assemble.workers = {params.workers}: at most {len(directories)} workers (one per member) "
            "make sense"
        )
    members = [load_member(d) for d in directories]
    baselines = opt_baselines([load_member(d) for d in opt_directories], OPT_DIR)
    assembly: Assembly = assemble(
        members,
        baselines,
        test_size=shared_test_size(directories + opt_directories),
        workers=params.workers,
        near_optimal_from=params.near_optimal_from,
        milestones=params.milestones,
    )
    with atomic_path(ASSEMBLE_DIR) as tmp:
        tmp.mkdir()
        (tmp / ASSEMBLY_FILE.name).write_text(assembly.model_dump_json(indent=1) + "\n")
    seq = assembly.summary.schedules["sequential"]
    print(
        f"assembled {len(members)} members ({len(baselines)} OPT runs): sequential AUC {seq.auc:.4f}, "
        f"final test error {seq.final_test_error:.4f} on {assembly.summary.test_size} test samples; "
        f"curves for {', '.join(assembly.curves)} in {ASSEMBLE_DIR}/"
    )


if __name__ == "__main__":
    run_command(main)
