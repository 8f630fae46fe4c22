"""The Ray Data path over the shards, on an in-process local cluster (1 CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anytime.data import ShardDataset, read_dataset, write_shards
from anytime.data.digits import materialise_digits


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.heavy
def test_ray_data_matches_torch_reader(ray_local, tmp_path: Path) -> None:
    from pipelines.ray_data import read_split

    materialise_digits(tmp_path / "raw")
    raw = read_dataset("digits", tmp_path / "raw")
    manifest = write_shards(
        raw, tmp_path / "s", val_fraction=0.1, seed=0, rows_per_shard=200, row_group_rows=50
    )
    ds = read_split(str(tmp_path / "s"), "val")
    rows = ds.take_all()
    assert len(rows) == manifest["splits"]["val"]["count"]
    assert rows[0]["image"].shape == (1, 8, 8) and rows[0]["image"].dtype == np.float32
    ray_pairs = sorted((r["image"].tobytes(), int(r["label"])) for r in rows)
    torch_pairs = sorted((x.numpy().tobytes(), y) for x, y in ShardDataset(str(tmp_path / "s"), "val"))
    assert ray_pairs == torch_pairs
    batch = read_split(str(tmp_path / "s"), "train", augment=True, seed=0).take_batch(32)
    assert batch["image"].shape == (32, 1, 8, 8) and batch["label"].dtype == np.int64
