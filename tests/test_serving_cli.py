"""``python -m serving`` refuses bad input in one line, exit code 2, before any Ray cluster starts."""

import subprocess
import sys
from pathlib import Path

from serving import parse_args

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_documented_ones():
    args = parse_args([])
    assert (args.outputs, args.host, args.port, args.name, args.address) == (
        "outputs",
        "127.0.0.1",
        8000,
        "anytime",
        None,
    )


def test_no_trained_members_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--outputs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'members'}: no trained member (record.json) to serve: run the train stage first"
    ]
    assert not list(tmp_path.iterdir())  # nothing written, no cluster started in it
