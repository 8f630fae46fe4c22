"""``ShardDataset``: a torch IterableDataset over Parquet shards, local or on S3.

Every epoch the row groups of a split are put in one order (shuffled by ``(seed, epoch)``), viewed as
one long stream of rows, and that stream is cut into contiguous, near-equal ranges: first one per
distributed rank, then one per DataLoader worker. So every sample is read exactly once per epoch, ranks
differ by at most one sample, and each worker reads only the row groups that overlap its range.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from anytime.data.errors import DataError
from anytime.data.transforms import Augment, prepare_batch

SPLITS = ("train", "val", "test")


def shard_filesystem(root: str, endpoint_url: str | None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path of a local directory or ``s3://bucket/prefix``.

    S3 credentials come from the usual AWS env/config; the endpoint from ``endpoint_url``, else
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
    """
    if root.startswith("s3://"):
        path = root[len("s3://") :].rstrip("/")
        # pyarrow ignores the endpoint variables boto3 honours; read them here so both agree.
        endpoint_url = (
            endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint_url:
            url = urlparse(endpoint_url)
            return pafs.S3FileSystem(
                endpoint_override=url.netloc, scheme=url.scheme or "https", region=region
            ), path
        return pafs.S3FileSystem(region=region), path
    if "://" in root:
        raise DataError(f"unsupported shard location {root!r}: use a local directory or s3://bucket/prefix")
    return pafs.LocalFileSystem(), str(root).rstrip("/")


MANIFEST_KEYS = ("dataset", "image_shape", "encoding", "num_classes", "mean", "std", "splits")


def _check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """The keys every reader relies on, so a damaged manifest fails here in one line, not as a KeyError."""
    if not isinstance(manifest, dict):
        raise DataError(f"{where}: not a JSON object")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    missing += [
        f"splits.{s}.shards" for s in SPLITS if "shards" not in (manifest.get("splits") or {}).get(s, {})
    ]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)}; re-run the shard stage")
    return manifest


def load_manifest(root: str, *, endpoint_url: str | None = None) -> dict[str, Any]:
    """The ``manifest.json`` of a shard directory (local path or ``s3://`` URI)."""
    fs, base = shard_filesystem(str(root), endpoint_url)
    where = f"{str(root).rstrip('/')}/manifest.json"
    try:
        with fs.open_input_stream(f"{base}/manifest.json") as fh:
            manifest = json.loads(fh.read())
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{root}: cannot read manifest.json ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({exc}); re-run the shard stage") from None
    return _check_manifest(manifest, where)


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one row group of one shard file."""

    path: str
    row_group: int
    start: int
    stop: int


def cut_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``0..total`` whose sizes differ by at most one."""
    return [(total * i // parts, total * (i + 1) // parts) for i in range(parts)]


class ShardDataset(IterableDataset):
    """Samples ``(image float32 [C, H, W] normalised, label)`` of one split of a shard directory.

    ``augment``: ``True`` for the dataset's training augmentation recorded in the manifest, ``False``
    for none, or an explicit :class:`Augment`. Rank and world size come from ``torch.distributed``
    when it is initialised, unless given. Call :meth:`set_epoch` before each epoch's iterator is made.
    """

    def __init__(
        self,
        root: str,
        split: str,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: bool | Augment = False,
        rank: int | None = None,
        world_size: int | None = None,
        endpoint_url: str | None = None,
        shuffle_groups: int = 4,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
        self.root, self.split, self.shuffle, self.seed = str(root), split, shuffle, seed
        self.manifest = load_manifest(self.root, endpoint_url=endpoint_url)
        self.fs, self.base = shard_filesystem(self.root, endpoint_url)
        if augment is True:
            augment = Augment(**self.manifest.get("augment", {}))
        self.augment: Augment | None = augment or None
        self.rank, self.world_size = rank, world_size
        self.shuffle_groups = shuffle_groups
        self.epoch = 0
        self.groups = self._row_groups()

    def _row_groups(self) -> list[Piece]:
        groups = []
        for shard in self.manifest["splits"][self.split]["shards"]:
            path = f"{self.base}/{shard['path']}"
            with self.fs.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh).metadata
            groups += [Piece(path, g, 0, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        return groups

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle (and augmentation) for ``epoch``."""
        self.epoch = epoch

    def _rank_world(self) -> tuple[int, int]:
        if self.world_size is not None:
            return self.rank or 0, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def plan(self, rank: int, world_size: int, worker: int, num_workers: int) -> list[Piece]:
        """The row-group pieces one (rank, worker) reads this epoch."""
        order = list(self.groups)
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(order))
            order = [order[i] for i in perm]
        total = sum(p.stop for p in order)
        lo, hi = cut_ranges(total, world_size)[rank]
        w_lo, w_hi = cut_ranges(hi - lo, num_workers)[worker]
        lo, hi = lo + w_lo, lo + w_hi
        pieces, offset = [], 0
        for group in order:
            start, stop = max(lo - offset, 0), min(hi - offset, group.stop)
            if start < stop:
                pieces.append(Piece(group.path, group.row_group, start, stop))
            offset += group.stop
        return pieces

    def __len__(self) -> int:
        """Samples this rank sees per epoch (all its DataLoader workers together)."""
        rank, world_size = self._rank_world()
        lo, hi = cut_ranges(sum(p.stop for p in self.groups), world_size)[rank]
        return hi - lo

    def _read(self, piece: Piece) -> pa.Table:
        with self.fs.open_input_file(piece.path) as fh:
            table = pq.ParquetFile(fh).read_row_group(piece.row_group, columns=["image", "label"])
        return table.slice(piece.start, piece.stop - piece.start)

    def samples(
        self, rank: int, world_size: int, worker: int, num_workers: int
    ) -> Iterator[tuple[torch.Tensor, int]]:
        """The samples one (rank, worker) yields this epoch (``__iter__`` fills in who is asking)."""
        pieces = self.plan(rank, world_size, worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        step = self.shuffle_groups if self.shuffle else 1
        for i in range(0, len(pieces), step):
            table = pa.concat_tables([self._read(p) for p in pieces[i : i + step]])
            images = torch.from_numpy(
                prepare_batch(table.column("image"), self.manifest, augment=self.augment, rng=rng)
            )
            labels = table.column("label").to_numpy()
            order = rng.permutation(len(labels)) if self.shuffle else range(len(labels))
            for j in order:
                yield images[j], int(labels[j])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.samples(*self._rank_world(), worker, num_workers)
