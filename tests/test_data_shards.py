"""Parquet shards and manifest.json: layout, seeded validation split, statistics and checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from anytime.data import DataError, read_dataset, write_checked_shards, write_shards
from anytime.data.digits import materialise_digits
from anytime.data.shards import split_train_val
from tests.fixtures.datasets import write_imagefolder

SIZES = {"rows_per_shard": 300, "row_group_rows": 64}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("digits")
    materialise_digits(root / "raw")
    raw = read_dataset("digits", root / "raw")
    manifest = write_shards(raw, root / "shards", val_fraction=0.1, seed=3, **SIZES)
    return raw, root / "shards", manifest


def read_column(root: Path, manifest: dict, split: str, column: str) -> np.ndarray:
    parts = [
        pq.read_table(root / s["path"], columns=[column]).column(column)
        for s in manifest["splits"][split]["shards"]
    ]
    return np.concatenate([p.to_numpy() for p in parts]) if parts else np.array([], dtype=np.int64)


def test_manifest_matches_design_contract(digits) -> None:
    _, root, manifest = digits
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["dataset"] == "digits" and manifest["encoding"] == "raw"
    assert manifest["image_shape"] == [8, 8, 1] and manifest["num_classes"] == 10
    assert manifest["class_names"] == [str(d) for d in range(10)]
    assert manifest["val_fraction"] == 0.1 and manifest["seed"] == 3
    assert manifest["augment"] == {"crop_padding": 1, "flip": False, "resized_crop": False}
    counts = {name: entry["count"] for name, entry in manifest["splits"].items()}
    assert counts == {"train": 1437 - 144, "val": 144, "test": 360}


def test_shard_files_rows_row_groups_and_checksums(digits) -> None:
    _, root, manifest = digits
    for entry in manifest["splits"].values():
        rows = [s["rows"] for s in entry["shards"]]
        assert sum(rows) == entry["count"] and all(r == 300 for r in rows[:-1]) and 0 < rows[-1] <= 300
        for shard in entry["shards"]:
            path = root / shard["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            meta = pq.ParquetFile(path).metadata
            assert meta.num_rows == shard["rows"]
            assert all(meta.row_group(g).num_rows <= 64 for g in range(meta.num_row_groups))
            assert pq.read_schema(path).names == ["image", "label", "index"]


def test_val_carved_from_train_test_untouched(digits) -> None:
    raw, root, manifest = digits
    train, val = (read_column(root, manifest, s, "index") for s in ("train", "val"))
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(len(raw.splits["train"])))
    np.testing.assert_array_equal(
        read_column(root, manifest, "val", "label"), raw.splits["train"].labels[val]
    )
    test_index = read_column(root, manifest, "test", "index")
    np.testing.assert_array_equal(test_index, np.arange(len(raw.splits["test"])))
    images = pq.read_table(root / manifest["splits"]["test"]["shards"][0]["path"]).column("image").to_pylist()
    assert images[5] == raw.splits["test"].images[5].tobytes()


def test_val_split_deterministic_by_seed() -> None:
    a, b, c = split_train_val(1000, 0.1, 7), split_train_val(1000, 0.1, 7), split_train_val(1000, 0.1, 8)
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == 100 and not np.array_equal(a[1], c[1])
    assert len(split_train_val(1000, 0.0, 7)[1]) == 0
    with pytest.raises(DataError, match="leaves no training samples"):
        split_train_val(3, 0.9, 0)


def test_mean_std_are_train_pixel_statistics(digits) -> None:
    raw, root, manifest = digits
    train = read_column(root, manifest, "train", "index")
    pixels = raw.splits["train"].images[train].astype(np.float64) / 255.0
    assert manifest["mean"] == pytest.approx([pixels.mean()], abs=1e-5)
    assert manifest["std"] == pytest.approx([pixels.std()], abs=1e-5)


def test_imagefolder_shards_keep_encoded_bytes(tmp_path: Path) -> None:
    truth = write_imagefolder(tmp_path / "raw", per_class=4)
    raw = read_dataset("imagefolder", tmp_path / "raw", image_size=16)
    manifest = write_shards(
        raw, tmp_path / "shards", val_fraction=0.25, seed=0, rows_per_shard=3, row_group_rows=2
    )
    assert manifest["encoding"] == "encoded" and manifest["image_shape"] == [16, 16, 3]
    stored = [
        cell
        for split in ("train", "val")
        for s in manifest["splits"][split]["shards"]
        for cell in pq.read_table(tmp_path / "shards" / s["path"]).column("image").to_pylist()
    ]
    assert sorted(stored) == sorted(data for data, _ in truth["train"])
    assert all(0 < m < 1 for m in manifest["mean"]) and len(manifest["std"]) == 3


def test_train_subset_keeps_a_seeded_share_before_the_val_carve() -> None:
    train, val = split_train_val(1000, 0.1, 7, subset=200)
    assert (len(train), len(val)) == (180, 20)
    kept = np.concatenate([train, val])
    assert len(np.unique(kept)) == 200 and kept.min() >= 0 and kept.max() < 1000
    assert not set(train.tolist()) & set(val.tolist())
    again = split_train_val(1000, 0.1, 7, subset=200)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again, strict=True))
    other = np.concatenate(split_train_val(1000, 0.1, 8, subset=200))
    assert set(other.tolist()) != set(kept.tolist())  # the seed picks the subset
    for bad in (0, 1001):
        with pytest.raises(DataError, match="train_subset"):
            split_train_val(1000, 0.1, 7, subset=bad)


SHARD_OPTIONS = {"val_fraction": 0.2, "seed": 0, "rows_per_shard": 2, "row_group_rows": 1}


def test_checked_shards_equal_plain_ones_on_a_clean_folder(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "raw", per_class=4)
    raw = read_dataset("imagefolder", tmp_path / "raw", image_size=16)
    plain = write_shards(raw, tmp_path / "plain", **SHARD_OPTIONS)
    assert write_checked_shards(raw, tmp_path / "raw", tmp_path / "checked", **SHARD_OPTIONS) == plain


@pytest.mark.parametrize("bad", ["train/cat/img0.jpg", "train/dog/img3.png", "val/dog/img1.png"])
def test_checked_shards_name_the_first_bad_image_wherever_it_is(tmp_path: Path, bad: str) -> None:
    write_imagefolder(tmp_path / "raw", per_class=4)
    (tmp_path / "raw" / bad).write_bytes(b"\xff\xd8\xff not really")  # also in the stats sample (train)
    raw = read_dataset("imagefolder", tmp_path / "raw", image_size=16)
    with pytest.raises(DataError, match=f"^{bad}: (cannot decode image|not a JPEG or PNG image)"):
        write_checked_shards(raw, tmp_path / "raw", tmp_path / "out", **SHARD_OPTIONS)
