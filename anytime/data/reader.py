"""``ShardDataset``: a torch IterableDataset over Parquet shards, local or on S3.

Every epoch the row groups of a split are put in one order (shuffled by ``(seed, epoch)``), viewed as
one long stream of rows, and that stream is cut into contiguous, near-equal ranges: first one per
distributed rank, then one per DataLoader worker. So every sample is read exactly once per epoch, ranks
differ by at most one sample, and each worker reads only the row groups that overlap its range. Each
worker yields whole uint8 batches cut from its decoded windows of row groups.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from anytime.data.errors import DataError
from anytime.data.transforms import Augment, decode_images

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


def _rebatch(chunks: Iterable[tuple[Tensor, Tensor]], size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Cut a stream of ``(images, labels)`` chunks into batches of ``size`` rows, in stream order (only
    the last batch may be short). Batches inside a chunk are views of it: no per-sample work."""
    held: list[tuple[Tensor, Tensor]] = []
    count = 0
    for images, labels in chunks:
        n, start = len(labels), 0
        if count:  # top up the rows held over from earlier chunks first
            start = min(size - count, n)
            held.append((images[:start], labels[:start]))
            count += start
            if count < size:
                continue
            yield torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])
            held, count = [], 0
        full = start + (n - start) // size * size
        for i in range(start, full, size):
            yield images[i : i + size], labels[i : i + size]
        if full < n:
            held, count = [(images[full:], labels[full:])], n - full
    if count:
        yield torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])


class ShardDataset(IterableDataset):
    """Whole batches ``(images uint8 [B, H, W, C], labels int64 [B])`` of one split of a shard directory.

    Use it with ``DataLoader(batch_size=None)``, or through :class:`anytime.data.ShardLoader`, which adds
    the device-side :class:`~anytime.data.transforms.BatchTransform` (pad-crop, flip, normalisation).
    Batches are cut straight from the decoded row groups: nothing is split into samples and re-collated.

    ``augment``: ``True`` for the dataset's training augmentation recorded in the manifest, ``False``
    for none, or an explicit :class:`Augment`; only the random-resized crop of encoded images runs here
    (it is part of decoding), the rest belongs to the batch transform. ``rank``/``world_size``: which
    share of the split this process reads; by default those of ``torch.distributed`` when it is
    initialised, read here, at construction, in the training process: never in a DataLoader worker,
    which under spawn or forkserver would not see the process group. Call :meth:`set_epoch` before each
    epoch's iterator is made; the epoch is shared memory, so persistent workers see it too.
    """

    def __init__(
        self,
        root: str,
        split: str,
        *,
        batch_size: int,
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
        if batch_size < 1:
            raise DataError(f"batch_size {batch_size} is invalid: must be >= 1")
        self.root, self.split, self.shuffle, self.seed = str(root), split, shuffle, seed
        self.batch_size = batch_size
        self.manifest = load_manifest(self.root, endpoint_url=endpoint_url)
        self.fs, self.base = shard_filesystem(self.root, endpoint_url)
        if augment is True:
            augment = Augment(**self.manifest.get("augment", {}))
        self.augment: Augment | None = augment or None
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.shuffle_groups = shuffle_groups
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.groups = self._row_groups()

    def _row_groups(self) -> list[Piece]:
        groups = []
        for shard in self.manifest["splits"][self.split]["shards"]:
            path = f"{self.base}/{shard['path']}"
            with self.fs.open_input_file(path) as fh:
                meta = pq.ParquetFile(fh).metadata
            groups += [Piece(path, g, 0, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        return groups

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle (and augmentation) for ``epoch``."""
        self._epoch.fill_(epoch)

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

    @property
    def num_samples(self) -> int:
        """Samples this rank reads per epoch (all its DataLoader workers together)."""
        lo, hi = cut_ranges(sum(p.stop for p in self.groups), self.world_size)[self.rank]
        return hi - lo

    def num_batches(self, num_workers: int) -> int:
        """Batches this rank yields per epoch over ``num_workers`` DataLoader workers (0 = in-process):
        each worker cuts its own range, so each may end on a short batch."""
        ranges = cut_ranges(self.num_samples, max(1, num_workers))
        return sum(-(-(hi - lo) // self.batch_size) for lo, hi in ranges)

    def _chunks(self, pieces: list[Piece], rng: np.random.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Decoded windows of ``shuffle_groups`` row groups, rows shuffled within each when shuffling."""
        step = self.shuffle_groups if self.shuffle else 1
        files: dict[str, pq.ParquetFile] = {}  # each shard file's footer parsed once per pass
        with contextlib.ExitStack() as stack:
            for i in range(0, len(pieces), step):
                tables = []
                for piece in pieces[i : i + step]:
                    if piece.path not in files:
                        handle = stack.enter_context(self.fs.open_input_file(piece.path))
                        files[piece.path] = pq.ParquetFile(handle)
                    group = files[piece.path].read_row_group(
                        piece.row_group,
                        columns=["image", "label"],
                        use_threads=False,  # small reads: no pool
                    )
                    tables.append(group.slice(piece.start, piece.stop - piece.start))
                table = pa.concat_tables(tables)
                images = decode_images(table.column("image"), self.manifest, rng, self.augment)
                labels = table.column("label").to_numpy()
                order = rng.permutation(len(labels)) if self.shuffle else np.arange(len(labels))
                # one gather into a fresh array: the batches below are views of it (the decoded rows may be a
                # read-only view of Arrow's buffer)
                yield torch.from_numpy(images.take(order, axis=0)), torch.from_numpy(labels.take(order))

    def batches(
        self, rank: int, world_size: int, worker: int, num_workers: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches one (rank, worker) yields this epoch (``__iter__`` fills in the worker)."""
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker])
        return _rebatch(self._chunks(self.plan(rank, world_size, worker, num_workers), rng), self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.batches(self.rank, self.world_size, worker, num_workers)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The given share, else ``torch.distributed``'s when it runs, else the whole split."""
    if world_size is not None:
        rank = rank or 0
        if not 0 <= rank < world_size:
            raise DataError(
                f"rank {rank} is invalid for world_size {world_size}: must be in 0..{world_size - 1}"
            )
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
