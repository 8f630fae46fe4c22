"""Checking a shard directory against its manifest before training reads it.

The shard stage records each file's sha256 and row count in ``manifest.json``; a flipped byte, a truncated
file or an edited count would otherwise be trained on silently (or fail deep inside a worker, minutes
later, naming no file). Every shard is hashed in full (local or object store) and its Parquet footer's row
count compared, and each split's rows must add up to its count.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow.parquet as pq

from anytime.data.errors import DataError
from anytime.data.reader import SPLITS, shard_filesystem

_CHUNK = 1 << 20


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_shards(root: str, manifest: dict[str, Any], *, endpoint_url: str | None = None) -> None:
    """Raise :class:`DataError` naming the first shard of ``root`` that does not match ``manifest``."""
    fs, base = shard_filesystem(str(root), endpoint_url)
    where = str(root).rstrip("/")
    for split in SPLITS:
        entry = manifest["splits"][split]
        rows = 0
        for shard in entry["shards"]:
            name, path = f"{where}/{shard['path']}", f"{base}/{shard['path']}"
            try:
                if _sha256(fs, path) != shard["sha256"]:
                    raise DataError(f"{name}: corrupt (its sha256 differs from manifest.json's)")
                with fs.open_input_file(path) as fh:
                    found = pq.ParquetFile(fh).metadata.num_rows
            except FileNotFoundError:
                raise DataError(f"{name}: missing") from None
            except DataError:
                raise
            except (OSError, ValueError) as exc:
                raise DataError(f"{name}: unreadable ({' '.join(str(exc).split())[:80]})") from None
            if found != shard["rows"]:
                raise DataError(f"{name}: holds {found} rows, manifest.json says {shard['rows']}")
            rows += found
        if rows != entry["count"]:
            counted = entry["count"]
            raise DataError(f"{where}/manifest.json: split {split} counts {counted} rows, its shards {rows}")
