"""The run-directory format (``anytime.record``): one typed record, read back exactly, refused when not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anytime.data.transforms import BatchTransform
from anytime.models import create_model
from anytime.record import (
    FORMAT_VERSION,
    RECORD_FILE,
    DatasetInfo,
    load_network,
    read_record,
    save_network,
    write_record,
)
from tests.fixtures.records import DATASET, make_record

MANIFEST = {
    "dataset": "digits",
    "image_shape": [8, 8, 1],
    "mean": [0.3],
    "std": [0.4],
    "class_names": [str(d) for d in range(10)],
    "num_classes": 10,
}


def test_a_record_round_trips_and_is_written_atomically(tmp_path):
    record = make_record("m1", [10, 20, 40], [0.5, 0.4, 0.3], [0.5, 0.41, 0.31], eann=True)
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record and record.untrained_heads == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no temporary left beside it


def test_the_dataset_facts_come_from_the_shard_manifest():
    info = DatasetInfo.from_manifest(MANIFEST)
    assert info == DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        mean=(0.3,),
        std=(0.4,),
        class_names=tuple(MANIFEST["class_names"]),
    )


def test_normalise_is_what_the_shard_loader_feeds_training():
    record = make_record("m0", [1.0], [0.5], [0.5], dataset=DatasetInfo.from_manifest(MANIFEST))
    hwc = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    loader = BatchTransform.for_manifest(MANIFEST)(torch.from_numpy(hwc))  # uint8 [N, H, W, C], as yielded
    chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))
    ours = record.normalise(chw)
    assert ours.dtype == torch.float32 and torch.equal(ours, loader)
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 1, 8, 8\]"):
        record.normalise(chw.float())
    with pytest.raises(ValueError, match=r"shape \[5, 1, 8, 7\]"):
        record.normalise(chw[..., :7])


def test_an_old_run_directory_fails_in_one_line_naming_the_version_and_the_rebuild(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")  # format 0: metrics.json + fingerprint.json
    with pytest.raises(ValueError) as old:
        read_record(tmp_path)
    message = str(old.value)
    assert "format 0" in message and "python -m pipelines.train" in message and "\n" not in message
    newer = make_record("m0", [1.0], [0.5], [0.5]).model_dump(mode="json") | {"format_version": 7}
    (tmp_path / RECORD_FILE).write_text(json.dumps(newer))
    with pytest.raises(ValueError, match=f"format 7, this code reads format {FORMAT_VERSION}: rebuild"):
        read_record(tmp_path)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"val_error": [0.5]}, "one entry per head"),
        ({"untrained_heads": 2}, "must leave the last"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
        ({"dataset": {"name": "x"}}, "dataset.input_shape: Field required"),
    ],
)
def test_a_damaged_record_is_one_line_naming_the_file(tmp_path, change, named):
    raw = make_record("m0", [1.0, 2.0], [0.5, 0.4], [0.5, 0.4]).model_dump(mode="json") | change
    (tmp_path / RECORD_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError) as bad:
        read_record(tmp_path)
    assert str(bad.value).startswith(f"{tmp_path / RECORD_FILE}: not a run record") and named in str(
        bad.value
    )
    (tmp_path / RECORD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a run record"):
        read_record(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the train stage first"):
        read_record(tmp_path / "absent")


def test_the_network_is_built_from_the_record_with_the_saved_weights(tmp_path):
    torch.manual_seed(0)
    net = create_model("resann", num_classes=3, in_channels=3, n=1, c=4, period=1)
    write_record(tmp_path, make_record("m0", [1.0, 2.0, 3.0], [0.5] * 3, [0.5] * 3, model=net.config))
    save_network(tmp_path, net)
    loaded = load_network(tmp_path)
    assert not loaded.training and loaded.config == net.config
    x = read_record(tmp_path).normalise(torch.randint(0, 256, (2, *DATASET.input_shape), dtype=torch.uint8))
    torch.testing.assert_close(loaded(x)[-1], net.eval()(x)[-1], rtol=0, atol=0)
