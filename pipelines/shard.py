"""DVC stage ``shard``: ``data/raw/<dataset>/`` -> Parquet shards + manifest in ``data/shards/<dataset>/``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from anytime.data import Augment, DataError, default_augment, read_dataset, write_checked_shards
from pipelines.cli import run_command, stage_parser
from pipelines.config import DataParams, load_params
from pipelines.io import atomic_path
from pipelines.paths import raw_dir, shards_dir


def augment_from(params: DataParams) -> Augment:
    """The dataset's default augmentation with the params' overrides applied."""
    overrides = {"crop_padding": params.crop_padding, "flip": params.flip}
    return dataclasses.replace(
        default_augment(params.dataset), **{k: v for k, v in overrides.items() if v is not None}
    )


def parse_args(argv: Sequence[str] = ()) -> argparse.Namespace:
    return stage_parser("pipelines.shard", __doc__).parse_args(argv)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    params = load_params(args.params).data
    source = raw_dir(params.dataset)
    label = params.location or str(source)  # errors name what the user gave
    raw = read_dataset(params.dataset, source, image_size=params.image_size, label=label)
    dest = shards_dir(params.dataset)
    with atomic_path(dest) as tmp:
        try:
            manifest = write_checked_shards(
                raw,
                source,
                tmp,
                val_fraction=params.val_fraction,
                seed=params.seed,
                rows_per_shard=params.rows_per_shard,
                row_group_rows=params.row_group_rows,
                augment=augment_from(params),
                train_subset=params.train_subset,
            )
        except DataError as exc:  # a bad image: name it under what the user gave
            raise DataError(f"{label}: {exc}") from None
    counts = ", ".join(f"{name} {entry['count']}" for name, entry in manifest["splits"].items())
    print(f"sharded {params.dataset} into {dest}: {counts}")


if __name__ == "__main__":
    run_command(main)
