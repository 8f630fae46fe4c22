"""DVC stage ``train``: every EANN member and OPT baseline, trained concurrently in one Ray job.

Each run is one Ray Train ``TorchTrainer`` (data-parallel workers when ``train.scaling.num_workers > 1``),
started from its own driver thread so all runs share the cluster at once. Per-epoch reports reach this
driver through a Ray queue and are logged with dvclive here (``outputs/live``); finished runs are written
atomically to ``outputs/members/<name>/`` or ``outputs/opt/<name>/`` with a fingerprint, and runs whose
fingerprint still matches are skipped. A killed stage resumes each unfinished run from its last epoch
checkpoint in ``train.storage_path``.

    python -m pipelines.train [--params params.yaml] [--only NAME ...] [--force] [--address ADDR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from ray.util.queue import Empty, Queue
from tqdm.auto import tqdm

from anytime.data import load_manifest
from anytime.metrics import anytime_auc, head_errors, reported_topk
from pipelines import cli
from pipelines.config import load_params
from pipelines.config.train import TrainParams
from pipelines.io import atomic_path
from pipelines.live import StageLive
from pipelines.member import FINAL_DIR, build_trainer, scaling_config
from pipelines.members import FINGERPRINT_FILE, MEMBERS_DIR, OPT_DIR, Run, plan_runs, resolve_shards
from pipelines.ray_cluster import ReportForwarder, interrupted, stage_session

RESUME_HINT = "re-run to resume every unfinished run from its last epoch"
ARRAYS = ("probs_val.npy", "probs_test.npy", "labels_val.npy", "labels_test.npy")


def storage_uri(path: str) -> str:
    """Ray needs an absolute path or a URI; relative paths are taken from the working directory."""
    return path if "://" in path else str(Path(path).resolve())


def member_metrics(run: Run, final: Path) -> dict[str, Any]:
    """metrics.json (DESIGN.md "Member outputs") from the saved probabilities: one source of truth."""
    summary = json.loads((final / "summary.json").read_text())
    metrics: dict[str, Any] = {
        "member": run.name,
        "flops": summary["flops"],
        "head_units": summary["head_units"],
    }
    for split in ("val", "test"):
        probs, labels = np.load(final / f"probs_{split}.npy"), np.load(final / f"labels_{split}.npy")
        for key, errors in head_errors(probs, labels, reported_topk(probs.shape[2])).items():
            metrics[f"{split}_{key}"] = errors
    metrics |= {
        "epochs": summary["epochs"],
        "strategy": run.config["weighting"],
        "model": run.config["model"],
    }
    return metrics


def write_outputs(run: Run, checkpoint_dir: Path) -> dict[str, Any]:
    """Copy the final checkpoint's files into the run's output directory in one atomic rename."""
    final = checkpoint_dir / FINAL_DIR
    if not final.is_dir():
        raise RuntimeError(f"run {run.name}: the last checkpoint has no final outputs ({checkpoint_dir})")
    metrics = member_metrics(run, final)
    with atomic_path(run.out_dir) as tmp:
        tmp.mkdir()
        for name in ("model.pt", *ARRAYS):
            shutil.copy2(final / name, tmp / name)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        fingerprint = {"fingerprint": run.fingerprint, "config": run.config}
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return metrics


def final_summary(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        "val_top1_final": metrics["val_top1"][-1],
        "test_top1_final": metrics["test_top1"][-1],
        "test_auc": anytime_auc(metrics["flops"], metrics["test_top1"]),
        "flops_final": metrics["flops"][-1],
    }


def prune_stale(runs: list[Run]) -> None:
    """Remove output directories of members/baselines no longer in params (assemble must not see them)."""
    planned = {run.out_dir for run in runs}
    for root in (MEMBERS_DIR, OPT_DIR):
        if root.is_dir():
            for path in root.iterdir():
                if path.is_dir() and not path.name.startswith(".") and path not in planned:
                    shutil.rmtree(path)


def delete_run_storage(storage: str, run: Run) -> None:
    """A finished run never resumes: free its checkpoints (local directory or object store)."""
    fs, base = pafs.FileSystem.from_uri(storage)
    with contextlib.suppress(FileNotFoundError, OSError):
        fs.delete_dir(f"{base.rstrip('/')}/{run.ray_name}")


def train_runs(runs: list[Run], params: TrainParams, live: StageLive) -> list[str]:
    """Fit every run concurrently; log reports as they come; write each run's outputs when it ends.

    Returns the names of failed runs (the others' outputs are written regardless).
    """
    storage = storage_uri(params.storage_path)
    reports: Queue = Queue()
    scaling = scaling_config(
        params.scaling.num_workers,
        use_gpu=params.scaling.use_gpu,
        cpus_per_worker=params.scaling.cpus_per_worker,
        gpus_per_worker=params.scaling.gpus_per_worker,
    )
    bars = {
        run.name: tqdm(
            total=run.config["epochs"], desc=run.name, unit="epoch", position=i, dynamic_ncols=True
        )
        for i, run in enumerate(runs)
    }

    def fit(run: Run):
        trainer = build_trainer(
            {**run.config, "final_outputs": True},
            name=run.ray_name,
            storage_path=storage,
            scaling=scaling,
            max_failures=params.max_failures,
            callbacks=[ReportForwarder(reports, run.name)],
        )
        return trainer.fit()

    nodes: dict[str, str] = {}  # the Ray node each run last reported from

    def drain(timeout: float) -> None:
        try:
            items = [reports.get(timeout=timeout)]
        except Empty:
            return
        while not reports.empty():
            items.append(reports.get_nowait())
        for name, metrics in items:
            if nodes.get(name) != metrics["node_id"]:
                nodes[name] = metrics["node_id"]
                tqdm.write(f"train: {name} epoch {metrics['epoch']} on node {metrics['node_id']}")
            live.log_epoch(name, metrics)
            bars[name].n = int(metrics["epoch"]) + 1
            bars[name].set_postfix(val_err=f"{metrics['val_top1_final']:.3f}")

    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="fit") as pool:
        pending: dict[Future, Run] = {pool.submit(fit, run): run for run in runs}
        try:
            while pending:
                drain(timeout=0.5)
                for future in [f for f in pending if f.done()]:
                    run = pending.pop(future)
                    drain(timeout=0.0)
                    try:
                        result = future.result()
                        with result.checkpoint.as_directory() as directory:
                            metrics = write_outputs(run, Path(directory))
                    except Exception as exc:  # one failed run must not lose the others' work
                        print(f"run {run.name} failed: {exc}", file=sys.stderr)
                        failed.append(run.name)
                        continue
                    live.log_final(run.name, final_summary(metrics))
                    bars[run.name].close()
                    delete_run_storage(storage, run)
        except KeyboardInterrupt:  # the fit threads block in ray.get: disconnect before the pool joins them
            interrupted(RESUME_HINT)
    return failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--only", action="append", metavar="NAME", help="train only these runs (repeatable)")
    parser.add_argument("--force", action="store_true", help="re-train even runs whose outputs are current")
    parser.add_argument("--address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    shards = resolve_shards(params.train, params.data.dataset)
    manifest = load_manifest(shards, endpoint_url=params.data.endpoint_url)
    runs = plan_runs(params.train, manifest, shards=shards, endpoint_url=params.data.endpoint_url)
    if args.only:
        unknown = sorted(set(args.only) - {run.name for run in runs})
        if unknown:
            raise cli.UserError(
                f"--only: unknown run(s) {', '.join(unknown)}; planned: {', '.join(r.name for r in runs)}"
            )
    else:
        prune_stale(runs)
    for root in (MEMBERS_DIR, OPT_DIR):  # DVC outputs, even when no baseline is asked for
        root.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if (not args.only or r.name in args.only) and (args.force or not r.is_current())]
    live = StageLive()
    if not args.only:
        live.keep_only(run.name for run in runs)
    print(
        f"train: {len(runs)} runs planned, {len(runs) - len(todo)} up to date, {len(todo)} to train",
        flush=True,
    )
    if todo:
        with stage_session(
            args.address,
            params.train.scaling,
            shared_paths={"train.shards": shards, "train.storage_path": params.train.storage_path},
            resume_hint=RESUME_HINT,
        ):
            started = time.monotonic()
            failed = train_runs(todo, params.train, live)
        print(
            f"train: {len(todo) - len(failed)} of {len(todo)} runs done in {time.monotonic() - started:.0f}s"
        )
        if failed:
            print(f"error: training failed for {', '.join(failed)} (re-run to resume them)", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
