"""Each bench script runs end to end at tiny sizes and prints its ratio lines.

These check that the scripts work (arguments, library calls, output format), not the timings: timing
targets live in bench/ and bench/RESULTS.md, never in tests.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO_LINE = re.compile(r"^(?P<name>[^:]+): (?P<value>\d+\.\d+) \((?:median of (?P<n>\d+)|exact count)\)")


def run_bench(
    script: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ratio_lines(output: str) -> dict[str, tuple[float, int | None]]:
    """``name -> (value, repeats)`` of every ``name: ratio (median of N)`` / ``(exact count)`` line."""
    found = {}
    for line in output.splitlines():
        match = RATIO_LINE.match(line)
        if match:
            n = match["n"]
            found[match["name"]] = (float(match["value"]), int(n) if n else None)
    return found


def checked_ratios(
    script: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, tuple[float, int | None]]:
    result = run_bench(script, *args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ratios = ratio_lines(result.stdout)
    assert ratios, result.stdout
    for name, (value, _) in ratios.items():
        assert math.isfinite(value) and value > 0, f"{name}: {value}"
    return ratios


def test_flops_overhead_lines_for_cifar_and_imagenet_layouts():
    ratios = checked_ratios(
        "bench_flops",
        *("--cifar-n", "1", "--cifar-periods", "1", "3"),
        *("--imagenet", "resann26", "--imagenet-size", "64"),
    )
    names = sorted(ratios)
    assert len(names) == 3
    assert any("resann8 (n=1, c=16, period=1" in n and "K=3" in n for n in names)
    assert any("resann8 (n=1, c=16, period=3" in n and "K=1" in n for n in names)
    assert any(n.startswith("flops all-heads/plain resann26") for n in names)
    for name, (value, repeats) in ratios.items():
        assert repeats is None  # exact counts, not timings
        if "K=1" in name:
            assert value == 1.0  # one head: the anytime network is the plain one
        else:
            assert value > 1.0  # extra heads add their linear layers' FLOPs


def test_inference_prints_all_heads_ratio_and_every_early_exit():
    result = run_bench("bench_inference", "--n", "1", "--batch", "2", "--image-size", "8", "--repeats", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    ratios = ratio_lines(result.stdout)
    assert set(ratios) == {
        "inference all-heads/plain forward",
        "inference forward(until=0)/forward(until=2)",
        "inference forward(until=1)/forward(until=2)",
    }
    assert all(repeats == 2 for _, repeats in ratios.values())
    assert re.search(r"^inference time\(k\)/time\(K\) vs flops.* pearson r: -?\d\.\d{3}", result.stdout, re.M)
    assert re.search(r"forward\(until=0\).*flops ratio 0\.\d{3}", result.stdout)


@pytest.mark.heavy
def test_compiled_inference_compiles_every_early_exit_graph():
    """``--compile`` (shared by the timing scripts): one graph per ``forward(until=k)``, none falls back."""
    nine_heads = ("--n", "3", "--batch", "4", "--image-size", "8", "--repeats", "1")  # 10 graphs > dynamo's 8
    result = run_bench("bench_inference", "--compile", *nine_heads)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compile=True" in result.stdout
    assert ratio_lines(result.stdout)
    assert "recompile_limit" not in result.stderr


def test_train_step_ratio_for_each_strategy():
    strategies = ("sieve", "alternating:scheme=sieve", "adaloss:update_period=1", "rwm")
    ratios = checked_ratios(
        "bench_train_step",
        *("--n", "1", "--batch", "4", "--image-size", "8", "--steps", "1", "--repeats", "2"),
        *("--strategies", *strategies),
    )
    assert set(ratios) == {
        "train step sieve/plain",
        "train step alternating scheme=sieve/plain",
        "train step adaloss update_period=1/plain",
        "train step rwm/plain",
        "train step library loop on the one-head net/plain",
    }
    assert all(repeats == 2 for _, repeats in ratios.values())


def test_reader_vs_training_ratio():
    ratios = checked_ratios(
        "bench_reader_vs_train",
        *("--n", "1", "--batch", "8", "--images", "64", "--steps", "1", "--repeats", "2"),
    )
    assert set(ratios) == {
        "reader images/s / training images/s",
        "batch reader images/s / per-sample reader images/s",
    }


def test_reader_bench_runs():
    result = subprocess.run(
        [sys.executable, "bench/bench_reader.py", "--images", "256", "--repeats", "1", "--batch-size", "32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^ratio reader/baseline:\s+\d+\.\d+", result.stdout, re.M), result.stdout


@pytest.mark.heavy
def test_parallel_members_on_a_named_cluster(ray_head):
    """One member: both timed paths run (each Ray Train fit costs ~20 s of start-up on 2 cores), on the
    session's cluster (``--address``, as on the multi-node one)."""
    ratios = checked_ratios(
        "bench_parallel_members",
        *("--members", "1", "--samples", "64", "--image-size", "8", "--batch", "16"),
        *("--repeats", "1", "--no-warmup", "--address", ray_head.address),
        env=ray_head.env,
    )
    assert set(ratios) == {"members parallel/sequential wall time (1 members)"}


@pytest.mark.heavy
def test_serving_bench_prints_every_policy_and_load_and_the_targets(tmp_path):
    """Tiny members, a fraction of a second per cell: the table, the PNG and one line per target."""
    plot = tmp_path / "serving.png"
    args = ("--depths", "1", "2", "--width", "4", "--epochs", "1", "--duration", "0.2")
    result = run_bench("bench_serving", *args, "--overhead-repeats", "3", "--nice", "0", "--plot", str(plot))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line
        for line in result.stdout.splitlines()
        if re.match(r"\| (anytime|full|early|confidence) \|", line)
    ]
    assert len(rows) == 4 * 5 and plot.stat().st_size > 0
    assert len(re.findall(r"^(MET|MISSED): ", result.stdout, re.M)) == 6


@pytest.mark.parametrize(
    "script", ["bench_train_step", "bench_inference", "bench_reader_vs_train", "bench_parallel_members"]
)
def test_every_script_that_trains_or_infers_takes_compile(script):
    result = run_bench(script, "--help", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--compile" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--repeats", "0"), "error: --repeats must be >= 1, got 0"),
        (("--strategies", "nosuch"), "error: --strategies: weighting strategy 'nosuch' is unknown"),
    ],
)
def test_bad_arguments_fail_with_one_error_line(args, message):
    result = run_bench("bench_train_step", *args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert result.stdout == ""


def test_shard_validation_cost_lines_for_each_dataset_kind():
    ratios = checked_ratios(
        "bench_shard", "--repeats", "1", "--idx-images", "120", "--images", "20", "--side", "32"
    )
    assert sorted(ratios) == [f"shard {d} validated/plain" for d in ("digits", "imagefolder", "mnist")]
