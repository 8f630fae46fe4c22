"""Driver-side history keyed by fingerprint: after any kill and resume, a run's file holds exactly the rows of
one uninterrupted run of its current configuration; forgotten runs disappear."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from anytime.metrics import anytime_auc
from pipelines.live import StageLive
from pipelines.train import final_summary
from pipelines.training.run_plan import PlannedRun
from tests.fixtures.records import make_record

HEADS = 3
EPOCHS = 4


def record(fingerprint: str, epoch: int) -> dict:
    """One epoch as the worker checkpoints it; depends on configuration and epoch only, like a seeded run."""
    seed = int(fingerprint, 16) % 97
    errors = [round(0.9 - 0.01 * seed - 0.1 * epoch - 0.05 * head, 6) for head in range(HEADS)]
    return {
        "epoch": epoch,
        "val_top1": errors,
        "head_losses": [2.0 - 0.1 * epoch] * HEADS,
        "time_ms": 1_000_000 + 1_000 * epoch + seed,
    }


def report(fingerprint: str, epoch: int) -> dict:
    """What the worker reports: the epoch's record, summary numbers, and the checkpointed earlier records."""
    current = record(fingerprint, epoch)
    return current | {
        "val_top1_final": current["val_top1"][-1],
        "val_auc": sum(current["val_top1"]) / HEADS,
        "loss": 1.0,
        "history": [record(fingerprint, earlier) for earlier in range(epoch)],
    }


def rows(live: StageLive, run: str) -> list[tuple]:
    """The history without its timestamps: what an uninterrupted run of the same config reproduces."""
    frame = live.history(run).drop(columns="timestamp")
    return [tuple(row) for row in frame.itertuples(index=False)]


def uninterrupted(directory: Path, run: str, fingerprint: str, epochs: int) -> list[tuple]:
    live = StageLive(directory)
    for epoch in range(epochs):
        live.log_epoch(run, fingerprint, report(fingerprint, epoch))
    return rows(live, run)


FP = {seed: f"{seed:02d}" + "ab" * 31 for seed in (1, 3, 4)}  # 64 hex digits, like a sha256


def test_runs_killed_under_other_configurations_leave_no_rows(tmp_path: Path):
    # The history: epoch 0 of a seed=1 run, epochs 0-2 of seed=3 (killed, resumed at 1), then seed=4.
    live = StageLive(tmp_path / "live")
    live.log_epoch("m0", FP[1], report(FP[1], 0))
    live = StageLive(tmp_path / "live")
    for epoch in range(2):
        live.log_epoch("m0", FP[3], report(FP[3], epoch))
    live = StageLive(tmp_path / "live")  # resumed from the epoch-0 checkpoint: epoch 1 is reported again
    for epoch in (1, 2):
        live.log_epoch("m0", FP[3], report(FP[3], epoch))
    assert live.epochs_logged("m0") == [0, 1, 2]
    assert rows(live, "m0") == uninterrupted(tmp_path / "ref3", "m0", FP[3], 3)

    live = StageLive(tmp_path / "live")  # seed=4: a new fingerprint starts afresh, whatever it reports first
    live.log_epoch("m0", FP[4], report(FP[4], 1))
    assert set(live.history("m0")["fingerprint"]) == {FP[4][:12]} and live.epochs_logged("m0") == [0, 1]
    for epoch in range(4):
        live.log_epoch("m0", FP[4], report(FP[4], epoch))
    assert live.epochs_logged("m0") == [0, 1, 2, 3]
    assert rows(live, "m0") == uninterrupted(tmp_path / "ref4", "m0", FP[4], 4)
    assert live.history("m0")["head"].tolist() == [0, 1, 2] * 4


def test_an_epoch_the_killed_driver_never_logged_comes_back_from_the_checkpoint(tmp_path: Path):
    # The driver logged epoch 0 and was killed after the worker checkpointed epoch 1, before logging its
    # report; the re-run resumes at epoch 2, whose report carries the checkpoint's records of epochs 0-1.
    live = StageLive(tmp_path / "live")
    live.log_epoch("m0", FP[1], report(FP[1], 0))
    live = StageLive(tmp_path / "live")
    live.log_epoch("m0", FP[1], report(FP[1], 2))
    assert live.epochs_logged("m0") == [0, 1, 2]
    assert rows(live, "m0") == uninterrupted(tmp_path / "ref", "m0", FP[1], 3)
    stamps = live.history("m0").groupby("epoch")["timestamp"].first().tolist()
    assert stamps == [record(FP[1], epoch)["time_ms"] for epoch in range(3)]  # when the worker finished each


@settings(max_examples=25, deadline=None)
@given(
    sessions=st.lists(
        st.tuples(st.sampled_from(sorted(FP)), st.integers(0, 3), st.integers(0, 4), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_any_kill_and_resume_sequence_ends_with_the_uninterrupted_rows(sessions):
    """Each session trains one configuration from a checkpoint at or before its last logged epoch (a
    retry re-reports epochs) and is killed after some reports, perhaps after the last epoch's checkpoint
    but before the driver logged its report (``lost``); the last session runs to the end."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "live"
        logged: dict[str, int] = {}  # fingerprint -> next epoch its checkpoints would resume at
        for seed, rewind, reports, lost in sessions:
            fingerprint = FP[seed]
            live = StageLive(directory)
            start = max(0, logged.get(fingerprint, 0) - rewind)
            end = min(start + reports, EPOCHS)
            for epoch in range(start, end - 1 if lost else end):
                live.log_epoch("m0", fingerprint, report(fingerprint, epoch))
            logged = {fingerprint: end}  # another configuration's checkpoints are not resumed
        final = sessions[-1][0]
        live = StageLive(directory)
        for epoch in range(logged[FP[final]], EPOCHS):
            live.log_epoch("m0", FP[final], report(FP[final], epoch))
        live.log_epoch("m0", FP[final], report(FP[final], EPOCHS - 1))  # the stage logs the run's result
        assert live.epochs_logged("m0") == list(range(EPOCHS))
        assert rows(live, "m0") == uninterrupted(Path(tmp) / "ref", "m0", FP[final], EPOCHS)


def test_keep_only_forgets_unplanned_runs_and_other_configurations(tmp_path: Path):
    live = StageLive(tmp_path / "live")
    for run, seed in (("a", 1), ("b", 3), ("c", 4)):
        for epoch in range(2):
            live.log_epoch(run, FP[seed], report(FP[seed], epoch))
    live.log_final("a", {"test_error": 0.25, "test_auc": 0.4})

    again = StageLive(tmp_path / "live")  # next stage: "a" unchanged, "b" now seed 4, "c" dropped from params
    again.keep_only({"a": FP[1], "b": FP[4]})
    assert again.epochs_logged("a") == [0, 1]
    assert again.epochs_logged("b") == [] and again.epochs_logged("c") == []
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary == {"a": {"test_error": 0.25, "test_auc": 0.4}}


def test_summary_is_a_handful_of_numbers_per_run(tmp_path: Path):
    live = StageLive(tmp_path / "live")
    live.log_epoch("a", FP[1], report(FP[1], 0))
    live.log_epoch("b", FP[3], report(FP[3], 0))
    live.log_final("b", {"test_error": 0.2, "test_auc": 0.3, "test_error_50": 0.5})
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["a"] == {
        "val_error": report(FP[1], 0)["val_top1_final"],
        "val_auc": report(FP[1], 0)["val_auc"],
    }
    assert summary["b"] == {"test_error": 0.2, "test_auc": 0.3, "test_error_50": 0.5}  # replaces the val ones
    header = (tmp_path / "live/history/a.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["fingerprint", "epoch", "head", "val_error", "train_loss", "timestamp"]


def test_final_summary_is_test_error_auc_and_milestones_for_members_only():
    record = make_record("m1", [1, 2, 4, 8], [0.9] * 4, [0.9, 0.8, 0.7, 0.6])
    member = final_summary(PlannedRun("m1", "member", {}, FP[1]), record)
    auc = anytime_auc(record.flops, record.test_error)
    # heads within 1/4, 1/2, 3/4 of the final cost (8): costs 2, 4, 4
    assert member == {
        "test_error": 0.6,
        "test_auc": auc,
        "test_error_25": 0.8,
        "test_error_50": 0.7,
        "test_error_75": 0.7,
    }
    assert final_summary(PlannedRun("m1-opt2", "opt", {}, FP[1]), record) == {
        "test_error": 0.6,
        "test_auc": auc,
    }
