"""Driver-side dvclive logging of every run's per-epoch metrics, one directory for the whole stage.

Workers never write metric files: their reports reach the driver (a Ray queue fed by a Train callback), so
logging works the same on a laptop and on a multi-node cluster. Metrics are namespaced by run
(``<run>/val_top1_final``, ``<run>/val_top1/head<k>``) and the step is the epoch; runs the stage does not
re-train keep their history, and a resumed run continues its own.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dvclive import Live

from pipelines.paths import LIVE_DIR

SCALARS = ("val_top1_final", "val_auc", "loss")
PER_HEAD = ("val_top1", "head_losses")


class StageLive:
    """One ``dvclive.Live`` shared by all runs; call only from the driver's main thread."""

    def __init__(self, directory: Path = LIVE_DIR) -> None:
        self.live = Live(str(directory), resume=True, save_dvc_exp=False, dvcyaml=None, report=None)
        self.metrics_dir = Path(self.live.plots_dir) / "metrics"
        self._started: set[str] = set()

    def keep_only(self, runs: Iterable[str]) -> None:
        """Forget runs that are no longer planned (their history and summary entries)."""
        keep = set(runs)
        if self.metrics_dir.is_dir():
            for path in self.metrics_dir.iterdir():
                if path.is_dir() and path.name not in keep:
                    shutil.rmtree(path)
        for key in [k for k in self.live.summary if k not in keep and k != "step"]:
            del self.live.summary[key]
        self.live.make_summary()

    def _truncate(self, run: str, epoch: int) -> None:
        """Drop rows at or after ``epoch``: a fresh run starts at 0, a resumed one where it checkpointed."""
        for tsv in (self.metrics_dir / run).rglob("*.tsv"):
            with tsv.open(newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            kept = [row for row in rows if int(row["step"]) < epoch]
            if not kept:
                tsv.unlink()
                continue
            with tsv.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, list(rows[0]), delimiter="\t", lineterminator="\n")
                writer.writeheader()
                writer.writerows(kept)

    def log_epoch(self, run: str, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        if run not in self._started:
            self._started.add(run)
            self._truncate(run, epoch)
        self.live.step = epoch
        for key in SCALARS:
            if key in metrics:
                self.live.log_metric(f"{run}/{key}", float(metrics[key]), timestamp=True)
        for key in PER_HEAD:
            for head, value in enumerate(metrics.get(key, [])):
                self.live.log_metric(f"{run}/{key}/head{head}", float(value), timestamp=True)
        self.live.make_summary()

    def log_final(self, run: str, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.live.log_metric(f"{run}/{key}", float(value), plot=False)
        self.live.make_summary()

    def epochs_logged(self, run: str) -> list[int]:
        """Steps in the run's ``val_top1_final`` history, in file order (tests check none repeats)."""
        path = self.metrics_dir / run / "val_top1_final.tsv"
        if not path.exists():
            return []
        with path.open(newline="") as fh:
            return [int(row["step"]) for row in csv.DictReader(fh, delimiter="\t")]
