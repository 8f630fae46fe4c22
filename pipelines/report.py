"""DVC stage ``report``: the assemble stage's ``Assembly`` -> what a person reads and what DVC tracks.

Writes ``outputs/report/`` in one atomic step: ``report.md`` (read first), ``metrics.json`` (the EANN's
headline numbers for ``dvc exp show`` and ``dvc metrics diff``), two CSVs for ``dvc plots`` with a
``series`` column (``plots/schedules.csv``: every EANN schedule and OPT overlaid; ``plots/heads.csv``:
every member's per-head test error) and PNG ``figures/`` (matplotlib's object API, ``Figure.savefig``:
Agg, never a display).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from anytime.eann import Assembly, EannCurve, EannSummary
from anytime.eann.plots import eann_vs_opt_figure, inflation_figure, members_figure, schedules_figure
from anytime.eann.summary import milestone_key
from anytime.metrics import error_interval
from pipelines.cli import UserError, run_command, stage_parser
from pipelines.config import load_params
from pipelines.io import atomic_path
from pipelines.paths import ASSEMBLY_FILE
from pipelines.paths import REPORT_DIR as OUT_DIR


def read_assembly(path: Path) -> Assembly:
    """The assemble stage's output, validated: a missing or malformed file is one line naming it."""
    try:
        return Assembly.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (run the assemble stage first)") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise UserError(
            f"{path}: not an assemble output ({exc.error_count()} problems, first at {where}: "
            f"{first['msg']}); re-run the assemble stage"
        ) from None


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def _error(value: float | None, n: int) -> str:
    """A test error with its 95% interval on ``n`` samples: ``0.0306 [0.0172, 0.0538]``."""
    if value is None:
        return "-"
    low, high = error_interval(value, n)
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def _table(header: list[str], rows: Iterable[Iterable]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(v if isinstance(v, str) else _fmt(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _points(value: float) -> str:
    return f"{100 * value:.2g}"


NOISE = "†"  # marks a comparison whose two errors' 95% intervals overlap
NOISE_NOTE = (
    f"{NOISE}: the two errors' 95% intervals overlap, so at this test size the difference may be noise."
)


def _relative(value: float | None, err: float | None, err_opt: float | None, n: int) -> str:
    """A relative increase over OPT, marked when the two errors cannot be told apart on ``n`` samples."""
    if value is None or err is None or err_opt is None:
        return _fmt(value)
    (low, high), (opt_low, opt_high) = error_interval(err, n), error_interval(err_opt, n)
    return f"{_fmt(value)} {NOISE}" if low <= opt_high and opt_low <= high else _fmt(value)


def findings(assembly: Assembly) -> list[str]:
    """The paragraph read first: what this run shows, and what its test-set size cannot show."""
    summary, n = assembly.summary, assembly.summary.test_size
    final = summary.schedules["sequential"].final_test_error
    low, high = error_interval(final, n)
    shows = (
        f"**What this run shows.** An EANN of {len(assembly.members)} members, every error measured on "
        f"the same n = {n} test samples (one sample is {_points(1 / n)} points of error). The sequential "
        f"EANN ends at test error {_error(final, n)} (95% Wilson interval)."
    )
    cannot = (
        "**What it cannot show.** Differences smaller than the intervals (about "
        f"+-{_points((high - low) / 2)} points around that final error) are noise at n = {n}, and the "
        f"relative increases over OPT below magnify them (marked {NOISE} where the intervals overlap)."
    )
    opt = summary.baselines.get("OPT")
    if opt is not None:
        opt_low, opt_high = error_interval(opt.final_test_error, n)
        shows += f" OPT, the deepest network trained alone, ends at {_error(opt.final_test_error, n)}: " + (
            "the intervals do not overlap, a difference larger than chance alone explains."
            if high < opt_low or opt_high < low
            else "the intervals overlap, so at this size the two final errors cannot be told apart."
        )
        if opt.final_test_error > 0:
            cannot += (
                f" At OPT's final error one test sample moves a relative increase by "
                f"{100 / (n * opt.final_test_error):.2g}%."
            )
    untrained = [
        f"{m.name}: first {m.untrained_heads} of {len(m.flops)}"
        for m in assembly.members
        if m.untrained_heads
    ]
    if untrained:
        cannot += (
            f" Heads that EANN weights leave untrained ({', '.join(untrained)}) had no loss: their errors "
            "are those of untrained classifiers, marked and not compared with OPT."
        )
    cannot += " One run with one seed says nothing about the spread between seeds."
    return [shows, "", cannot, ""]


def schedules_section(summary: EannSummary) -> list[str]:
    n, milestones = summary.test_size, [milestone_key(m) for m in summary.milestones]
    lines = [
        "## Schedules",
        "",
        f"Test errors on n = {n} samples, 95% interval in brackets. AUC: area under test error vs budget on "
        f"[0, {_fmt(summary.horizon)}] FLOPs, normalised; no answer yet counts as error 1; lower is better.",
        "",
    ]
    header = ["schedule", "AUC", "final error", "finish budget", "total compute"]
    header += [f"error @ {m}x deepest" for m in milestones]
    rows = [
        [label, s.auc, _error(s.final_test_error, n), s.finish_budget, s.total_compute]
        + [_error(s.error_at[m], n) for m in milestones]
        for label, s in summary.schedules.items()
    ]
    return lines + _table(header, rows)


def opt_section(summary: EannSummary) -> list[str]:
    if not summary.baselines:
        return []
    n, milestones = summary.test_size, [milestone_key(m) for m in summary.milestones]
    lines = [
        "## Against OPT",
        "",
        "OPT answers with the deepest OPT network that fits the budget (known in advance); OPT+ runs the OPT "
        "networks one after another (no anytime heads). Relative increase = 100 (err - err_OPT) / err_OPT at "
        "the same budget; 'budget to match' = budget the schedule needs to reach each OPT network's error, "
        f"over that network's cost (the measured inflation). Test errors on n = {n} samples.",
        "",
    ]
    opt = summary.baselines["OPT"]
    header = ["baseline", "AUC", "final error"] + [f"error @ {m}x deepest" for m in milestones]
    lines += _table(
        header,
        [
            [label, b.auc, _error(b.final_test_error, n)] + [_error(b.error_at[m], n) for m in milestones]
            for label, b in summary.baselines.items()
        ],
    )
    header = ["schedule"] + [f"rel. increase @ {m}x (%)" for m in milestones] + ["budget to match OPT"]
    rows = [
        [label]
        + [_relative(s.relative_to_opt[m], s.error_at[m], opt.error_at[m], n) for m in milestones]
        + [", ".join(_fmt(r, 3) for r in s.budget_to_match_opt)]
        for label, s in summary.schedules.items()
    ]
    return lines + _table(header, rows) + [NOISE_NOTE, ""]


def members_section(assembly: Assembly) -> list[str]:
    n = assembly.summary.test_size
    lines = ["## Members", "", f"Test errors on n = {n} samples, 95% interval in brackets.", ""]
    lines += _table(
        ["member", "heads", "untrained heads (EANN weights)", "cost (FLOPs)", "final error"],
        [
            [m.name, len(m.flops), m.untrained_heads, m.cost, _error(m.test_error[-1], n)]
            for m in assembly.members
        ],
    )
    rows = assembly.summary.member_vs_opt
    if not rows:
        return lines
    lines += [
        "### Member heads against OPT (METHOD.md §6)",
        "",
        "A head marked *untrained* had weight 0 under EANN weights: its error is not the method's.",
        "",
    ]
    lines += _table(
        ["member", "head", "FLOPs", "test error", "OPT error", "rel. increase (%)"],
        [
            [
                r.member,
                r.head,
                r.flops,
                _error(r.test_error, n),
                _error(r.opt_test_error, n),
                _relative(r.relative_increase, r.test_error, r.opt_test_error, n)
                if r.trained
                else "untrained (EANN weights)",
            ]
            for r in rows
        ],
    )
    return [*lines, NOISE_NOTE, ""]


def inflation_section(summary: EannSummary) -> list[str]:
    inflation = summary.inflation
    limits = inflation.limits or {}
    limit_text = (
        f"; limits for infinitely many members growing by b = {inflation.base:.3f}."
        if inflation.base
        else "."
    )
    lines = [
        "## Cost inflation B / D(B)",
        "",
        "D(B) is the depth of the deepest network the EANN has matched at budget B, for members whose final "
        f"outputs only are near-optimal, or that are near-optimal from {inflation.near_optimal_from:g} of "
        "their depth on. Exact values for these members' measured costs over [first final output, last final "
        f"output]{limit_text}",
        "",
    ]
    rows = [
        [
            w,
            cases.final_only.worst,
            cases.final_only.average,
            cases.near_optimal.worst,
            cases.near_optimal.average,
        ]
        + ([limits[w].final_only.worst, limits[w].near_optimal.worst] if w in limits else [None, None])
        for w, cases in inflation.exact.items()
    ]
    header = ["W", "final only: worst", "final only: avg", "near-opt: worst", "near-opt: avg"]
    return lines + _table([*header, "limit final only", "limit near-opt"], rows)


def figures_section(figures: Mapping[str, str]) -> list[str]:
    return ["## Figures", "", *(f"![{title}]({path})" for title, path in figures.items()), ""]


def markdown(assembly: Assembly, figures: Mapping[str, str]) -> str:
    """The report a person reads first: what it shows, then the tables and figures behind it."""
    sections = [
        ["# Anytime report", ""],
        findings(assembly),
        [
            "Budgets are wall-clock FLOPs per sample per worker. At each budget the EANN answers with the "
            "available output that has the lowest validation error (ties: the deeper output); the errors "
            "are on the test split.",
            "",
        ],
        schedules_section(assembly.summary),
        opt_section(assembly.summary),
        members_section(assembly),
        inflation_section(assembly.summary),
        figures_section(figures),
    ]
    return "\n".join(line for section in sections for line in section)


def dvc_metrics(summary: EannSummary) -> dict:
    """The EANN's headline numbers, one ``dvc exp show`` column each: final error, AUC, error at each
    milestone, and OPT's AUC to hold it against. The FIFO schedules and per-network numbers are plots."""
    eann = summary.schedules["sequential"]
    metrics = {"final_error": eann.final_test_error, "auc": eann.auc, "error_at": eann.error_at}
    if "OPT" in summary.baselines:
        metrics["opt_auc"] = summary.baselines["OPT"].auc
    return metrics


def step_points(curve: EannCurve, horizon: float) -> list[tuple[float, float]]:
    """Corner points of the step curve, so that a line plot draws the steps."""
    points, previous = [], None
    for budget, error in zip(curve.budget, curve.test_error, strict=True):
        if previous is not None:
            points.append((budget, previous))
        points.append((budget, error))
        previous = error
    points.append((max(horizon, curve.budget[-1]), previous))
    return points


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_plot_data(directory: Path, assembly: Assembly) -> None:
    """The overlaid schedules (EANN, FIFO, OPT, OPT+) and the members' per-head errors, one CSV each."""
    horizon = assembly.summary.horizon
    write_csv(
        directory / "schedules.csv",
        ["series", "budget", "test_error"],
        (
            (label, budget, error)
            for label, curve in assembly.curves.items()
            for budget, error in step_points(curve, horizon)
        ),
    )
    write_csv(
        directory / "heads.csv",
        ["series", "head", "flops", "test_error", "trained"],
        (
            (m.name, head, m.flops[head], m.test_error[head], m.trained(head))
            for m in assembly.members
            for head in range(len(m.flops))
        ),
    )


def figures(assembly: Assembly) -> dict[str, tuple[str, object]]:
    """Title -> (file name, matplotlib Figure)."""
    curves, horizon = assembly.curves, assembly.summary.horizon
    inflation = inflation_figure(assembly.summary.inflation, "Exact inflation B/D(B) of these members' costs")
    return {
        "Members' anytime curves": ("members.png", members_figure(assembly.members)),
        "EANN vs OPT": ("eann_vs_opt.png", eann_vs_opt_figure(curves, horizon)),
        "Schedules by W": ("schedules.png", schedules_figure(curves, horizon)),
        "Inflation by W": ("inflation.png", inflation),
    }


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    return stage_parser("pipelines.report", __doc__).parse_args(argv)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    load_params(args.params)  # a bad params.yaml fails here, before any work
    assembly = read_assembly(ASSEMBLY_FILE)
    drawn = figures(assembly)
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        write_plot_data(tmp / "plots", assembly)
        (tmp / "figures").mkdir()
        for name, fig in drawn.values():
            fig.savefig(tmp / "figures" / name, dpi=120)
        (tmp / "metrics.json").write_text(json.dumps(dvc_metrics(assembly.summary), indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(assembly, {t: f"figures/{n}" for t, (n, _) in drawn.items()}))
    print(f"report in {OUT_DIR}/report.md (metrics.json, {len(drawn)} figures, plot data for dvc plots)")


if __name__ == "__main__":
    run_command(main)
