"""Shard reader throughput vs an in-memory numpy baseline, in images/s (medians over repeats).

Both yield whole uint8 batches through the same DataLoader settings (batch size, workers); augmentation and
normalisation run after either, on the device (``anytime.data.ShardLoader``). So the ratio isolates what
the Parquet shards cost: file reads, row-group planning and shuffling. Target: reader >= 0.5x the baseline.

    python bench/bench_reader.py [--images 20000] [--repeats 5] [--workers 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from anytime.data import RawDataset, ShardDataset, Split, write_shards


class InMemoryBaseline(IterableDataset):
    """Shuffled uint8 batches gathered straight from a numpy array in RAM (no files, no decoding)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = np.random.default_rng(worker).permutation(len(self.labels))[worker::workers]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield torch.from_numpy(self.images[idx]), torch.from_numpy(self.labels[idx])


def images_per_second(dataset: IterableDataset, workers: int) -> float:
    """In this process's CPU time with no workers (steady on a shared machine), else wall time (the CPU
    clock would miss the workers' processes)."""
    clock = time.process_time if workers == 0 else time.perf_counter
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    start, count = clock(), 0
    for images, _ in loader:
        count += len(images)
    return count / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images)
    split = Split(labels=labels, images=images)
    raw = RawDataset(
        "cifar10", [str(i) for i in range(10)], (32, 32, 3), "raw", {"train": split, "test": split}
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(
            raw, Path(tmp), val_fraction=0.0, seed=0, rows_per_shard=4096, row_group_rows=args.batch_size
        )
        reader = ShardDataset(tmp, "train", batch_size=args.batch_size, shuffle=True)
        baseline = InMemoryBaseline(images, labels, args.batch_size)
        rates: dict[str, list[float]] = {"baseline": [], "reader": []}
        for epoch in range(args.repeats):
            reader.set_epoch(epoch)
            rates["baseline"].append(images_per_second(baseline, args.workers))
            rates["reader"].append(images_per_second(reader, args.workers))
    base, read = (statistics.median(rates[k]) for k in ("baseline", "reader"))
    print(
        f"CIFAR-shaped 32x32x3, {args.images} images, batch {args.batch_size}, workers {args.workers}, "
        f"uint8 batches, medians of {args.repeats}, {'CPU' if args.workers == 0 else 'wall'} clock"
    )
    print(f"in-memory numpy baseline: {base:10.0f} images/s")
    print(f"ShardDataset (Parquet):   {read:10.0f} images/s")
    print(f"ratio reader/baseline:    {read / base:10.2f}  (target >= 0.50)")


if __name__ == "__main__":
    main()
