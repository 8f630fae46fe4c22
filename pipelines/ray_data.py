"""Ray Data view of the Parquet shards, for training on a cluster.

``ray.data.read_parquet`` spreads the shard files over the cluster and ``anytime.data.decode_batch``
turns each batch into normalised ``[N, C, H, W]`` float32 images, exactly as the torch reader does.
"""

from __future__ import annotations

import ray.data

from anytime.data import Augment, decode_batch, load_manifest
from anytime.data.reader import shard_filesystem


def read_split(
    root: str,
    split: str,
    *,
    augment: bool | Augment = False,
    seed: int | None = None,
    endpoint_url: str | None = None,
) -> ray.data.Dataset:
    """A Ray Dataset of ``{"image": float32 [C, H, W], "label": int64}`` rows of one split of ``root``.

    ``augment=True`` applies the manifest's training augmentation (fresh randomness per batch unless
    ``seed`` fixes it).
    """
    manifest = load_manifest(root, endpoint_url=endpoint_url)
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(manifest['splits'])}")
    fs, base = shard_filesystem(root, endpoint_url)
    paths = [f"{base}/{shard['path']}" for shard in manifest["splits"][split]["shards"]]
    if augment is True:
        augment = Augment(**manifest["augment"])
    dataset = ray.data.read_parquet(paths, filesystem=fs).select_columns(["image", "label"])
    return dataset.map_batches(
        decode_batch,
        batch_format="pyarrow",
        fn_kwargs={"manifest": manifest, "augment": augment or None, "seed": seed},
    )
