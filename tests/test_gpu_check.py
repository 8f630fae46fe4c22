"""``make gpu-check``'s script runs end to end on CPU at tiny sizes and prints its one table (format and exit
code only: no timing is asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy  # the train stage starts a private Ray cluster and trains a member for 2 epochs
def test_cpu_gpu_check_prints_one_table_of_every_row():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"DEVICE": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("gpu-check on cpu (tiny sizes)")
    assert lines[2:4] == ["| check | result |", "|---|---|"]
    rows = dict(re.fullmatch(r"\| (.+?) \| (.+) \|", line).groups() for line in lines[4:])
    assert len(rows) == len(lines) - 4 == 5, lines  # the only table: nothing else on stdout
    results = list(rows.values())
    assert re.search(r"train step sieve/plain: \d+\.\d+ \(median of 1\).*images/s", results[0])
    assert re.search(r"inference all-heads/plain forward: \d+\.\d+", results[1])
    assert re.search(r"reader images/s / training images/s: \d+\.\d+.*<br>.*batch reader", results[2])
    assert re.search(r"images/s \(cpu clock\): reader \d+", results[2])
    assert results[3].startswith("ok: fault fired: True; epochs logged [0, 1]; outputs: True")
    assert list(rows)[4].startswith("bench_serving --depths 1 2")
    assert re.search(r"^p50 alone .*capacity \d+ req/s<br>(MET|MISSED): ", results[4])
    assert len(re.findall(r"(MET|MISSED): ", results[4])) == 6
