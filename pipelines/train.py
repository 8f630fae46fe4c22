"""DVC stage ``train``: every EANN member and OPT baseline, trained concurrently in one Ray job.

Each run is one Ray Train ``TorchTrainer`` (data-parallel workers when ``train.scaling.num_workers > 1``),
started from its own driver thread so all runs share the cluster at once. Per-epoch reports reach this
driver through a Ray queue and are logged here (``outputs/live``); finished runs are written
atomically to ``outputs/members/<name>/`` or ``outputs/opt/<name>/`` (the format of ``anytime.record``,
whose record holds the run's fingerprint), and runs whose fingerprint still matches are skipped. A killed
stage resumes each unfinished run from its last epoch checkpoint in ``train.storage_path``.

    python -m pipelines.train [--params params.yaml] [--only NAME ...] [--force] [--address ADDR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs
from ray.train import Result
from ray.util.queue import Empty, Queue
from tqdm.auto import tqdm

from anytime.data import load_manifest
from anytime.data.verify import verify_shards
from anytime.integrity import verify_checksums, write_checksums
from anytime.metrics import anytime_auc, head_errors, milestone_heads, reported_topk
from anytime.record import (
    ARRAY_FILES,
    FORMAT_VERSION,
    MODEL_FILE,
    SPLITS,
    DatasetInfo,
    RunRecord,
    load_predictions,
    write_record,
)
from anytime.weighting import eann_first_head
from pipelines import cli, console
from pipelines.config import Params, load_params
from pipelines.config.train import TrainParams
from pipelines.io import atomic_path
from pipelines.live import StageLive
from pipelines.paths import MEMBERS_DIR, OPT_DIR
from pipelines.ray_cluster import (
    NodeLog,
    ReportForwarder,
    driver_queue,
    interrupted,
    scaling_config,
    stage_session,
    storage_uri,
)
from pipelines.training.checkpoints import vet_checkpoints
from pipelines.training.run_plan import PlannedRun, plan_runs, resolve_shards
from pipelines.training.train_worker import FINAL_DIR, FINAL_SUMMARY, build_trainer
from pipelines.workspace import workspace_lock

RESUME_HINT = "re-run to resume every unfinished run from its last epoch"


def run_record(run: PlannedRun, final: Path, dataset: DatasetInfo) -> RunRecord:
    """The run's record (``anytime.record``): errors from the saved probabilities, one source of truth."""
    summary = json.loads((final / FINAL_SUMMARY).read_text())
    errors: dict[str, list[float]] = {}
    for split in SPLITS:
        probs, labels = load_predictions(final, split)
        for key, values in head_errors(probs, labels, reported_topk(probs.shape[2])).items():
            errors[f"{split}_{key}"] = values
    heads = len(summary["flops"])
    return RunRecord(
        format_version=FORMAT_VERSION,
        name=run.name,
        fingerprint=run.fingerprint,
        model=summary["model"],
        weighting=run.config.weighting,
        epochs=run.config.epochs,
        flops=summary["flops"],
        head_units=summary["head_units"],
        val_error=errors.pop("val_top1"),
        test_error=errors.pop("test_top1"),
        untrained_heads=eann_first_head(heads) if run.config.weighting.get("eann", False) else 0,
        dataset=dataset,
        config=run.config.model_dump(mode="json"),
        **errors,
    )


def write_outputs(run: PlannedRun, checkpoint_dir: Path, dataset: DatasetInfo) -> RunRecord:
    """The final checkpoint's files and the run's record, into its output directory in one atomic rename."""
    final = checkpoint_dir / FINAL_DIR
    if not final.is_dir():
        raise RuntimeError(f"run {run.name}: the last checkpoint has no final outputs ({checkpoint_dir})")
    verify_checksums(checkpoint_dir)
    record = run_record(run, final, dataset)
    with atomic_path(run.out_dir) as tmp:
        tmp.mkdir()
        for name in (MODEL_FILE, *ARRAY_FILES):
            shutil.copy2(final / name, tmp / name)
        write_record(tmp, record)
        write_checksums(tmp)
    return record


def final_summary(run: PlannedRun, record: RunRecord) -> dict[str, float]:
    """A finished run's numbers for ``outputs/live/metrics.json``: test error and AUC, and for members the
    error at each cost milestone short of the final head (an OPT baseline: its final head only)."""
    errors = record.test_error
    summary = {"test_error": errors[-1], "test_auc": anytime_auc(record.flops, errors)}
    if run.kind == "member":
        for key, head in milestone_heads(record.flops).items():
            if head is not None and float(key) < 1:
                summary[f"test_error_{round(float(key) * 100)}"] = errors[head]
    return summary


def prune_stale(runs: list[PlannedRun]) -> None:
    """Remove output directories of members/baselines no longer in params (assemble must not see them)."""
    planned = {run.out_dir for run in runs}
    for root in (MEMBERS_DIR, OPT_DIR):
        if root.is_dir():
            for path in root.iterdir():
                if path.is_dir() and not path.name.startswith(".") and path not in planned:
                    shutil.rmtree(path)


def delete_run_storage(storage: str, run: PlannedRun) -> None:
    """A finished run never resumes: free its checkpoints (local directory or object store)."""
    fs, base = pafs.FileSystem.from_uri(storage)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_dir(f"{base.rstrip('/')}/{run.ray_name}")


class ConcurrentTraining:
    """Fits runs side by side, each ``TorchTrainer.fit()`` in its own driver thread; the main thread logs
    their reports as they come and writes each run's outputs as it ends."""

    def __init__(
        self, params: TrainParams, live: StageLive, dataset: DatasetInfo, *, fresh: bool = False
    ) -> None:
        self.params, self.live, self.dataset, self.fresh = params, live, dataset, fresh
        self.storage = storage_uri(params.storage_path)
        self.reports: Queue = driver_queue()
        self.fingerprints: dict[str, str] = {}
        self.bars: dict[str, tqdm] = {}
        self.node_log = NodeLog("train")
        self.done = 0

    def fit(self, run: PlannedRun) -> Result:
        """One run to its end (in a driver thread): from scratch when ``fresh`` (``--force``), else from its
        Ray name's last checkpoint, or from the last intact one when that is damaged."""
        if self.fresh:
            delete_run_storage(self.storage, run)
            resume_from = None
        else:
            resume_from = vet_checkpoints(self.storage, run.ray_name, run.name)
        trainer = build_trainer(
            run.config.model_copy(update={"final_outputs": True, "resume_from": resume_from}),
            name=run.ray_name,
            storage_path=self.storage,
            scaling=scaling_config(run.scaling),
            max_failures=self.params.max_failures,
            callbacks=[ReportForwarder(self.reports, run.name)],
        )
        return trainer.fit()

    def log_reports(self, timeout: float) -> None:
        """Log every report waiting on the queue, waiting up to ``timeout`` seconds for the first."""
        try:
            items = [self.reports.get(timeout=timeout)]
        except Empty:
            return
        while not self.reports.empty():
            items.append(self.reports.get_nowait())
        for name, metrics, failure in items:
            if failure is not None:
                console.warn(
                    f"train: {name}: a worker failed ({failure}); Train restarts its workers from the last "
                    "checkpoint while train.max_failures allows"
                )
                continue
            if self.bars[name].n == 0 and metrics["epoch"] > 0:
                console.say(f"train: {name} resumed from its checkpoint of epoch {metrics['epoch'] - 1}")
            self.node_log.report(name, metrics)
            self.live.log_epoch(name, self.fingerprints[name], metrics)
            self.bars[name].n = int(metrics["epoch"]) + 1
            self.bars[name].set_postfix(val_err=f"{metrics['val_top1_final']:.3f}")

    def finish(self, run: PlannedRun, fitted: Future) -> bool:
        """Write an ended run's outputs and free its checkpoints; False (and why, on stderr) if it failed."""
        try:
            result = fitted.result()
            with result.checkpoint.as_directory() as directory:
                record = write_outputs(run, Path(directory), self.dataset)
        except Exception as exc:  # one failed run must not lose the others' work
            print(f"run {run.name} failed: {exc}", file=sys.stderr)  # the whole of it, in the log
            console.warn(f"train: {run.name} failed: {console.brief(exc)}")
            return False
        # The last epoch's report (with the earlier ones), which a driver killed after that epoch's
        # checkpoint never logged: the re-run trains nothing more and reports nothing.
        self.live.log_epoch(run.name, run.fingerprint, result.metrics)
        summary = final_summary(run, record)
        self.live.log_final(run.name, summary)
        self.bars[run.name].close()
        self.done += 1
        console.say(
            f"train: {run.name} done ({self.done} of {len(self.bars)}): "
            f"test error {summary['test_error']:.4f}, test AUC {summary['test_auc']:.4f}"
        )
        delete_run_storage(self.storage, run)
        return True

    def wait(self, pending: dict[Future, PlannedRun]) -> list[str]:
        """The fit loop: log reports and finish runs until none is left; the names of the failed ones."""
        failed: list[str] = []
        while pending:
            self.log_reports(timeout=0.5)
            for future in [f for f in pending if f.done()]:
                run = pending.pop(future)
                self.log_reports(timeout=0.0)
                if not self.finish(run, future):
                    failed.append(run.name)
        return failed

    def run(self, runs: list[PlannedRun]) -> list[str]:
        """Fit every run concurrently; returns the names of failed runs (the others' outputs are written)."""
        self.fingerprints = {run.name: run.fingerprint for run in runs}
        self.bars = {
            run.name: console.bar(total=run.config.epochs, desc=run.name, unit="epoch", position=position)
            for position, run in enumerate(runs)
        }
        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="fit") as pool:
            pending = {pool.submit(self.fit, run): run for run in runs}
            try:
                return self.wait(pending)
            except KeyboardInterrupt:  # here, before the pool's exit waits on the blocked fit threads
                interrupted(RESUME_HINT)


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    parser = cli.stage_parser("pipelines.train", __doc__)
    parser.add_argument("--only", action="append", metavar="NAME", help="train only these runs (repeatable)")
    parser.add_argument("--force", action="store_true", help="re-train even runs whose outputs are current")
    parser.add_argument("--address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local one)")
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def to_train(runs: list[PlannedRun], args: argparse.Namespace) -> list[PlannedRun]:
    """The runs this invocation trains: asked for, and forced or not current. A run of the current
    fingerprint whose outputs are damaged is named in one line and trained again."""
    todo = []
    for run in runs:
        if args.only and run.name not in args.only:
            continue
        if not args.force and run.fingerprint_matches():
            if (damage := run.damage()) is None:
                continue
            print(f"train: {damage}: training {run.name} again", flush=True)
        todo.append(run)
    return todo


def tidy(runs: list[PlannedRun], live: StageLive, args: argparse.Namespace) -> None:
    """Forget runs no longer planned; only once the new work is known to be able to start."""
    if not args.only:
        prune_stale(runs)
        live.keep_only({run.name: run.fingerprint for run in runs})


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    with workspace_lock("train"):
        train(params, args)


def train(params: Params, args: argparse.Namespace) -> None:
    shards = resolve_shards(params.train, params.data.dataset)
    manifest = load_manifest(shards, endpoint_url=params.data.endpoint_url)
    runs = plan_runs(params.train, manifest, shards=shards, endpoint_url=params.data.endpoint_url)
    if args.only:
        unknown = sorted(set(args.only) - {run.name for run in runs})
        if unknown:
            raise cli.UserError(
                f"--only: unknown run(s) {', '.join(unknown)}; planned: {', '.join(r.name for r in runs)}"
            )
    for root in (MEMBERS_DIR, OPT_DIR):  # DVC outputs, even when no baseline is asked for
        root.mkdir(parents=True, exist_ok=True)
    todo = to_train(runs, args)
    live = StageLive()
    print(
        f"train: {len(runs)} runs planned, {len(runs) - len(todo)} up to date, {len(todo)} to train",
        flush=True,
    )
    if not todo:
        tidy(runs, live, args)
        return
    verify_shards(shards, manifest, endpoint_url=params.data.endpoint_url)
    with console.stage_console("train", verbose=args.verbose):
        with stage_session(
            "train",
            args.address,
            list({run.scaling.model_dump_json(): run.scaling for run in todo}.values()),
            shared_paths={"train.shards": shards, "train.storage_path": params.train.storage_path},
            resume_hint=RESUME_HINT,
        ):
            tidy(runs, live, args)
            started = time.monotonic()
            training = ConcurrentTraining(
                params.train, live, DatasetInfo.from_manifest(manifest), fresh=args.force
            )
            failed = training.run(todo)
        console.say(
            f"train: {len(todo) - len(failed)} of {len(todo)} runs done in {time.monotonic() - started:.0f}s"
        )
        if failed:
            console.warn(f"error: training failed for {', '.join(failed)} (re-run to resume them)")
            sys.exit(1)


if __name__ == "__main__":
    cli.run_command(main)
