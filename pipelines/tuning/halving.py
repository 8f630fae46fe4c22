"""Synchronous successive halving: early stopping whose verdicts are the same on every run.

ASHA and the median rule decide when a trial reports, against whichever trials reported before it, so the
trials they stop (and so the winner) change with timing: two runs of the same search picked different
strategies. Here a rung (``grace_period * reduction_factor**k`` epochs, short of ``max_t``) is decided only
once every trial still in the search has reached it: the best ``1/reduction_factor`` of them by the metric
(ties: the earlier trial) go on, the rest are stopped. :func:`verdicts` is that rule, applied to the
trials' histories; the scheduler applies it as results come and stops a losing trial at its next report,
and the stage applies it again to the histories it writes, so a loser that trained on past its rung before
the rung was complete still counts as stopped there.

What this costs: trials are never paused (Ray Train runs do not survive Tune's pause and resume here), so a
trial runs on while its rung waits for the others, and only trials that reach a rung after it is decided
are stopped early. With ``max_concurrent_trials`` below the number of trials, most trials train every
epoch; the result is still the same on every run, and a restored search (whose scheduler state Tune does not
keep) gets the same verdicts from the same histories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """Epoch counts at which trials are compared: ``grace_period * reduction_factor**k`` below ``max_t``."""
    found: list[int] = []
    milestone = float(grace_period)
    while round(milestone) < max_t:
        if not found or round(milestone) > found[-1]:
            found.append(round(milestone))
        milestone *= reduction_factor
    return found


def verdicts(
    histories: Mapping[str, Mapping[int, float]],
    milestones: list[int],
    reduction_factor: float,
    *,
    expected: int | None = None,
) -> dict[str, int]:
    """The rung (in epochs) at which each stopped trial was stopped, from ``{trial: {epochs done: metric}}``.

    A rung is decided once every trial still in the search has a value there (a trial that failed before
    it drops out); ``expected`` is how many trials the first rung waits for (default: all given). Trials
    are ranked by (value, id): ids sort in the order the search created the trials.
    """
    stopped: dict[str, int] = {}
    alive = sorted(histories)
    for rung_index, milestone in enumerate(milestones):
        scored = [trial for trial in alive if milestone in histories[trial]]
        waiting_for = (
            (expected if expected is not None else len(histories)) if rung_index == 0 else len(alive)
        )
        if len(scored) < waiting_for:
            return stopped
        ranked = sorted(scored, key=lambda trial: (histories[trial][milestone], trial))
        keep = max(1, int(len(ranked) // reduction_factor))
        for trial in ranked[keep:]:
            stopped[trial] = milestone
        alive = ranked[:keep]
        waiting_for = keep
    return stopped


class SynchronousHalving(FIFOScheduler):
    """:func:`verdicts` as a Tune scheduler over ``trials`` trials, minimising the Tuner's metric per epoch
    (``result["epoch"]`` is 0-based)."""

    def __init__(self, *, trials: int, max_t: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        self.trials, self.reduction_factor = trials, reduction_factor
        self.milestones = rungs(grace_period, reduction_factor, max_t)
        self.histories: dict[str, dict[int, float]] = defaultdict(dict)
        self.failed: set[str] = set()

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.failed.add(trial.trial_id)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        done = int(result["epoch"]) + 1
        if done in self.milestones:
            self.histories[trial.trial_id][done] = float(result[self.metric])
        unscored = len(self.failed - set(self.histories))  # failed before the first rung: not waited for
        stopped = verdicts(
            self.histories, self.milestones, self.reduction_factor, expected=self.trials - unscored
        )
        return TrialScheduler.STOP if trial.trial_id in stopped else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"Synchronous successive halving at epochs {self.milestones}."
