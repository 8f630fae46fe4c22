"""DVC stage ``report``: the assemble stage's curves and summary -> what a person reads and DVC tracks.

Writes ``outputs/report/`` in one atomic step: ``report.md`` (read first), ``metrics.json`` (for ``dvc
metrics show/diff``), step-curve CSVs for ``dvc plots`` (``curves/``, ``members/``) and PNG ``figures/``
(matplotlib's object API, ``Figure.savefig``: Agg, never a display).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from anytime.eann import EannCurve, MemberCurve
from anytime.eann.plots import eann_vs_opt_figure, inflation_figure, members_figure, schedules_figure
from pipelines.cli import UserError, run
from pipelines.config import load_params
from pipelines.io import atomic_path
from pipelines.paths import ASSEMBLE_DIR, MEMBERS_DIR
from pipelines.paths import REPORT_DIR as OUT_DIR
from pipelines.trained_runs import load_runs


def read_assembly() -> tuple[dict[str, EannCurve], dict]:
    try:
        raw = json.loads((ASSEMBLE_DIR / "curves.json").read_text())
        summary = json.loads((ASSEMBLE_DIR / "summary.json").read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: missing (run the assemble stage first)") from None
    curves = {label: EannCurve.from_rows(label, v["workers"], v["rows"]) for label, v in raw.items()}
    return curves, summary


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def step_points(curve: EannCurve, horizon: float) -> list[tuple[float, float]]:
    """Corner points of the step curve, so that a line plot (DVC's linear template) draws the steps."""
    points, previous = [], None
    for budget, error in zip(curve.budget, curve.test_error, strict=True):
        if previous is not None:
            points.append((budget, previous))
        points.append((budget, error))
        previous = error
    points.append((max(horizon, curve.budget[-1]), previous))
    return points


def dvc_metrics(summary: dict) -> dict:
    """The numbers to diff between experiments, nested for ``dvc metrics show``."""
    keys = ("auc", "final_test_error", "finish_budget", "total_compute", "error_at", "relative_to_opt")
    metrics = {
        "eann": {label: {k: s[k] for k in keys if k in s} for label, s in summary["schedules"].items()},
        "inflation": {f"W{w}": cases for w, cases in summary["inflation"]["exact"].items()},
        "members": {m["name"]: {"final_test_error": m["final_test_error"]} for m in summary["members"]},
    }
    if "opt" in summary:
        metrics["opt"] = summary["opt"]
    return metrics


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: Iterable[Iterable]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def markdown(summary: dict, figures: Mapping[str, str]) -> str:
    """The report a person reads first: headline numbers, then the tables and figures behind them."""
    schedules = summary["schedules"]
    milestones = list(next(iter(schedules.values()))["error_at"])
    seq = schedules["sequential"]
    lines = [
        "# Anytime report",
        "",
        f"EANN of {len(summary['members'])} members; budgets are wall-clock FLOPs per sample per worker. "
        "At each budget the EANN answers with the available output that has the lowest validation error; "
        "the errors below are on the test split.",
        "",
        f"**Sequential EANN:** final test error {_fmt(seq['final_test_error'])}, anytime AUC "
        f"{_fmt(seq['auc'])} (area under error vs budget on [0, {_fmt(summary['horizon'])}] FLOPs, "
        "normalised; no answer yet counts as error 1; lower is better).",
        "",
        "## Schedules",
        "",
    ]
    header = ["schedule", "AUC", "final error", "finish budget", "total compute"]
    header += [f"error @ {m}x deepest" for m in milestones]
    rows = [
        [label, s["auc"], s["final_test_error"], s["finish_budget"], s["total_compute"]]
        + [s["error_at"][m] for m in milestones]
        for label, s in schedules.items()
    ]
    lines += _table(header, rows)
    if "opt" in summary:
        lines += ["## Against OPT", ""]
        lines += [
            "OPT answers with the deepest OPT network that fits the budget (known in advance); OPT+ runs "
            "the OPT networks one after another (no anytime heads). Relative increase = "
            "100 (err - err_OPT) / err_OPT at the same budget; 'budget to match' = budget the schedule needs "
            "to reach each OPT network's error, over that network's cost (the measured inflation).",
            "",
        ]
        lines += _table(
            ["baseline", "AUC", "final error"],
            [[k, v["auc"], v["final_test_error"]] for k, v in summary["opt"].items()],
        )
        header = ["schedule"] + [f"rel. increase @ {m}x (%)" for m in milestones] + ["budget to match OPT"]
        rows = [
            [label]
            + [s["relative_to_opt"][m] for m in milestones]
            + [", ".join(_fmt(r, 3) for r in s["budget_to_match_opt"])]
            for label, s in schedules.items()
        ]
        lines += _table(header, rows)
    if summary["member_vs_opt"]:
        lines += ["## Members against OPT (METHOD.md §6)", ""]
        lines += _table(
            ["member", "head", "FLOPs", "test error", "OPT error", "rel. increase (%)"],
            [
                [
                    r[k]
                    for k in ("member", "head", "flops", "test_error", "opt_test_error", "relative_increase")
                ]
                for r in summary["member_vs_opt"]
            ],
        )
    inflation = summary["inflation"]
    phi = inflation["near_optimal_from"]
    lines += [
        "## Cost inflation B / D(B)",
        "",
        "D(B) is the depth of the deepest network the EANN has matched at budget B, for members whose final "
        f"outputs only are near-optimal, or that are near-optimal from {phi:g} of their depth on. "
        "Exact values "
        "for these members' measured costs over [first final output, last final output]"
        + (
            f"; limits for infinitely many members growing by b = {inflation['base']:.3f}."
            if "base" in inflation
            else "."
        ),
        "",
    ]
    rows = []
    for w, cases in inflation["exact"].items():
        limit = inflation.get("limits", {}).get(w, {})
        rows.append(
            [w]
            + [cases[c][s] for c in ("final_only", "near_optimal") for s in ("worst", "average")]
            + [limit.get(c, {}).get("worst") for c in ("final_only", "near_optimal")]
        )
    lines += _table(
        [
            "W",
            "final only: worst",
            "final only: avg",
            "near-opt: worst",
            "near-opt: avg",
            "limit final only",
            "limit near-opt",
        ],
        rows,
    )
    lines += ["## Figures", ""] + [f"![{title}]({path})" for title, path in figures.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    load_params()  # a bad params.yaml fails here, before any work
    curves, summary = read_assembly()
    members = sorted(load_runs(MEMBERS_DIR), key=lambda m: m.cost)
    horizon = summary["horizon"]
    figures = {
        "Members' anytime curves": ("members.png", members_figure(members)),
        "EANN vs OPT": ("eann_vs_opt.png", eann_vs_opt_figure(curves, horizon)),
        "Schedules by W": ("schedules.png", schedules_figure(curves, horizon)),
        "Inflation by W": (
            "inflation.png",
            inflation_figure(
                summary["inflation"]["exact"],
                "Exact inflation B/D(B) of these members' costs",
                summary["inflation"]["near_optimal_from"],
            ),
        ),
    }
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        for label, curve in curves.items():
            write_csv(tmp / "curves" / f"{label}.csv", ["budget", "test_error"], step_points(curve, horizon))
        for m in members:
            write_member_csv(tmp / "members" / f"{m.name}.csv", m)
        (tmp / "figures").mkdir()
        for name, fig in figures.values():
            fig.savefig(tmp / "figures" / name, dpi=120)
        (tmp / "metrics.json").write_text(json.dumps(dvc_metrics(summary), indent=2, sort_keys=True) + "\n")
        (tmp / "report.md").write_text(
            markdown(summary, {t: f"figures/{n}" for t, (n, _) in figures.items()})
        )
    print(f"report in {OUT_DIR}/report.md (metrics.json, {len(figures)} figures, plot data for dvc plots)")


def write_member_csv(path: Path, member: MemberCurve) -> None:
    write_csv(
        path,
        ["flops", "test_error", "val_error"],
        zip(member.flops, member.test_error, member.val_error, strict=True),
    )


if __name__ == "__main__":
    run(main)
