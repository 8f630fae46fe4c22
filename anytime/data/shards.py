"""Writing a dataset as Parquet shards plus ``manifest.json`` (the format in docs/DESIGN.md).

Each split is cut into files of ``rows_per_shard`` rows with row groups of ``row_group_rows`` (about
one batch), so readers can spread whole row groups over ranks and workers. Validation is carved from
train by a seeded permutation; test is left untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from anytime.data.dataset import RawDataset, Split
from anytime.data.errors import DataError
from anytime.data.transforms import Augment, decode_encoded, default_augment

SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("index", pa.int64())])
STATS_SAMPLE = 512  # encoded images decoded to estimate mean/std
STATS_CHUNK = 4096


def split_train_val(
    count: int, val_fraction: float, seed: int, subset: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val indices: a ``seed``-determined random ``val_fraction`` of ``count`` rows.

    ``subset`` keeps only that many of the ``count`` rows (the same seeded permutation's first ones) before
    validation is carved from them: a smaller training set for runs sized to a laptop.
    """
    if subset is not None and not 0 < subset <= count:
        raise DataError(f"train_subset {subset} is invalid: the training split has {count} images")
    kept = count if subset is None else subset
    n_val = round(kept * val_fraction)
    if n_val >= kept:
        raise DataError(f"val_fraction {val_fraction} leaves no training samples out of {kept}")
    perm = np.random.default_rng(seed).permutation(count)[:kept]
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def channel_stats(raw: RawDataset, train_idx: np.ndarray, seed: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training pixels in [0, 1] (a sample of them when encoded)."""
    split = raw.splits["train"]
    total = np.zeros(raw.image_shape[2])
    total_sq = np.zeros(raw.image_shape[2])
    pixels = 0
    if split.images is not None:
        chunks = (split.images[train_idx[i : i + STATS_CHUNK]] for i in range(0, len(train_idx), STATS_CHUNK))
    else:
        rng = np.random.default_rng(seed)
        sample = rng.choice(train_idx, size=min(STATS_SAMPLE, len(train_idx)), replace=False)
        chunks = (
            np.stack(
                [decode_encoded(b, raw.image_shape[0], None) for b in split.image_bytes(sample[i : i + 64])]
            )
            for i in range(0, len(sample), 64)
        )
    for chunk in chunks:
        flat = chunk.reshape(-1, chunk.shape[-1]).astype(np.float64) / 255.0
        total += flat.sum(0)
        total_sq += (flat**2).sum(0)
        pixels += len(flat)
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0.0))
    return mean.round(6).tolist(), np.maximum(std, 1e-3).round(6).tolist()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_split(
    split: Split,
    indices: np.ndarray,
    root: Path,
    name: str,
    *,
    rows_per_shard: int,
    row_group_rows: int,
    abort: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Write ``indices`` of ``split`` as ``<root>/<name>/part-NNNNN.parquet``; return its manifest entry.

    ``abort`` is called before each shard file and stops the write by raising (e.g. a failed check)."""
    (root / name).mkdir(parents=True, exist_ok=True)
    shards = []
    starts = range(0, len(indices), rows_per_shard)
    for number, start in enumerate(tqdm(starts, desc=f"shard {name}", unit="shard", disable=None)):
        abort()
        idx = indices[start : start + rows_per_shard]
        table = pa.table(
            {
                "image": pa.array(split.image_bytes(idx), pa.binary()),
                "label": split.labels[idx],
                "index": idx,
            },
            schema=SCHEMA,
        )
        relative = f"{name}/part-{number:05d}.parquet"
        pq.write_table(
            table,
            root / relative,
            row_group_size=row_group_rows,
            compression="snappy" if split.images is not None else "none",
            use_dictionary=["label"],
            write_statistics=["label", "index"],
        )
        shards.append({"path": relative, "rows": len(idx), "sha256": _sha256(root / relative)})
    return {"count": len(indices), "shards": shards}


def write_shards(
    raw: RawDataset,
    root: str | Path,
    *,
    val_fraction: float,
    seed: int,
    rows_per_shard: int,
    row_group_rows: int,
    augment: Augment | None = None,
    train_subset: int | None = None,
    abort: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Shard ``raw`` into ``root`` (train/val/test + manifest.json) and return the manifest.

    ``augment`` is recorded as the dataset's training augmentation (default: :func:`default_augment`);
    ``train_subset`` keeps a seeded subset of the training images (train + val), test stays whole.
    ``abort`` is called before each shard file and stops the write by raising.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = split_train_val(len(raw.splits["train"]), val_fraction, seed, train_subset)
    mean, std = channel_stats(raw, train_idx, seed)
    sizes = {"rows_per_shard": rows_per_shard, "row_group_rows": row_group_rows, "abort": abort}
    test = raw.splits["test"]
    splits = {
        "train": write_split(raw.splits["train"], train_idx, root, "train", **sizes),
        "val": write_split(raw.splits["train"], val_idx, root, "val", **sizes),
        "test": write_split(test, np.arange(len(test)), root, "test", **sizes),
    }
    manifest = {
        "dataset": raw.name,
        "image_shape": list(raw.image_shape),
        "encoding": raw.encoding,
        "num_classes": len(raw.class_names),
        "class_names": raw.class_names,
        "mean": mean,
        "std": std,
        "splits": splits,
        "val_fraction": val_fraction,
        "train_subset": train_subset,
        "seed": seed,
        "augment": (augment or default_augment(raw.name)).to_dict(),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
