"""The format of a trained run's directory: one typed record, read and written here only.

A run directory (the train stage's ``outputs/members/<m>/`` and ``outputs/opt/<m>-opt<j>/``) holds
``model.pt`` (``{"config", "state_dict"}``, loads with ``weights_only=True``), the val/test softmax outputs
``probs_<split>.npy`` (float32 ``[K, N, C]``) with their ``labels_<split>.npy`` (int64 ``[N]``), and
``record.json``: a :class:`RunRecord`, which says what the network is, how it was trained, how it scores and
how to feed it a raw image. Everything that reads a run (the EANN curves, the predictor, the assemble stage,
the experiment tables, a server) goes through :func:`read_record` and :func:`load_network`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from anytime.data.transforms import normalise_batch
from anytime.integrity import load_array, load_weights
from anytime.models import AnytimeNet, create_model

FORMAT_VERSION: int = 1
RECORD_FILE = "record.json"
MODEL_FILE = "model.pt"
SPLITS = ("val", "test")
REBUILD = "python -m pipelines.train (or dvc repro train)"


def probs_file(split: str) -> str:
    return f"probs_{split}.npy"


def labels_file(split: str) -> str:
    return f"labels_{split}.npy"


ARRAY_FILES = tuple(f(split) for split in SPLITS for f in (probs_file, labels_file))


class DatasetInfo(pydantic.BaseModel, frozen=True, extra="forbid"):
    """What a caller needs to feed the network new inputs (from the shard manifest the run trained on)."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W) of one raw image
    mean: tuple[float, ...]  # per channel, of pixels in [0, 1]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> DatasetInfo:
        """From a shard ``manifest.json`` (``image_shape`` is ``[H, W, C]`` there)."""
        height, width, channels = manifest["image_shape"]
        return cls(
            name=manifest["dataset"],
            input_shape=(channels, height, width),
            mean=manifest["mean"],
            std=manifest["std"],
            class_names=manifest["class_names"],
        )


class RunRecord(pydantic.BaseModel, frozen=True, extra="forbid"):
    """``record.json``: one trained network (an EANN member or an OPT baseline) and how it scores."""

    format_version: int
    name: str  # run name, e.g. "m0" or "m2-opt8"
    fingerprint: str  # the train stage's fingerprint of the run that made it (config + data + code)
    model: dict[str, Any]  # create_model(**model) kwargs
    weighting: dict[str, Any]  # the weighting settings: {"strategy": registry name, **hyperparameters}
    epochs: int
    flops: list[float]  # cumulative FLOPs per sample up to each head (K entries)
    head_units: list[int]
    val_error: list[float]  # top-1 error per head on the validation split
    test_error: list[float]  # top-1 error per head on the test split
    untrained_heads: int  # leading heads that had no loss in training (EANN weights)
    dataset: DatasetInfo
    val_top5: list[float] | None = None  # top-5 error per head, for datasets of >= 100 classes (METHOD.md §6)
    test_top5: list[float] | None = None
    config: dict[str, Any] = {}  # the resolved run config the fingerprint hashes (provenance only)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> RunRecord:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version is {self.format_version}, this code reads {FORMAT_VERSION}")
        heads = len(self.flops)
        lists = ("head_units", "val_error", "test_error", "val_top5", "test_top5")
        if heads == 0 or any(len(getattr(self, k)) != heads for k in lists if getattr(self, k) is not None):
            raise ValueError(f"flops, {', '.join(lists)} must hold one entry per head ({heads})")
        if not 0 <= self.untrained_heads < heads:
            raise ValueError(f"untrained_heads={self.untrained_heads} must leave the last of {heads} heads")
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float32 ``(x / 255 - mean) / std``, exactly as training saw it (the
        training loader's own function, ``anytime.data.transforms.normalise_batch``), on the images' device.
        """
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.dataset.input_shape:
            raise ValueError(
                f"images of dtype {images.dtype} and shape {list(images.shape)} are invalid: expected uint8 "
                f"[N, {', '.join(map(str, self.dataset.input_shape))}]"
            )
        return normalise_batch(images, self.dataset.mean, self.dataset.std)


def read_record(directory: str | Path) -> RunRecord:
    """The validated record of a run directory; a missing, old or damaged one fails in one line naming it."""
    path = Path(directory) / RECORD_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        if (Path(directory) / "metrics.json").is_file():  # format 0: metrics.json + fingerprint.json
            raise ValueError(
                f"{path}: missing; {directory} holds run outputs of format 0 (metrics.json), this code reads "
                f"format {FORMAT_VERSION}: rebuild with {REBUILD}"
            ) from None
        raise FileNotFoundError(f"{path}: missing (run the train stage first)") from None
    return parse_record(text, path)


def parse_record(text: str, path: str | Path) -> RunRecord:
    """A record from a ``record.json``'s text (e.g. read at a Git revision); ``path`` names it in errors."""
    try:
        found = json.loads(text).get("format_version")
    except (json.JSONDecodeError, AttributeError):
        found = None
    if found is not None and found != FORMAT_VERSION:
        raise ValueError(
            f"{path}: run outputs of format {found!r}, this code reads format {FORMAT_VERSION}: "
            f"rebuild with {REBUILD}"
        )
    try:
        return RunRecord.model_validate_json(text)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        detail = f"{where}: {error['msg']}" if where else error["msg"]
        raise ValueError(f"{path}: not a run record ({detail})") from None


def write_record(directory: str | Path, record: RunRecord) -> None:
    """Write ``record.json`` into ``directory`` atomically (a temporary beside it, then one rename)."""
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_FILE}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(record.model_dump_json(indent=2) + "\n")
        os.replace(tmp, directory / RECORD_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_network(directory: str | Path, net: AnytimeNet) -> None:
    """``model.pt``: the network's config and weights (what :func:`load_network` reads back)."""
    torch.save({"config": net.config, "state_dict": net.state_dict()}, Path(directory) / MODEL_FILE)


def save_predictions(directory: str | Path, split: str, probs: np.ndarray, labels: np.ndarray) -> None:
    """``probs_<split>.npy`` (float32 ``[K, N, C]``) and ``labels_<split>.npy`` (int64 ``[N]``)."""
    np.save(Path(directory) / probs_file(split), probs.astype(np.float32))
    np.save(Path(directory) / labels_file(split), labels.astype(np.int64))


def load_predictions(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The saved softmax outputs and labels of ``split`` (no pickles; a damaged file: one line naming it)."""
    directory = Path(directory)
    return load_array(directory / probs_file(split)), load_array(directory / labels_file(split))


def load_network(directory: str | Path) -> AnytimeNet:
    """The trained network of a run directory: built from its record, ``model.pt``'s weights, eval mode."""
    record = read_record(directory)
    path = Path(directory) / MODEL_FILE
    saved = load_weights(path)
    model = create_model(**record.model)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
