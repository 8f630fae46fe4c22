"""Driver-side history of every run's training, one directory for the whole stage (``outputs/live``).

Workers never write here: their per-epoch reports reach the driver (a Ray queue fed by a Train callback), so
logging works the same on a laptop and on a multi-node cluster. The files are small and tracked by Git
(``cache: false`` in dvc.yaml), so ``dvc plots diff`` and ``dvc metrics diff --targets`` read them at any
revision:

- ``history/<run>.tsv``: one row per epoch and head (:data:`COLUMNS`); dvc.yaml draws one plot per run with
  a series per head (template ``.dvc/plots/heads.json``).
- ``metrics.json``: a handful of numbers per run: the latest epoch's validation error and AUC while it
  trains, then its test error (final head, and at each cost milestone for members) and test AUC.

The history is keyed by the run's fingerprint (config + data + code,
:class:`pipelines.training.run_plan.PlannedRun`): a resumed run continues its rows, an epoch reported again
(a retry from the last checkpoint) replaces its rows, and a new fingerprint starts afresh. Each report also
carries the earlier epochs its checkpoint holds (``history``): an epoch whose report a killed driver never
logged is filled in on resume. So a run's file always holds exactly the rows of
one uninterrupted run of its current configuration, whatever was killed and resumed before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from anytime.integrity import CorruptFileError
from pipelines.io import atomic_path, write_json
from pipelines.paths import LIVE_DIR

COLUMNS = ("fingerprint", "epoch", "head", "val_error", "train_loss", "timestamp")
FINGERPRINT_CHARS = 12  # as in Run.ray_name


class StageLive:
    """The stage's history and summary; call only from the driver's main thread."""

    def __init__(self, directory: Path = LIVE_DIR) -> None:
        self.history_dir = Path(directory) / "history"
        self.metrics_path = Path(directory) / "metrics.json"
        self.summary: dict[str, dict[str, float]] = {}
        if self.metrics_path.exists():
            try:
                self.summary = dict(json.loads(self.metrics_path.read_text()))
            except (ValueError, TypeError) as exc:
                raise CorruptFileError(
                    f"{self.metrics_path}: not a run summary ({' '.join(str(exc).split())[:80]}): "
                    "move it away to start it afresh"
                ) from None

    def history(self, run: str) -> pd.DataFrame:
        """The run's rows in file order (empty when it has none)."""
        path = self.history_dir / f"{run}.tsv"
        if not path.exists():
            return pd.DataFrame(columns=list(COLUMNS))
        try:
            frame = pd.read_csv(path, sep="\t", dtype={"fingerprint": str})
            if tuple(frame.columns) != COLUMNS:
                raise ValueError(f"columns {', '.join(map(str, frame.columns))[:80]}")
            frame[["epoch", "head"]].astype(int)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise CorruptFileError(
                f"{path}: not a history table ({' '.join(str(exc).split())[:80]}): move it away to start "
                f"{run}'s history afresh"
            ) from None
        return frame

    def epochs_logged(self, run: str) -> list[int]:
        """Epochs of the run's head-0 rows in file order (tests check that none repeats)."""
        frame = self.history(run)
        return [int(epoch) for epoch in frame.loc[frame["head"] == 0, "epoch"]]

    def keep_only(self, planned: Mapping[str, str]) -> None:
        """Keep the history and summary of planned runs (name -> fingerprint) whose rows are of that
        fingerprint; forget the rest (runs dropped from params, or left by another configuration)."""
        if self.history_dir.is_dir():
            for path in self.history_dir.glob("*.tsv"):
                fingerprints = set(self.history(path.stem)["fingerprint"])
                wanted = planned.get(path.stem, "")[:FINGERPRINT_CHARS]
                if fingerprints != {wanted}:
                    path.unlink()
                    self.summary.pop(path.stem, None)
        self.summary = {run: values for run, values in self.summary.items() if run in planned}
        self._write_summary()

    def log_epoch(self, run: str, fingerprint: str, metrics: Mapping[str, Any]) -> None:
        """Record one epoch, and earlier ones of its ``history`` that were never logged: replaces rows of
        this epoch and later, and every row of another fingerprint."""
        key, epoch = fingerprint[:FINGERPRINT_CHARS], int(metrics["epoch"])
        previous = self.history(run)
        kept = previous[(previous["fingerprint"] == key) & (previous["epoch"] < epoch)]
        logged = set(kept["epoch"])
        missing = [r for r in metrics.get("history", []) if r["epoch"] < epoch and r["epoch"] not in logged]
        frames = [
            frame for frame in (kept, *(_epoch_rows(key, r) for r in [*missing, metrics])) if not frame.empty
        ]
        with atomic_path(self.history_dir / f"{run}.tsv") as tmp:
            frame = pd.concat(frames, ignore_index=True).sort_values(["epoch", "head"], kind="stable")
            frame.to_csv(tmp, sep="\t", index=False)
        self.summary[run] = {
            "val_error": float(metrics["val_top1_final"]),
            "val_auc": float(metrics["val_auc"]),
        }
        self._write_summary()

    def log_final(self, run: str, summary: Mapping[str, float]) -> None:
        """A finished run's summary replaces its per-epoch one."""
        self.summary[run] = {key: float(value) for key, value in summary.items()}
        self._write_summary()

    def _write_summary(self) -> None:
        write_json(self.metrics_path, self.summary)


def _epoch_rows(fingerprint: str, record: Mapping[str, Any]) -> pd.DataFrame:
    """One epoch's rows, one per head; stamped when the worker finished it (else now)."""
    errors, losses = record["val_top1"], record["head_losses"]
    return pd.DataFrame(
        {
            "fingerprint": fingerprint,
            "epoch": int(record["epoch"]),
            "head": range(len(errors)),
            "val_error": [float(e) for e in errors],
            "train_loss": [float(loss) for loss in losses],
            "timestamp": int(record.get("time_ms", time.time() * 1000)),
        },
        columns=list(COLUMNS),
    )
