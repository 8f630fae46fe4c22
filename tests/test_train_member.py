"""One member through the real worker loop in Ray Train's local mode (no cluster), then to its outputs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.train import ScalingConfig

from anytime.data import load_manifest
from anytime.metrics import anytime_auc
from anytime.models import create_model
from pipelines.config.train import MemberParams, TrainParams
from pipelines.paths import MEMBERS_DIR
from pipelines.train import write_outputs
from pipelines.training.run_plan import PlannedRun, run_config
from pipelines.training.train_worker import FINAL_DIR, build_trainer


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
        {**config, "final_outputs": True},
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
        flops = json.loads((final / "summary.json").read_text())["flops"]
        assert result.metrics["val_auc"] == pytest.approx(anytime_auc(flops, heads))
        monkeypatch.chdir(tmp_path)
        run = PlannedRun("m0", "member", config, "f" * 64)
        metrics = write_outputs(run, Path(directory))
    out = tmp_path / MEMBERS_DIR / "m0"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checksums.json", "fingerprint.json", "metrics.json", "model.pt", "probs_val.npy", "probs_test.npy",
         "labels_val.npy", "labels_test.npy"]
    )  # fmt: skip
    assert metrics["val_top1"] == pytest.approx(heads)  # driver-side errors agree with the worker's report
    assert json.loads((out / "fingerprint.json").read_text())["fingerprint"] == "f" * 64
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["config"]["n"] == 1 and saved["config"]["num_classes"] == 10
    assert saved["state_dict"].keys() == create_model(**saved["config"]).state_dict().keys()
    assert np.load(out / "probs_test.npy").shape == (3, 360, 10)
