"""Queue and run the reproduction's experiments with DVC (``dvc exp run --queue``, then ``dvc queue start``).

    python -m experiments.run [--size cpu|full] [--kind weighting|eann ...] [--jobs N] [--dry-run]

Experiments that already exist (by name) are not queued again, so a stopped run picks up where it left
off. Progress is the queue draining; each experiment's own log is ``dvc queue logs <name>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from tqdm.auto import tqdm

from experiments.sets import SIZES, Experiment, experiment_set, set_args

POLL_S = 20


def dvc(*args: str) -> str:
    """Run ``dvc`` and return its stdout; a failure is one line naming the command."""
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: dvc {' '.join(args[:3])} ...: {message}")
    return result.stdout


def queue_states() -> dict[str, str]:
    """``dvc queue status`` as {experiment name: Queued | Running | Success | Failed}."""
    rows = [line.split() for line in dvc("queue", "status").splitlines()[1:]]
    return {row[1]: row[-1] for row in rows if len(row) >= 4 and row[0] != "Worker"}


def existing_names() -> set[str]:
    """Experiments that are done (any baseline) or waiting in the queue; failed ones are run again."""
    done = set(dvc("exp", "list", "--all-commits", "--name-only").split())
    waiting = {name for name, state in queue_states().items() if state in ("Queued", "Running")}
    return done | waiting


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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    experiments = experiment_set(args.size, tuple(args.kind or ("weighting", "eann")))
    if args.dry_run:
        for e in experiments:
            print(" ".join(["dvc", "exp", "run", "--queue", "-n", e.name, *set_args(e), e.target]))
        return
    done = existing_names()
    todo = [e for e in experiments if e.name not in done]
    print(
        f"experiments: {len(experiments)} in set, {len(experiments) - len(todo)} exist, {len(todo)} to go"
    )
    for experiment in todo:
        queue(experiment)
    if not todo:
        return
    started = time.monotonic()
    dvc("queue", "start", "--jobs", str(args.jobs))
    with tqdm(total=len(todo), unit="exp", desc="experiments") as bar:
        while (left := pending({e.name for e in todo})) > 0:
            bar.n = len(todo) - left
            bar.refresh()
            time.sleep(POLL_S)
        bar.n = len(todo)
    failed = [
        name for name, state in queue_states().items() if name in {e.name for e in todo} and state == "Failed"
    ]
    print(f"experiments: ran {len(todo)} in {(time.monotonic() - started) / 60:.1f} min")
    if failed:
        print(
            "error: failed experiments (see `dvc queue logs <name>`):\n" + "\n".join(failed), file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
