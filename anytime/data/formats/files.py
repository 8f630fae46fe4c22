"""Locating a format's files inside a fetched directory (archives often add a top-level folder)."""

from __future__ import annotations

from pathlib import Path

from anytime.data.errors import DataError


def find_one(root: Path, patterns: list[str], what: str) -> Path:
    """The single file under ``root`` (recursively) matching the first pattern that matches anything."""
    for pattern in patterns:
        hits = sorted(p for p in root.rglob(pattern) if p.is_file())
        if len(hits) > 1:
            raise DataError(f"several files match {pattern!r} for {what}: {[h.name for h in hits]}")
        if hits:
            return hits[0]
    raise DataError(f"no {what} file (looked for {', '.join(patterns)})")
