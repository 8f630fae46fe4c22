"""EANNs (METHOD.md §7): schedules on W FIFO workers, cost inflation, assembly by validation error, and real
anytime predictors that run a network head by head and stop when the budget runs out."""

from anytime.eann.assembly import assemble, eann_curve, opt_curve, opt_plus_curve
from anytime.eann.curves import EannCurve, MemberCurve, load_member
from anytime.eann.early_exit import ExitResult, calibrate_threshold, classify_with_exits, running_costs
from anytime.eann.inflation import Inflation, inflation, inflation_limits
from anytime.eann.predictor import AnytimePredictor, Prediction
from anytime.eann.schedule import Run, compute_spent, fifo_schedule, geometric_costs
from anytime.eann.summary import Assembly, EannSummary, OptBaseline

__all__ = [
    "AnytimePredictor",
    "Assembly",
    "EannCurve",
    "EannSummary",
    "ExitResult",
    "Inflation",
    "MemberCurve",
    "OptBaseline",
    "Prediction",
    "Run",
    "assemble",
    "calibrate_threshold",
    "classify_with_exits",
    "compute_spent",
    "eann_curve",
    "fifo_schedule",
    "geometric_costs",
    "inflation",
    "inflation_limits",
    "load_member",
    "opt_curve",
    "opt_plus_curve",
    "running_costs",
]
