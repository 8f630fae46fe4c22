"""Queue and run the reproduction's experiments with DVC (``dvc exp run --queue``, then ``dvc queue start``).

    python -m experiments.run [--size cpu|full] [--kind weighting|eann ...] [--jobs N] [--dry-run]

Experiments that already exist (by name) are not queued again, so a stopped run picks up where it left
off. Progress is the queue draining; each experiment's own log is ``dvc queue logs <name>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from experiments.sets import SIZES, Experiment, experiment_set, set_args
from pipelines.io import write_json

POLL_S = 20


def run_log(size: str) -> Path:
    """Per-size record of when each experiment ran and on what (read by :mod:`experiments.results`)."""
    return Path(f"experiments/log-{size}.json")


def hardware() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


class RunLog:
    """Wall time per experiment, observed from the queue's state changes (to within one poll)."""

    def __init__(self, size: str) -> None:
        self.path = run_log(size)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"experiments": {}}
        self.data["hardware"] = hardware()
        self.started: dict[str, float] = {}

    def observe(self, states: dict[str, str]) -> None:
        for name, state in states.items():
            if state == "Running":
                self.started.setdefault(name, time.monotonic())
            elif state in ("Success", "Failed") and name in self.started:
                minutes = (time.monotonic() - self.started.pop(name)) / 60
                self.data["experiments"][name] = {"state": state, "minutes": round(minutes, 1)}
                write_json(self.path, self.data)


def dvc(*args: str) -> str:
    """Run ``dvc`` and return its stdout; a failure is one line naming the command."""
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: dvc {' '.join(args[:3])} ...: {message}")
    return result.stdout


# A name queued again after a failure has several tasks: the live one, else a success, tells its state.
STATE_RANK = {"Running": 0, "Queued": 1, "Success": 2, "Failed": 3}


def parse_queue_status(text: str) -> dict[str, str]:
    """``dvc queue status`` output as {experiment name: Queued | Running | Success | Failed}."""
    states: dict[str, str] = {}
    for row in (line.split() for line in text.splitlines()[1:]):
        if len(row) >= 4 and row[0] != "Worker" and row[-1] in STATE_RANK:
            name, state = row[1], row[-1]
            if name not in states or STATE_RANK[state] < STATE_RANK[states[name]]:
                states[name] = state
    return states


def queue_states() -> dict[str, str]:
    return parse_queue_status(dvc("queue", "status"))


def finished_names() -> set[str]:
    """Experiments DVC has finished, on any baseline commit."""
    return set(dvc("exp", "list", "--all-commits", "--name-only").split())


def workers_active() -> bool:
    return "Worker status: 0 active" not in dvc("queue", "status")


def queue(experiment: Experiment) -> None:
    dvc("exp", "run", "--queue", "-n", experiment.name, *set_args(experiment), experiment.target)


def pending(names: set[str]) -> int:
    """How many of ``names`` are still queued or running."""
    return sum(
        1 for name, state in queue_states().items() if name in names and state in ("Queued", "Running")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu", help="cpu (laptop) or full (GPUs)")
    parser.add_argument("--kind", action="append", choices=["weighting", "eann"], help="default: both")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands, run nothing")
    return parser.parse_args(argv)


def wait(names: set[str], log: RunLog, jobs: int) -> list[str]:
    """Poll the queue until none of ``names`` is queued or running; return the failed ones.

    DVC's queue workers may exit between two tasks with some still queued (seen with one worker): when two
    polls in a row find nothing running and no worker (one could be a worker still starting), start them
    again rather than wait forever."""
    idle = 0
    with tqdm(total=len(names), unit="exp", desc="experiments") as bar:
        while True:
            states = {name: state for name, state in queue_states().items() if name in names}
            log.observe(states)
            left = sum(1 for state in states.values() if state in ("Queued", "Running"))
            bar.n = len(names) - left
            bar.refresh()
            if not left:
                return [name for name, state in states.items() if state == "Failed"]
            idle = idle + 1 if "Running" not in states.values() and not workers_active() else 0
            if idle == 2:
                dvc("queue", "start", "--jobs", str(jobs))
                idle = 0
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    experiments = experiment_set(args.size, tuple(args.kind or ("weighting", "eann")))
    if args.dry_run:
        for e in experiments:
            print(" ".join(["dvc", "exp", "run", "--queue", "-n", e.name, *set_args(e), e.target]))
        return
    done, states = finished_names(), queue_states()
    todo = [e for e in experiments if e.name not in done]
    waiting = {e.name for e in todo if states.get(e.name) in ("Queued", "Running")}
    print(f"experiments: {len(experiments)} in set, {len(experiments) - len(todo)} done, {len(todo)} to go")
    for experiment in todo:
        if experiment.name not in waiting:
            queue(experiment)
    if not todo:
        return
    started = time.monotonic()
    if not workers_active():
        dvc("queue", "start", "--jobs", str(args.jobs))
    failed = wait({e.name for e in todo}, RunLog(args.size), args.jobs)
    print(f"experiments: ran {len(todo)} in {(time.monotonic() - started) / 60:.1f} min")
    if failed:
        print(
            f"error: failed experiments (see `dvc queue logs <name>`): {', '.join(failed)}", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
