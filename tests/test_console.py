"""The pipeline as ``make repro`` runs it (``dvc repro`` in a fresh copy, each Ray stage on its own private
cluster), twice: what it prints, what it listens on, and whether it repeats itself.

One module-scoped pair of runs serves every check (each costs two Ray clusters and a search):

- ``dvc repro`` with stdout a pipe: the console holds to a budget (no Ray process output, no
  ``TrainingReport(`` dumps, no Tune tables, a few dozen lines), while every process the stages start
  listens on loopback only, torch's process-group store included;
- ``dvc repro -f`` on a pseudo-terminal, without the train runs and the search of the first: the progress
  bars redraw in place;
- both give the same train metrics and the same tune result (synchronous halving, fixed seeds).
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from tests.fixtures.dvc_project import copy_project, sh, tiny_params, user_env
from tests.fixtures.ray_cluster import LOOPBACK, listeners

MAX_LINES = 80  # the whole pipeline, after the install, on a pipe
RAY_NOISE = (  # what Ray prints that the stages keep in their logs
    "raylet",
    "gcs_server",
    "core_worker",
    "TrainingReport(",
    "Checkpoint successfully created",
    "(RayTrainWorker",
    "(TrainController",
    "Trial status",
    "Current best trial",
    "╭",
)
RESULTS = (  # what a run decides: every member's metrics, the search's table and winner
    "outputs/members/a/record.json",
    "outputs/members/b/record.json",
    "outputs/tune/trials.csv",
    "outputs/tune/history.csv",
    "outputs/tune/best.json",
    "outputs/tune/best_params.yaml",
)


@dataclass
class SocketWatch:
    """Polls the listening sockets of a process and its descendants until it ends."""

    root: int
    seen: set[tuple[str, str]] = field(default_factory=set)  # (address, process name)

    def run(self) -> None:
        try:
            root = psutil.Process(self.root)
            while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
                family = [root.pid, *(p.pid for p in root.children(recursive=True))]
                self.seen |= {(ip, name) for ip, name, _ in listeners(family)}
                time.sleep(0.5)
        except psutil.NoSuchProcess:
            return


@dataclass
class Runs:
    project: Path
    piped: str  # `dvc repro` on a pipe
    tty: str  # `dvc repro -f` on a pseudo-terminal, as bytes decoded
    listening: set[tuple[str, str]]  # of the first run's processes
    first: dict[str, str]  # RESULTS after each run
    second: dict[str, str]


def results(project: Path) -> dict[str, str]:
    return {name: (project / name).read_text() for name in RESULTS}


def on_a_pipe(project: Path, *command: str) -> tuple[str, set[tuple[str, str]]]:
    process = subprocess.Popen(
        command, cwd=project, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watch = SocketWatch(process.pid)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    output, _ = process.communicate(timeout=900)
    watcher.join(timeout=30)
    assert process.returncode == 0, output[-4000:]
    return output, watch.seen


def on_a_terminal(project: Path, *command: str) -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # rows, columns
    env = user_env() | {"TERM": "xterm"}
    process = subprocess.Popen(command, cwd=project, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=900) == 0, b"".join(chunks)[-4000:].decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    project = tmp_path_factory.mktemp("console") / "project"
    copy_project(project)
    tiny_params(project, [{"name": "a", "n": 1}, {"name": "b", "n": 2}], epochs=2)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"] |= {  # three trials side by side: the rung after epoch 1 keeps one
        "member": "a",
        "epochs": 2,
        "num_samples": 3,
        "max_concurrent_trials": 3,
        "scaling": {"cpus_per_worker": 0.25},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(project, "git", "init", "-q")
    piped, listening = on_a_pipe(project, "dvc", "repro")
    first = results(project)
    # What makes train and tune skip their work when it is done: without it, `-f` re-runs nothing.
    for done in ("ray_results", "outputs/members", "outputs/opt"):
        shutil.rmtree(project / done)
    tty = on_a_terminal(project, "dvc", "repro", "-f")
    return Runs(project, piped, tty, listening, first, results(project))


@pytest.mark.heavy
def test_the_console_says_what_happens_in_a_few_lines(runs: Runs):
    lines = runs.piped.splitlines()
    assert len(lines) <= MAX_LINES, runs.piped
    noise = [line for line in lines if any(word in line for word in RAY_NOISE)]
    assert not noise, "\n".join(noise)
    for said in (
        "train: 2 runs planned, 0 up to date, 2 to train",
        "train: Ray's output goes to outputs/logs/train.log",
        "train: 2 of 2 runs done",
        "tune: 3 random sample(s) of 2 epoch(s), scheduler halving",
        "tune: best of 3 trials is trial-",
    ):
        assert said in runs.piped
    assert "\r" not in runs.piped  # no bars on a pipe: a line per finished run instead
    logs = runs.project / "outputs/logs"
    assert "TrainingReport(" in (logs / "train.log").read_text()  # kept, where the console line says
    assert "Trial status" in (logs / "tune.log").read_text()


@pytest.mark.heavy
def test_on_a_terminal_the_bars_redraw_in_place(runs: Runs):
    redraws = [part for part in runs.tty.split("\r") if "|" in part and "epoch" in part]
    assert len(redraws) >= 2, runs.tty  # a run's bar drawn, then drawn again over itself
    assert any("trial" in part and "|" in part for part in runs.tty.split("\r"))  # the search's bar
    lines = runs.tty.replace("\r\n", "\n").split("\n")
    assert len(lines) <= MAX_LINES, runs.tty
    assert not [line for line in lines if any(word in line for word in RAY_NOISE)]


@pytest.mark.heavy
def test_a_forced_rerun_gives_the_same_metrics_and_the_same_winner(runs: Runs):
    for name in RESULTS:
        assert runs.second[name] == runs.first[name], name


@pytest.mark.heavy
def test_every_process_of_the_stages_listens_on_loopback_only(runs: Runs):
    names = {name for _, name in runs.listening}
    assert any("RayTrainWorker" in name for name in names), names  # the process group's store was seen
    exposed = sorted((ip, name) for ip, name in runs.listening if ip not in LOOPBACK)
    assert not exposed, exposed
