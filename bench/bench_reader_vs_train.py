"""Input pipeline headroom: images/s the shard reader delivers over images/s a training step consumes, and
the batch reader over the per-sample one it replaced.

Three readers of a synthetic CIFAR-shaped shard directory (shuffled, with CIFAR's pad-and-flip augmentation,
as the train stage reads), each through a ``DataLoader``:

- ``reader``: ``anytime.data.ShardDataset``'s whole uint8 batches, moved to the device (pinned on CUDA);
- ``loader``: ``anytime.data.ShardLoader``, i.e. the reader plus the device-side augmentation and
  normalisation: what training receives;
- ``per-sample`` (the old path, rebuilt from the same parts for the ratio): decoded windows augmented and
  normalised to float32 on the CPU, split into samples and re-collated by the DataLoader, then moved.

The training side is ``anytime.train.train_one_epoch`` on a ResANN (all heads, SIEVE weights) with batches
already on the device. Targets: ``loader`` >= 10x what training consumes on GPU, so data never stalls the
accelerator (on CPU training is far slower, so the CPU ratio only says the reader is no bottleneck there);
``reader`` >= 100k 32x32 images/s per process.

    python -m bench.bench_reader_vs_train                              # ResANN-20, batch 64, CPU
    python -m bench.bench_reader_vs_train --device cuda --n 18 --batch 128 --steps 20 --loader-workers 4 \\
        --clock wall                                                   # GPU row: ResANN-110, AMP
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from anytime.data import BatchTransform, ShardDataset, ShardLoader
from anytime.models import create_model
from anytime.train import make_grad_scaler, make_optimizer, train_one_epoch
from anytime.weighting import create_strategy
from bench.synthetic import ROW_GROUP_ROWS, synthetic_shards
from bench.timing import add_compile_flag, bench_parser, ratio_line, setup

READER_TARGET = 100_000  # 32x32 images/s per process


class PerSampleReader(IterableDataset):
    """The reader before batches (for the ratio): each decoded window of row groups augmented and normalised
    to float32 on the CPU, then yielded sample by sample for the DataLoader to collate again."""

    def __init__(self, windows: ShardDataset) -> None:
        self.windows = windows
        self.transform = BatchTransform.for_manifest(windows.manifest, windows.augment)

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        for images, labels in self.windows:
            floats = self.transform(images)
            for j in range(len(labels)):
                yield floats[j], int(labels[j])


def main() -> None:
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
        options = {"shuffle": True, "seed": args.seed, "augment": True}
        dataset = ShardDataset(tmp, "train", batch_size=args.batch, **options)
        workers = {"num_workers": args.loader_workers, "persistent_workers": args.loader_workers > 0}
        pinned = {**workers, "pin_memory": device.type == "cuda"}
        reader = DataLoader(dataset, batch_size=None, **pinned)
        loader = ShardLoader(dataset, device=device, workers=args.loader_workers)
        window = ShardDataset(tmp, "train", batch_size=dataset.shuffle_groups * ROW_GROUP_ROWS, **options)
        per_sample = DataLoader(PerSampleReader(window), batch_size=args.batch, **pinned)
        delivered = dataset.num_samples
        epochs = iter(range(1_000_000))

        def over(batches) -> None:
            epoch = next(epochs)
            dataset.set_epoch(epoch)
            window.set_epoch(epoch)
            for batch_images, _ in batches:
                batch_images.to(device, non_blocking=True)

        print(bench.header())
        print(
            f"# readers: {delivered} 32x32x3 images per pass, batch {args.batch}, "
            f"{args.loader_workers} loader workers; training: resann n={args.n} c={args.c} "
            f"K={model.num_heads} sieve, batch {args.batch}, amp={amp} compile={args.compile}"
        )
        candidates = {"reader": lambda: over(reader), "loader": lambda: over(loader), "train": train}
        ratios, old_seconds = bench.interleaved_ratios(lambda: over(per_sample), candidates, number=1)

    trained = args.batch * args.steps
    # images/s ratio = (delivered / t_loader) / (trained / t_train) = delivered / trained * t_train / t_loader
    headroom = [delivered / trained * t / r for t, r in zip(ratios["train"], ratios["loader"], strict=True)]
    speedup = [1 / r for r in ratios["reader"]]
    old_rate = delivered / statistics.median(old_seconds)
    rates = {name: old_rate / statistics.median(ratios[name]) for name in ("reader", "loader")}
    train_rate = old_rate * trained / delivered / statistics.median(ratios["train"])
    on_gpu = device.type == "cuda"
    print(
        ratio_line(
            "reader images/s / training images/s",
            headroom,
            target=">= 10" if on_gpu else None,
            note="" if on_gpu else "(CPU training; the >= 10 target is for GPU)",
        )
    )
    print(ratio_line("batch reader images/s / per-sample reader images/s", speedup))
    met = "met" if rates["reader"] >= READER_TARGET else "NOT met"
    if args.loader_workers:
        met = "measured with 0 loader workers only"
    print(
        f"# images/s ({bench.clock_name} clock): reader {rates['reader']:.0f} (uint8 batches on the device; "
        f"target >= {READER_TARGET} per process: {met}), loader {rates['loader']:.0f} (augmented and "
        f"normalised there), per-sample reader {old_rate:.0f}, training {train_rate:.0f}"
    )


if __name__ == "__main__":
    main()
