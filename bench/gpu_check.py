"""One prepared GPU check (``make gpu-check``): the GPU rows of bench/RESULTS.md, a train-stage fault drill
and the serving bench, printed as ONE table, in under 8 minutes on one GPU.

Rows: the training-step and inference ratios with AMP and the images/s of ResANN-56 and ResANN-110
(``bench_train_step``, ``bench_inference``), the reader against training consumption
(``bench_reader_vs_train``), the train stage on digits (2 epochs, AMP, one EANN member) through a worker
fault at epoch 1 that Ray Train recovers from by resuming the epoch-0 checkpoint on the device, and
``bench_serving`` (the serving issue's targets, met or missed: a MISSED target is a result, not a failure).
``DEVICE=cpu`` runs the same steps at tiny sizes (``tests/test_gpu_check.py``), so the script cannot rot.
Progress goes to stderr; the table alone to stdout. Exit code 1 when any row failed.

    DEVICE=cuda python -m bench.gpu_check        # or: make gpu-check
    DEVICE=cpu python -m bench.gpu_check         # tiny sizes
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("cuda", "cpu")
FAULT_EPOCH = 1
# What each device runs: bench name -> its arguments. ResANN-56 is n=9, ResANN-110 n=18.
SIZES: dict[str, dict[str, list[list[str]]]] = {
    "cuda": {
        "bench_train_step": [
            ["--n", n, "--batch", "128", "--steps", "10", "--strategies", "sieve", "--repeats", "5"]
            for n in ("9", "18")
        ],
        "bench_inference": [
            ["--n", n, "--batch", "256", "--number", "10", "--repeats", "5"] for n in ("9", "18")
        ],
        "bench_reader_vs_train": [
            ["--n", "18", "--batch", "128", "--steps", "20", "--images", "16384", "--repeats", "5"]
        ],
    },
    "cpu": {
        "bench_train_step": [
            ["--n", "1", "--c", "4", "--batch", "8", "--steps", "1", "--strategies", "sieve"]
        ],
        "bench_inference": [["--n", "1", "--c", "4", "--batch", "8", "--number", "1"]],
        "bench_reader_vs_train": [
            ["--n", "1", "--c", "4", "--batch", "8", "--steps", "1", "--images", "256"]
        ],
    },
}
CPU_REPEATS = ["--repeats", "1"]
# bench_serving's members and load: its defaults on the GPU, tiny members and 0.2 s per cell on CPU.
SERVING = {
    "cuda": ["--nice", "0"],
    "cpu": [
        *("--depths", "1", "2", "--width", "4", "--epochs", "1", "--duration", "0.2"),
        *("--overhead-repeats", "3", "--nice", "0"),
    ],
}
SERVING_LINE = re.compile(r"^(p50 alone|MET: |MISSED: )")
# The lines of a bench's output that become rows: ratio lines and the reader's images/s line.
ROW_LINE = re.compile(
    r"^(train step sieve/plain|inference all-heads/plain|reader images/s|batch reader|# images/s)"
)


@dataclass
class Row:
    check: str
    result: str
    ok: bool = True


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(command: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300):
    log(f"$ {' '.join(command)}")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failure(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return f"FAILED (exit {result.returncode}): {lines[-1] if lines else 'no output'}"


def bench_rows(device: str) -> list[Row]:
    rows = []
    for script, runs in SIZES[device].items():
        for args in runs:
            args = [*args, "--device", device, *(CPU_REPEATS if device == "cpu" else [])]
            label = f"{script} {' '.join(args)}"
            try:
                result = run([sys.executable, "-m", f"bench.{script}", *args])
            except subprocess.TimeoutExpired:
                rows.append(Row(label, "FAILED: timed out", ok=False))
                continue
            if result.returncode != 0:
                rows.append(Row(label, failure(result), ok=False))
                continue
            lines = [line.lstrip("# ") for line in result.stdout.splitlines() if ROW_LINE.match(line)]
            rows.append(Row(label, "<br>".join(lines) or "no result lines", ok=bool(lines)))
    return rows


def train_stage_drill(device: str, work: Path) -> Row:
    """The train stage on digits: 2 epochs with AMP, a worker fault at epoch 1, resumed from epoch 0."""
    from anytime.data import materialise_digits, read_dataset, write_shards
    from anytime.record import RECORD_FILE
    from pipelines.live import StageLive
    from pipelines.paths import LIVE_DIR, MEMBERS_DIR

    materialise_digits(work / "raw")
    shards = work / "shards"
    raw = read_dataset("digits", work / "raw")
    write_shards(raw, shards, val_fraction=0.1, seed=0, rows_per_shard=512, row_group_rows=128)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"] |= {
        "shards": str(shards),
        "model": {"name": "resann", "c": 16 if device == "cuda" else 4},
        "eann": {"base": 2, "members": 1, "n0": 1},
        "opt": {"members": []},
        "epochs": 2,
        "amp": True,
        "scaling": {"use_gpu": device == "cuda"},
    }
    project = work / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    marker = work / "fault-fired"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private cluster of its own
    env |= {"ANYTIME_FAULT_EPOCH": str(FAULT_EPOCH), "ANYTIME_FAULT_MARKER": str(marker)}
    label = f"train stage, digits, 2 epochs, AMP, use_gpu={device == 'cuda'}: worker fault at epoch 1, resume"
    start = time.monotonic()
    try:
        result = run([sys.executable, "-m", "pipelines.train"], cwd=project, env=env, timeout=420)
    except subprocess.TimeoutExpired:
        return Row(label, "FAILED: timed out", ok=False)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        return Row(label, failure(result), ok=False)
    frame = StageLive(project / LIVE_DIR).history("m0")
    epochs = sorted(int(e) for e in frame[frame["head"] == 0]["epoch"])
    metrics = project / MEMBERS_DIR / "m0" / RECORD_FILE
    ok = marker.exists() and epochs == [0, 1] and metrics.exists()
    final = frame[frame["epoch"] == 1]["val_error"].iloc[-1] if ok else float("nan")
    result_text = (
        f"fault fired: {marker.exists()}; epochs logged {epochs}; outputs: {metrics.exists()}; "
        f"final-head val error {final:.3f}; {seconds:.0f}s"
    )
    return Row(label, ("ok: " if ok else "FAILED: ") + result_text, ok=ok)


def serving_row(device: str) -> Row:
    """``bench_serving`` over HTTP (the server takes the GPU when torch sees one): its capacity line and
    the serving issue's targets, each met or missed."""
    args = SERVING[device]
    label = f"bench_serving {' '.join(args)}"
    try:
        result = run([sys.executable, "-m", "bench.bench_serving", *args], timeout=600)
    except subprocess.TimeoutExpired:
        return Row(label, "FAILED: timed out", ok=False)
    if result.returncode != 0:
        return Row(label, failure(result), ok=False)
    lines = [line for line in result.stdout.splitlines() if SERVING_LINE.match(line)]
    return Row(label, "<br>".join(lines) or "no result lines", ok=bool(lines))


def table(rows: list[Row], header: str) -> str:
    out = [header, "", "| check | result |", "|---|---|"]
    out += [f"| {row.check} | {row.result.replace('|', '/')} |" for row in rows]
    return "\n".join(out)


def main() -> None:
    device = os.environ.get("DEVICE", "cuda")
    if device not in DEVICES:
        sys.exit(f"error: DEVICE={device!r} is invalid: use one of {', '.join(DEVICES)}")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: DEVICE=cuda but torch sees no CUDA device (DEVICE=cpu runs the check at tiny sizes)")
    where = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (tiny sizes)"
    start = time.monotonic()
    rows = bench_rows(device)
    with tempfile.TemporaryDirectory(prefix="anytime-gpu-check-") as tmp:
        rows.append(train_stage_drill(device, Path(tmp)))
    rows.append(serving_row(device))
    header = f"gpu-check on {where}, torch {torch.__version__}, {time.monotonic() - start:.0f}s"
    print(table(rows, header))
    sys.exit(0 if all(row.ok for row in rows) else 1)


if __name__ == "__main__":
    main()
