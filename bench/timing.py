"""Shared timing helpers for the bench scripts.

Every benchmark reports a *ratio* measured within one run (anytime vs the plain-PyTorch equivalent),
because absolute times on shared machines drift with load. Each repeat times the baseline and every
candidate once, in a rotated order so no candidate always runs right after the baseline, and the ratio is
formed inside that repeat; the printed value is the median over repeats, which shrugs off the repeats a
neighbour's job disturbed.

Clocks: on CUDA, wall time read after synchronising the device. On CPU the default is this process's CPU
time (user + system, all its threads), which counts the work done rather than the time spent waiting for a
core on an oversubscribed machine; ``--clock wall`` measures latency instead (use it on a quiet machine, or
when work happens in other processes, e.g. DataLoader workers, which the CPU clock does not see).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.benchmark.utils.timer import timer as synced_wall_clock

BASELINE = "__baseline__"
CLOCKS = {"cpu": time.process_time, "wall": synced_wall_clock}


def bench_parser(
    description: str, *, repeats: int = 5, clocks: tuple[str, ...] = ("auto", *CLOCKS)
) -> argparse.ArgumentParser:
    """The flags every bench script shares: device, repeats, threads, clock (the first of ``clocks`` by
    default; a script whose work runs in other processes allows only ``("wall",)``), seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=repeats, help="ratios are medians over this many repeats"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 keeps shared 2-core machines comparable)",
    )
    parser.add_argument(
        "--clock",
        choices=clocks,
        default=clocks[0],
        help="auto: process CPU time on --device cpu, synchronised wall time on cuda",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def add_compile_flag(
    parser: argparse.ArgumentParser,
    help: str = "torch.compile the networks in place; the first, untimed warm-up call compiles",
) -> None:
    """``--compile``, for every script that trains or infers: eager and compiled costs differ most for the
    heads (bench/RESULTS.md), so each script can measure both."""
    parser.add_argument("--compile", action="store_true", help=help)


@dataclass(frozen=True)
class Bench:
    """What a script times on and with: the device, the clock and the number of repeats."""

    device: torch.device
    clock_name: str
    repeats: int
    threads: int

    def header(self) -> str:
        """One line naming what the numbers were measured on, to paste into RESULTS.md beside them."""
        if self.device.type == "cuda":
            where = torch.cuda.get_device_name(self.device)
        else:
            where = f"cpu, {self.threads} torch thread(s)"
        return f"# torch {torch.__version__}, {where}, {self.clock_name} clock, repeats={self.repeats}"

    def seconds_per_call(self, fn: Callable[[], object], *, number: int, warmup: int) -> float:
        """Mean seconds of ``fn()`` over ``number`` calls, after ``warmup`` untimed calls.

        The wall clock is torch.utils.benchmark's, which synchronises the accelerator before reading the
        time, so CUDA kernels that ``fn`` queues are counted. (``Timer.timeit`` itself always spends two or
        more warm-up calls per measurement, too many for second-long training steps on two shared cores.)
        The warm-up call matters when measurements are interleaved: it refills caches and the allocator
        after the previous model ran.
        """
        clock = CLOCKS[self.clock_name]
        for _ in range(warmup):
            fn()
        start = clock()
        for _ in range(number):
            fn()
        return (clock() - start) / number

    def interleaved_ratios(
        self,
        baseline: Callable[[], object],
        candidates: Mapping[Any, Callable[[], object]],
        *,
        number: int,
        warmup: int = 1,
    ) -> tuple[dict[Any, list[float]], list[float]]:
        """Per-repeat ratios time(candidate) / time(baseline), and the baseline's seconds per call."""
        names = [BASELINE, *candidates]
        ratios: dict[Any, list[float]] = {name: [] for name in candidates}
        baseline_seconds: list[float] = []
        for repeat in range(self.repeats):
            shift = repeat % len(names)
            seconds = {}
            for name in names[shift:] + names[:shift]:
                fn = baseline if name == BASELINE else candidates[name]
                seconds[name] = self.seconds_per_call(fn, number=number, warmup=warmup)
            baseline_seconds.append(seconds[BASELINE])
            for name in candidates:
                ratios[name].append(seconds[name] / seconds[BASELINE])
        return ratios, baseline_seconds


def setup(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Bench:
    """Validate the shared flags (one ``error:`` line and exit 2 when wrong), fix threads and seed."""
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.device == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu cannot time CUDA kernels: use --clock wall (or auto) with --device cuda")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    clock = args.clock if args.clock != "auto" else ("wall" if args.device == "cuda" else "cpu")
    return Bench(torch.device(args.device), clock, args.repeats, args.threads)


def ratio_line(name: str, values: list[float], *, target: str | None = None, note: str = "") -> str:
    """``name: ratio (median of N)``, with the target and whether the median meets it when one is given."""
    median = statistics.median(values)
    line = f"{name}: {median:.3f} (median of {len(values)})"
    if target is not None:
        op, bound = target.split()
        met = median <= float(bound) if op == "<=" else median >= float(bound)
        line += f"  target {target}: {'met' if met else 'NOT met'}"
    if note:
        line += f"  {note}"
    return line
