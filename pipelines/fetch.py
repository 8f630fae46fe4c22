"""DVC stage ``fetch``: get the dataset named in params.yaml into ``data/raw/<dataset>/``.

The files are checked (checksums, archive safety, and a full read of the format) before the output
directory appears, so a bad source never leaves a half-filled ``data/raw``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from anytime.data import DataError, evict, fetch_into, materialise_digits, read_dataset
from pipelines.cli import run_command, stage_parser
from pipelines.config import load_params
from pipelines.io import atomic_path
from pipelines.paths import raw_dir


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    return stage_parser("pipelines.fetch", __doc__).parse_args(argv)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    params = load_params(args.params).data
    dest = raw_dir(params.dataset)
    cached: list[Path] = []
    with atomic_path(dest) as tmp:
        if params.location is None:
            materialise_digits(tmp)
        else:
            cached = fetch_into(
                params.location,
                tmp,
                files=params.files,
                sha256=params.sha256,
                cache_dir=params.cache_dir,
                endpoint_url=params.endpoint_url,
                region=params.region,
                stall_timeout_s=params.stall_timeout_s,
            )
        try:
            raw = read_dataset(params.dataset, tmp, image_size=params.image_size, label=params.location)
        except DataError:
            evict(cached)  # a bad download must be fetched again, not re-read from the cache
            raise
    counts = ", ".join(f"{name} {len(split)}" for name, split in raw.splits.items())
    print(f"fetched {params.dataset} into {dest}: {counts}")


if __name__ == "__main__":
    run_command(main)
