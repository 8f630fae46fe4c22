"""STAND-IN for the record helper's ``anytime/record.py`` (docs: record-api): same names, minimal body.

Dropped when the real module lands on main.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pydantic
import torch

from anytime.models import AnytimeNet, create_model

FORMAT_VERSION: int = 1
RECORD_FILE = "record.json"


class DatasetInfo(pydantic.BaseModel, frozen=True):
    name: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


class RunRecord(pydantic.BaseModel, frozen=True):
    format_version: int
    name: str
    fingerprint: str
    model: dict[str, Any]
    weighting: dict[str, Any]
    epochs: int
    flops: list[float]
    head_units: list[int]
    val_error: list[float]
    test_error: list[float]
    untrained_heads: int
    dataset: DatasetInfo

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.dataset.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.dataset.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.to(torch.float32) / 255.0 - mean) / std


def read_record(directory: str | Path) -> RunRecord:
    path = Path(directory) / RECORD_FILE
    record = RunRecord.model_validate_json(path.read_text())
    if record.format_version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={record.format_version} is not {FORMAT_VERSION}")
    return record


def write_record(directory: str | Path, record: RunRecord) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record.model_dump(mode="json")))
    os.replace(tmp, directory / RECORD_FILE)


def load_network(directory: str | Path) -> AnytimeNet:
    record = read_record(directory)
    saved = torch.load(Path(directory) / "model.pt", map_location="cpu", weights_only=True)
    model = create_model(**record.model)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
