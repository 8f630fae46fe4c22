"""Figures of anytime results (matplotlib): per-member anytime curves, EANN vs OPT, schedules by W.

Each function returns a ``Figure`` (call ``fig.savefig(path)``), so notebooks and the report stage share
them. Error curves are drawn as steps: an answer holds until the next one is available.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from anytime.eann.curves import EannCurve, MemberCurve
from anytime.eann.summary import InflationSummary


def _axes(title: str, xlabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel="test top-1 error")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _step(ax, curve: EannCurve, horizon: float, **style) -> None:
    ax.step([*curve.budget, horizon], [*curve.test_error, curve.test_error[-1]], where="post", **style)


def members_figure(members: Sequence[MemberCurve]) -> Figure:
    """Every member's anytime curve: test error of each head against its cumulative FLOPs.

    Heads that EANN weights left untrained are drawn as crosses: their errors are not the method's.
    """
    fig, ax = _axes("Anytime curves of the EANN members", "FLOPs per sample (cumulative, log scale)")
    for m in members:
        (line,) = ax.plot(
            m.flops, m.test_error, marker="o", markersize=3, label=f"{m.name} ({len(m.flops)} heads)"
        )
        if m.untrained_heads:
            untrained = slice(0, m.untrained_heads)
            ax.plot(m.flops[untrained], m.test_error[untrained], "x", color=line.get_color(), markersize=7)
    if any(m.untrained_heads for m in members):
        ax.plot([], [], "x", color="grey", label="untrained head (EANN weights)")
    ax.set_xscale("log")
    ax.legend(fontsize="small")
    return fig


def eann_vs_opt_figure(curves: Mapping[str, EannCurve], horizon: float) -> Figure:
    """The sequential EANN against OPT (budget known in advance) and OPT+ (OPT networks run in turn)."""
    fig, ax = _axes("EANN (sequential) vs OPT", "wall-clock budget (FLOPs per sample, log scale)")
    _step(ax, curves["sequential"], horizon, label="EANN sequential", linewidth=2)
    for label, style in (("OPT", {"marker": "s", "color": "black"}), ("OPT+", {"linestyle": "--"})):
        if label in curves:
            _step(ax, curves[label], horizon, label=label, **style)
    ax.set_xscale("log")
    ax.legend()
    return fig


def schedules_figure(curves: Mapping[str, EannCurve], horizon: float) -> Figure:
    """The EANN on 1..m FIFO workers: more workers answer earlier at the same wall-clock budget."""
    fig, ax = _axes("EANN on W parallel FIFO workers", "wall-clock budget (FLOPs per worker, log scale)")
    for label, curve in curves.items():
        if label.startswith("fifo-W"):
            _step(ax, curve, horizon, label=f"W = {curve.workers}")
    ax.set_xscale("log")
    ax.legend()
    return fig


def inflation_figure(inflation: InflationSummary, title: str) -> Figure:
    """Worst-case and average inflation B/D(B) against the number of workers, for both member models."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(title=title, xlabel="workers W", ylabel="inflation B / D(B)")
    ax.grid(True, alpha=0.3)
    workers = sorted(inflation.exact)
    ax.set_xticks(workers)
    near = f"near-optimal from {inflation.near_optimal_from:g} of depth"
    for case, label in (("final_only", "final outputs only"), ("near_optimal", near)):
        for stat, style in (("worst", "-o"), ("average", "--s")):
            values = [getattr(getattr(inflation.exact[w], case), stat) for w in workers]
            ax.plot(workers, values, style, label=f"{label}: {stat}")
    ax.legend(fontsize="small")
    return fig
