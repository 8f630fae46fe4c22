"""One member through the real worker loop in Ray Train's local mode (no cluster), then to its outputs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from ray.train import ScalingConfig

from anytime.data import load_manifest
from anytime.data.transforms import decode_images
from anytime.metrics import anytime_auc
from anytime.record import DatasetInfo, load_network, read_record
from pipelines.config.train import MemberParams, TrainParams
from pipelines.paths import MEMBERS_DIR
from pipelines.train import write_outputs
from pipelines.training.run_plan import PlannedRun, run_config
from pipelines.training.train_worker import FINAL_DIR, FINAL_SUMMARY, build_trainer


def raw_test_images(shards: Path, manifest: dict) -> tuple[torch.Tensor, np.ndarray]:
    """The test split as a user holds it: uint8 [N, C, H, W] images and their labels, in shard order."""
    tables = [pq.read_table(shards / shard["path"]) for shard in manifest["splits"]["test"]["shards"]]
    images = np.concatenate([decode_images(t.column("image"), manifest) for t in tables])
    labels = np.concatenate([t.column("label").to_numpy() for t in tables])
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), labels


def test_local_mode_member_reports_every_epoch_and_leaves_its_outputs(digits_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(
        tempfile, "tempdir", str(tmp_path)
    )  # local mode keeps checkpoint dirs: keep them here
    params = TrainParams.model_validate({"model": {"name": "resann", "c": 4}, "epochs": 2, "batch_size": 256})
    manifest = load_manifest(str(digits_shards))
    config = run_config(
        params, MemberParams(name="m0", n=1), manifest, shards=str(digits_shards), endpoint_url=None
    )
    trainer = build_trainer(
        config.model_copy(update={"final_outputs": True}),
        name="m0-test",
        storage_path=str(tmp_path / "ray"),
        scaling=ScalingConfig(num_workers=0),  # Ray Train V2 local mode: the loop runs in this process
        max_failures=0,
    )
    result = trainer.fit()
    assert result.metrics["epoch"] == 1
    heads = result.metrics["val_top1"]
    assert len(heads) == 3 and result.metrics["val_top1_final"] == heads[-1]
    with result.checkpoint.as_directory() as directory:
        final = Path(directory) / FINAL_DIR
        flops = json.loads((final / FINAL_SUMMARY).read_text())["flops"]
        assert result.metrics["val_auc"] == pytest.approx(anytime_auc(flops, heads))
        monkeypatch.chdir(tmp_path)
        run = PlannedRun("m0", "member", config, "f" * 64)
        written = write_outputs(run, Path(directory), DatasetInfo.from_manifest(manifest))
    out = tmp_path / MEMBERS_DIR / "m0"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checksums.json", "record.json", "model.pt", "probs_val.npy", "probs_test.npy", "labels_val.npy",
         "labels_test.npy"]
    )  # fmt: skip
    record = read_record(out)
    assert record == written and record.fingerprint == "f" * 64 and record.name == "m0"
    assert record.val_error == pytest.approx(heads)  # driver-side errors agree with the worker's report
    assert record.model["n"] == 1 and record.model["num_classes"] == 10 and record.untrained_heads == 0
    assert record.dataset.input_shape == (1, 8, 8) and record.dataset.class_names == tuple(
        manifest["class_names"]
    )
    assert np.load(out / "probs_test.npy").shape == (3, 360, 10)
    classify_raw_images_as_the_train_stage_did(out, digits_shards, manifest)


def classify_raw_images_as_the_train_stage_did(out: Path, shards: Path, manifest: dict) -> None:
    """From the record and model.pt alone, raw uint8 test images get the saved test softmax of every head."""
    record, network = read_record(out), load_network(out)
    images, labels = raw_test_images(shards, manifest)
    np.testing.assert_array_equal(labels, np.load(out / "labels_test.npy"))  # the same images, same order
    with torch.no_grad():
        probs = torch.stack([o.softmax(dim=1) for o in network(record.normalise(images))]).numpy()
    saved = np.load(out / "probs_test.npy")
    np.testing.assert_allclose(probs, saved, rtol=0, atol=1e-5)
    assert np.array_equal(probs.argmax(axis=2), saved.argmax(axis=2))  # every head's class, every image
    one = record.normalise(images[:1])  # a single image, as a server gets it
    with torch.no_grad():
        first = network(one)[-1].softmax(dim=1).numpy()
    np.testing.assert_allclose(first[0], saved[-1, 0], rtol=0, atol=1e-5)
    assert (
        record.dataset.class_names[int(first.argmax())] == manifest["class_names"][int(saved[-1, 0].argmax())]
    )
