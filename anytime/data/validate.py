"""Decoding every image at shard time, so a bad file fails the shard stage and not a late evaluation.

Raw-pixel splits are already checked by their format readers (header sizes, shapes, label ranges);
encoded splits (JPEG/PNG files) are decoded here, every byte of them (JPEGs at 1/8 scale: the same
entropy-coded data, an eighth of the pixel work), on a thread pool (PIL's decoders release the GIL), in
chunks taken in order so the first bad file reported is the first in the split.
:func:`write_checked_shards` runs that check alongside the shard writer, so on a machine with cores
to spare it costs little wall time, and a bad file stops the writer at its next shard file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from anytime.data.dataset import RawDataset
from anytime.data.errors import DataError
from anytime.data.shards import write_shards
from anytime.data.transforms import open_image

CHUNK = 64  # files per task: large enough to amortise scheduling, small enough to stop early


def _first_bad(files: list[Path]) -> tuple[Path, str] | None:
    for path in files:
        try:
            open_image(path.read_bytes(), reduced=True)
        except DataError as exc:
            return path, str(exc)
    return None


def check_decodable(raw: RawDataset, root: str | Path, *, workers: int | None = None) -> None:
    """Decode every encoded image of every split; the first bad one raises DataError naming its path
    relative to ``root`` (for an unpacked archive, the member's name)."""
    root = Path(root)
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in raw.splits.values():
            files = split.files or []
            chunks = [files[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
            for bad in pool.map(_first_bad, chunks):
                if bad is not None:
                    pool.shutdown(cancel_futures=True)
                    path, reason = bad
                    name = path.relative_to(root) if path.is_relative_to(root) else path
                    raise DataError(f"{name}: {reason}")


def write_checked_shards(raw: RawDataset, source: str | Path, dest: str | Path, **shard_options: Any) -> dict:
    """:func:`write_shards` into ``dest`` while :func:`check_decodable` runs alongside; the first bad
    image raises DataError (the writer stops at its next shard file; ``dest`` is the caller's to drop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        checking = pool.submit(check_decodable, raw, source)

        def abort() -> None:
            if checking.done():
                checking.result()  # raises the check's DataError; returns None when all decoded

        try:
            manifest = write_shards(raw, dest, abort=abort, **shard_options)
        except DataError:
            checking.result()  # the writer met a bad image first: the check's error names the file
            raise
        checking.result()
    return manifest
