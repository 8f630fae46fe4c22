"""A synthetic CIFAR-shaped dataset written as real shards, so benchmarks read what training reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anytime.data import RawDataset, Split, write_shards
from anytime.data.transforms import default_augment

# The shard stage's defaults (data.rows_per_shard / data.row_group_rows in params.yaml), so the reader sees
# the row-group layout a real pipeline writes.
SHARD_ROWS, ROW_GROUP_ROWS = 512, 128


def synthetic_shards(root: Path, *, samples: int, image_size: int, classes: int, seed: int) -> dict[str, Any]:
    """A CIFAR-shaped random dataset written as shards (CIFAR's pad-and-flip augmentation recorded)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        images = rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8)
        return Split(labels=rng.integers(0, classes, size=n), images=images)

    raw = RawDataset(
        name="synthetic",
        class_names=[f"class{i}" for i in range(classes)],
        image_shape=(image_size, image_size, 3),
        encoding="raw",
        splits={"train": split(samples), "test": split(max(samples // 4, classes))},
    )
    return write_shards(
        raw,
        root,
        val_fraction=0.1,
        seed=seed,
        rows_per_shard=SHARD_ROWS,
        row_group_rows=ROW_GROUP_ROWS,
        augment=default_augment("cifar10"),
    )
