"""The served model: trained runs read through :mod:`anytime.record`, run by one engine, described for the
v2 metadata endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from anytime.eann.engine import AnytimeEngine
from anytime.record import RECORD_FILE, RunRecord, load_network, read_record
from serving.protocol import DATATYPE, INPUT, OUTPUTS


def member_dirs(members_root: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The run directories to serve: ``names`` under ``members_root``, else every one with a record."""
    root = Path(members_root)
    if names:
        dirs = [root / name for name in names]
    else:
        dirs = sorted(p.parent for p in root.glob(f"*/{RECORD_FILE}"))
    if not dirs:
        raise FileNotFoundError(
            f"{root}: no trained member ({RECORD_FILE}) to serve: run the train stage first"
        )
    for directory in dirs:
        read_record(directory)  # a missing or bad record fails here, in one line, before anything starts
    return dirs


@dataclass
class ServedModel:
    """An EANN (members by depth) or one ANN, its records (normalisation, errors) and its engine."""

    name: str
    records: list[RunRecord]
    engine: AnytimeEngine

    @classmethod
    def load(cls, name: str, directories: Sequence[str | Path], **engine_settings) -> ServedModel:
        runs = sorted(((read_record(d), d) for d in directories), key=lambda r: r[0].flops[-1])
        records = [r for r, _ in runs]
        datasets = {r.dataset for r in records}
        if len(datasets) != 1:
            raise ValueError(f"the members {[r.name for r in records]} were trained on different datasets")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        engine = AnytimeEngine(
            [load_network(d) for _, d in runs],
            records[0].dataset.input_shape,
            val_errors=[r.val_error for r in records],
            device=device,
            **engine_settings,
        )
        return cls(name, records, engine.start())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.records[0].dataset.input_shape

    @property
    def classes(self) -> int:
        return len(self.records[0].dataset.class_names)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Raw uint8 images as training saw them (the record's mean and std)."""
        return self.records[0].normalise(images)

    def metadata(self) -> dict:
        """The v2 model metadata, plus what anytime clients need: members, heads, FLOPs, latency, errors."""
        c, h, w = self.input_shape
        steps = self.engine.describe()
        for step in steps:
            step["latency_ms"] = {str(n): s * 1e3 for n, s in step.pop("latency_s").items()}
        dataset = self.records[0].dataset
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "anytime-pytorch",
            "inputs": [{"name": INPUT, "datatype": DATATYPE, "shape": [-1, c, h, w]}],
            "outputs": [
                {"name": n, "datatype": t, "shape": [-1, self.classes] if n == "logits" else [-1]}
                for n, t in OUTPUTS
            ],
            "parameters": {
                "dataset": dataset.name,
                "class_names": list(dataset.class_names),
                "members": [
                    {"name": r.name, "heads": len(r.flops), "flops": r.flops, "val_error": r.val_error}
                    for r in self.records
                ],
                "steps": steps,
                "device": str(self.engine.device),
            },
        }
