"""CIFAR-10 / CIFAR-100 in either the binary (``*.bin``) or the python (pickled batches) distribution.

The python batches are pickles; they are read with :class:`ArrayUnpickler`, which resolves only the few
numpy globals an array needs, so a hostile archive cannot run code on load.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from anytime.data.dataset import RawDataset, Split
from anytime.data.errors import DataError
from anytime.data.formats.files import find_one

SIDE, PIXELS = 32, 32 * 32 * 3


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers, bytes and numpy arrays, and refuses everything else."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"refusing to unpickle {module}.{name}: only containers, bytes and arrays allowed"
            )
        return getattr(importlib.import_module(module.replace("numpy.core.", "numpy._core.")), name)


def safe_unpickle(path: Path) -> Any:
    """Load a CIFAR python batch (a Python 2 pickle, hence ``encoding="bytes"``) with ArrayUnpickler."""
    try:
        return ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{path.name}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path.name}: corrupt or truncated pickle ({exc or type(exc).__name__})") from None


def _get(batch: Any, key: str, path: Path) -> Any:
    if isinstance(batch, dict):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
    raise DataError(f"{path.name}: not a CIFAR batch (no '{key}' entry)")


def _to_hwc(flat: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(flat.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))


def _read_pickled(paths: list[Path], label_key: str) -> Split:
    images, labels = [], []
    for path in paths:
        batch = safe_unpickle(path)
        data = np.asarray(_get(batch, "data", path))
        batch_labels = np.asarray(_get(batch, label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
            found = f"{data.dtype}{list(data.shape)}"
            raise DataError(f"{path.name}: data is {found}, expected uint8 [N, {PIXELS}]")
        if len(data) != len(batch_labels):
            raise DataError(f"{path.name}: {len(data)} images but {len(batch_labels)} labels")
        images.append(_to_hwc(data))
        labels.append(batch_labels)
    return Split(labels=np.concatenate(labels), images=np.concatenate(images))


def _read_binary(paths: list[Path], label_bytes: int) -> Split:
    record = label_bytes + PIXELS
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(
                f"{path.name}: truncated or corrupt: {raw.size} bytes, not a multiple of {record}"
            )
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_bytes - 1].astype(np.int64))  # CIFAR-100: [coarse, fine]; use fine
        images.append(_to_hwc(rows[:, label_bytes:]))
    return Split(labels=np.concatenate(labels), images=np.concatenate(images))


def _names_from_text(root: Path, pattern: str, count: int) -> list[str]:
    hits = sorted(root.rglob(pattern))
    names = [line.strip() for line in hits[0].read_text().splitlines() if line.strip()] if hits else []
    return names if len(names) == count else [str(i) for i in range(count)]


def _names_from_meta(root: Path, pattern: str, key: str, count: int) -> list[str]:
    hits = sorted(p for p in root.rglob(pattern) if p.is_file())
    if not hits:
        return [str(i) for i in range(count)]
    raw = _get(safe_unpickle(hits[0]), key, hits[0])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return names if len(names) == count else [str(i) for i in range(count)]


def _batches(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


def read_cifar10(root: Path) -> RawDataset:
    """CIFAR-10: ``data_batch_{1..5}[.bin]`` and ``test_batch[.bin]``; class names from the meta file."""
    if _batches(root, "data_batch_*.bin"):
        splits = {
            "train": _read_binary(_batches(root, "data_batch_*.bin"), 1),
            "test": _read_binary([find_one(root, ["test_batch.bin"], "CIFAR-10 test batch")], 1),
        }
        names = _names_from_text(root, "batches.meta.txt", 10)
    else:
        train = [p for p in _batches(root, "data_batch_*") if p.suffix == ""]
        if not train:
            raise DataError("no CIFAR-10 batches (data_batch_*.bin or python data_batch_*)")
        splits = {
            "train": _read_pickled(train, "labels"),
            "test": _read_pickled([find_one(root, ["test_batch"], "CIFAR-10 test batch")], "labels"),
        }
        names = _names_from_meta(root, "batches.meta", "label_names", 10)
    return RawDataset("cifar10", names, (SIDE, SIDE, 3), "raw", splits)


def read_cifar100(root: Path) -> RawDataset:
    """CIFAR-100 (fine labels): ``train[.bin]`` and ``test[.bin]``; class names from the meta file."""
    if _batches(root, "train.bin"):
        splits = {
            "train": _read_binary([find_one(root, ["train.bin"], "CIFAR-100 train")], 2),
            "test": _read_binary([find_one(root, ["test.bin"], "CIFAR-100 test")], 2),
        }
        names = _names_from_text(root, "fine_label_names.txt", 100)
    else:
        splits = {
            "train": _read_pickled([find_one(root, ["train"], "CIFAR-100 train")], "fine_labels"),
            "test": _read_pickled([find_one(root, ["test"], "CIFAR-100 test")], "fine_labels"),
        }
        names = _names_from_meta(root, "meta", "fine_label_names", 100)
    return RawDataset("cifar100", names, (SIDE, SIDE, 3), "raw", splits)
