"""Decoding every image before sharding, so a bad file fails the shard stage and not a late evaluation.

Raw-pixel splits are already checked by their format readers (header sizes, shapes, label ranges);
encoded splits (JPEG/PNG files) are decoded here, every byte of them (JPEGs at 1/8 scale: the same
entropy-coded data, an eighth of the pixel work), on a thread pool (PIL's decoders release the GIL), in
chunks taken in order so the first bad file reported is the first in the split.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from anytime.data.dataset import RawDataset
from anytime.data.errors import DataError
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
