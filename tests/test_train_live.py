"""Driver-side dvclive history: a resumed run continues its own history, forgotten runs disappear."""

from __future__ import annotations

import json

from pipelines.live import StageLive


def report(epoch: int, err: float) -> dict:
    return {"epoch": epoch, "val_top1_final": err, "val_auc": err, "loss": 1.0, "val_top1": [0.9, err]}


def test_history_per_run_survives_sessions_and_resumes_at_the_reported_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    live = StageLive(tmp_path / "live")
    for epoch in range(3):
        live.log_epoch("a", report(epoch, 0.5 - 0.1 * epoch))
        live.log_epoch("b", report(epoch, 0.4))
    assert live.epochs_logged("a") == [0, 1, 2]

    again = StageLive(tmp_path / "live")  # a later session: "a" resumes after its epoch-0 checkpoint
    again.log_epoch("a", report(1, 0.2))
    again.log_epoch("a", report(2, 0.1))
    assert again.epochs_logged("a") == [0, 1, 2]
    assert again.epochs_logged("b") == [0, 1, 2]
    head1 = (tmp_path / "live/plots/metrics/a/val_top1/head1.tsv").read_text().splitlines()
    assert [row.split("\t")[1:] for row in head1[1:]] == [["0", "0.5"], ["1", "0.2"], ["2", "0.1"]]

    fresh = StageLive(tmp_path / "live")  # "a" retrained from scratch, "b" dropped from params
    fresh.keep_only(["a"])
    fresh.log_epoch("a", report(0, 0.3))
    fresh.log_final("a", {"test_top1_final": 0.25})
    assert fresh.epochs_logged("a") == [0]
    assert fresh.epochs_logged("b") == []
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert "b" not in summary
    assert summary["a"]["val_top1_final"] == 0.3 and summary["a"]["test_top1_final"] == 0.25
