"""EANN members trained side by side on Ray vs one after another: wall-time ratio parallel / sequential.

Uses the train stage's own pieces: ``pipelines.training.run_plan.run_config`` resolves each member's config
from a ``TrainParams`` (EANN members m0..m{M-1} with n = n0 * 2^k),
``pipelines.training.train_worker.build_trainer`` makes its Ray Train ``TorchTrainer``, and, as
``pipelines.train`` does, the parallel run starts every member's ``fit()`` from its own driver thread so they
share the cluster. The data is a synthetic CIFAR-shaped
dataset sharded with ``anytime.data.write_shards`` into a temporary directory. The cluster is private
(``address="local"``, loopback only) unless ``--address`` names one; everything the runs write goes to the
temporary directory.

With M members on at least M free cores the ideal ratio is the longest member's share of the sequential
time, which the script prints beside the measured one (members of EANN base 2: m1 costs twice m0, so
about 2/3 for two members); on a loaded 2-core machine expect much less gain. Wall clock only (the work
happens in Ray's worker processes).

    python -m bench.bench_parallel_members                  # 2 members (n = 1, 2), 1 epoch, 2 repeats
    python -m bench.bench_parallel_members --members 3 --num-cpus 8 --repeats 3   # quiet machine

On the multi-node loopback cluster (2 one-CPU workers, 0-CPU head), members long enough that Ray's
start-up is under a tenth of their time:

    python infra/ray/local_cluster.py --info /tmp/cluster.json &     # then, with its address and token:
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<token> python -m bench.bench_parallel_members \
        --address <address> --samples 4096 --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

import numpy as np
import ray
import torch

from bench.synthetic import synthetic_shards
from bench.timing import Bench, add_compile_flag, bench_parser, ratio_line, setup
from pipelines.config.train import EannParams, ScalingParams, TrainParams
from pipelines.ray_cluster import connect, scaling_config, start_loopback_cluster
from pipelines.training.run_plan import run_config
from pipelines.training.train_worker import build_trainer
from pipelines.training.worker_config import WorkerConfig


def parse_args() -> tuple[argparse.Namespace, Bench]:
    parser = bench_parser(__doc__.splitlines()[0], repeats=2, clocks=("wall",))
    parser.add_argument("--members", type=int, default=2, help="EANN members m0..m{M-1}")
    parser.add_argument("--n0", type=int, default=1, help="units per group of member m0 (m_k: n0 * 2^k)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=512, help="training images of the synthetic dataset")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--num-cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray cluster gets"
    )
    parser.add_argument(
        "--address", help="an existing cluster's GCS address (e.g. from infra/ray/local_cluster.py)"
    )
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=1.0,
        help="with --device cuda: GPUs per member (the local cluster registers every GPU torch sees)",
    )
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one untimed fit first, so neither mode pays the fresh cluster's start-up",
    )
    add_compile_flag(parser, help="train.compile for every member: each fit compiles its network (timed)")
    args = parser.parse_args()
    bench = setup(parser, args)
    for flag in ("members", "n0", "epochs", "samples", "batch", "num_cpus"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.gpus_per_worker <= 0:
        parser.error(f"--gpus-per-worker must be > 0, got {args.gpus_per_worker}")
    return args, bench


def member_params(args: argparse.Namespace, use_gpu: bool) -> TrainParams:
    """The train section of the benchmarked EANN, as the train stage would read it from params.yaml."""
    gpus = args.gpus_per_worker if use_gpu else None
    return TrainParams(
        eann=EannParams(members=args.members, n0=args.n0),
        epochs=args.epochs,
        batch_size=args.batch,
        eval_batch_size=256,
        amp=use_gpu,
        compile=args.compile,
        seed=args.seed,
        scaling=ScalingParams(use_gpu=use_gpu, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=gpus),
    )


@contextlib.contextmanager
def cluster(args: argparse.Namespace, use_gpu: bool) -> Iterator[None]:
    """The named cluster, joined as a stage joins it, or a private loopback one; disconnected at the end."""
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay short
    if args.address:  # on a loopback cluster the driver stays on 127.0.0.1
        connect(args.address)
    else:
        start_loopback_cluster(
            num_cpus=args.num_cpus,
            num_gpus=torch.cuda.device_count() if use_gpu else 0,  # every GPU torch sees
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=ray_tmp,
        )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def report(alone: dict[str, list[float]], sequential_seconds: list[float], parallel: list[float]) -> None:
    """The per-member times, the ideal ratio beside them, and the measured ratio."""
    each = {member: float(np.median(seconds)) for member, seconds in alone.items()}
    # With a worker each, side by side ends when the longest member does: its share of the sequential time.
    ideal = max(each.values()) / sum(each.values())
    print(
        "# one after another, median per member: "
        + ", ".join(f"{member} {seconds:.1f}s" for member, seconds in each.items())
        + f"; the ideal ratio (the longest member's share) is {ideal:.3f}"
    )
    print(
        ratio_line(f"members parallel/sequential wall time ({len(alone)} members)", parallel),
        f"  sequential {float(np.median(sequential_seconds)):.1f}s median",
    )


def main() -> None:
    args, bench = parse_args()
    use_gpu = bench.device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="anytime-bench-") as tmp:
        tmp_path = Path(tmp)
        manifest = synthetic_shards(
            tmp_path / "shards",
            samples=args.samples,
            image_size=args.image_size,
            classes=args.classes,
            seed=args.seed,
        )
        params = member_params(args, use_gpu)
        shards = str(tmp_path / "shards")
        configs = [
            run_config(params, e, manifest, shards=shards, endpoint_url=None) for e in params.member_entries()
        ]
        scaling = scaling_config(params.scaling)
        storage = str(tmp_path / "ray_results")
        fits = count()

        def fit(config: WorkerConfig) -> None:
            name = f"bench-{next(fits)}-{config.name}"  # unique: never resume an earlier repeat's run
            # One retry: on an overloaded machine Ray Train 2.60's PlacementGroupCleaner can take a transient
            # State API miss for a dead controller and remove a live run's placement group (the worker then
            # fails its health check). A retried repeat is slower; the median over repeats absorbs it.
            build_trainer(config, name=name, storage_path=storage, scaling=scaling, max_failures=1).fit()

        alone: dict[str, list[float]] = {config.name: [] for config in configs}

        def sequential() -> None:
            for config in configs:
                start = time.perf_counter()
                fit(config)
                alone[config.name].append(time.perf_counter() - start)

        def parallel() -> None:
            with ThreadPoolExecutor(max_workers=len(configs)) as pool:
                list(pool.map(fit, configs))

        with cluster(args, use_gpu):
            print(bench.header())
            members = ", ".join(f"{c.name} (n={c.model['n']})" for c in configs)
            print(
                f"# members {members}; {args.epochs} epoch(s) of {args.samples} {args.image_size}x"
                f"{args.image_size}x3 images, batch {args.batch}; ray num_cpus={args.num_cpus}, "
                f"{args.cpus_per_worker} CPU and {params.scaling.gpus_per_worker or 0} GPU per member, "
                f"compile={args.compile}"
            )
            if args.warmup:
                start = time.perf_counter()
                fit(configs[0])
                print(f"# warm-up fit of {configs[0].name}: {time.perf_counter() - start:.1f}s", flush=True)
            ratios, sequential_seconds = bench.interleaved_ratios(
                sequential, {"parallel": parallel}, number=1, warmup=0
            )
    report(alone, sequential_seconds, ratios["parallel"])


if __name__ == "__main__":
    main()
