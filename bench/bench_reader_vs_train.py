"""Input pipeline headroom: images/s the shard reader delivers over images/s a training step consumes.

The reader side iterates a ``DataLoader`` over ``anytime.data.ShardDataset`` (shuffled, with CIFAR's
pad-and-flip augmentation, as the train stage reads) on a synthetic CIFAR-shaped shard directory. The
training side is ``anytime.train.train_one_epoch`` on a ResANN (all heads, SIEVE weights) with batches
already on the device. Target on GPU: reader >= 10x what training consumes, so data never stalls the
accelerator. On CPU training is far slower, so the CPU ratio only says the reader is no bottleneck there.

    python -m bench.bench_reader_vs_train                              # ResANN-20, batch 64, CPU
    python -m bench.bench_reader_vs_train --device cuda --n 18 --batch 128 --steps 20 --loader-workers 4 \\
        --clock wall                                                   # GPU row: ResANN-110, AMP
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from anytime.data import ShardDataset
from anytime.models import create_model
from anytime.train import make_grad_scaler, make_optimizer, train_one_epoch
from anytime.weighting import create_strategy
from bench.synthetic import synthetic_shards
from bench.timing import Bench, add_compile_flag, bench_parser, ratio_line, setup


def parse_args() -> tuple[argparse.Namespace, Bench]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="units per group (3 = ResANN-20)")
    parser.add_argument("--c", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per measurement")
    parser.add_argument("--images", type=int, default=4096, help="images in the train shards")
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="CUDA only")
    add_compile_flag(parser)
    args = parser.parse_args()
    bench = setup(parser, args)
    if args.loader_workers > 0 and bench.clock_name != "wall":
        parser.error(
            "--loader-workers > 0 reads in other processes, which the CPU clock misses: add --clock wall"
        )
    return args, bench


def report(bench: Bench, headroom: list[float], train_rate: float) -> None:
    """The reader's images/s over training's, against the GPU target, with both rates."""
    on_gpu = bench.device.type == "cuda"
    print(
        ratio_line(
            "reader images/s / training images/s",
            headroom,
            target=">= 10" if on_gpu else None,
            note="" if on_gpu else "(CPU training; the >= 10 target is for GPU)",
        ),
        f"  reader {statistics.median(headroom) * train_rate:.0f} images/s,",
        f"training {train_rate:.0f} images/s ({bench.clock_name} clock)",
    )


def main() -> None:
    args, bench = parse_args()
    device = bench.device
    amp = args.amp and device.type == "cuda"

    model = create_model("resann", num_classes=10, in_channels=3, n=args.n, c=args.c).to(device)
    if args.compile:
        model.compile()
    strategy = create_strategy("sieve", num_heads=model.num_heads)
    optimizer, scaler = make_optimizer(model), make_grad_scaler(device, amp=amp)
    images = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    batches = [(images, labels)] * args.steps

    def train() -> None:
        train_one_epoch(
            model,
            batches,
            optimizer,
            strategy,
            device=device,
            epoch=1,
            scaler=scaler,
            amp=amp,
            progress=False,
        )

    with tempfile.TemporaryDirectory(prefix="anytime-bench-") as tmp:
        synthetic_shards(Path(tmp), samples=args.images, image_size=32, classes=10, seed=args.seed)
        dataset = ShardDataset(tmp, "train", shuffle=True, seed=args.seed, augment=True)
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            num_workers=args.loader_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.loader_workers > 0,
        )
        delivered = dataset.manifest["splits"]["train"]["count"]
        epochs = iter(range(1_000_000))

        def read() -> None:
            dataset.set_epoch(next(epochs))
            for batch_images, _ in loader:
                batch_images.to(device, non_blocking=True)

        print(bench.header())
        print(
            f"# reader: {delivered} 32x32x3 images per pass, batch {args.batch}, "
            f"{args.loader_workers} loader workers; training: resann n={args.n} c={args.c} "
            f"K={model.num_heads} sieve, batch {args.batch}, amp={amp} compile={args.compile}"
        )
        ratios, train_seconds = bench.interleaved_ratios(train, {"read": read}, number=1)

    train_rate = args.batch * args.steps / statistics.median(train_seconds)
    # images/s ratio = (delivered / t_read) / (trained / t_train) = (delivered / trained) / (t_read / t_train)
    trained = args.batch * args.steps
    report(bench, [delivered / trained / r for r in ratios["read"]], train_rate)


if __name__ == "__main__":
    main()
