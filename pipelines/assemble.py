"""DVC stage ``assemble``: trained members (and OPT runs) -> EANN error-vs-budget curves and a summary.

Reads ``outputs/members/*/metrics.json`` and ``outputs/opt/*/metrics.json`` (the train stage's contract),
traces the sequential and FIFO W-worker schedules (chosen on validation, reported on test) and writes
``outputs/assemble/curves.json`` and ``summary.json`` together, atomically.
"""

from __future__ import annotations

import json

from anytime.eann.evaluation import assemble
from pipelines.cli import UserError, run
from pipelines.config import load_params
from pipelines.io import atomic_path
from pipelines.paths import ASSEMBLE_DIR as OUT_DIR
from pipelines.paths import MEMBERS_DIR, OPT_DIR
from pipelines.trained_runs import load_runs


def main() -> None:
    params = load_params().assemble
    members = load_runs(MEMBERS_DIR)
    if not members:
        raise UserError(f"no trained members in {MEMBERS_DIR}/: run the train stage first")
    if params.workers is not None and max(params.workers) > len(members):
        raise UserError(
            f"assemble.workers = {params.workers}: at most {len(members)} workers (one per member) make sense"
        )
    opts = load_runs(OPT_DIR)
    curves, summary = assemble(
        members,
        opts,
        workers=params.workers,
        near_optimal_from=params.near_optimal_from,
        milestones=params.milestones,
    )
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        rows = {label: {"workers": c.workers, "rows": c.rows()} for label, c in curves.items()}
        (tmp / "curves.json").write_text(json.dumps(rows, indent=1) + "\n")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    seq = summary["schedules"]["sequential"]
    print(
        f"assembled {len(members)} members ({len(opts)} OPT runs): sequential AUC {seq['auc']:.4f}, "
        f"final test error {seq['final_test_error']:.4f}; curves for {', '.join(curves)} in {OUT_DIR}/"
    )


if __name__ == "__main__":
    run(main)
