"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, and the materialised digits)."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from anytime.data.archives import max_content_bytes, open_maybe_gzip
from anytime.data.dataset import RawDataset, Split
from anytime.data.errors import DataError
from anytime.data.formats.files import find_one

CLASS_NAMES = {
    "digits": [str(d) for d in range(10)],
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
SPLIT_PREFIXES = {"train": ["train"], "test": ["t10k", "test"]}


def _read_exactly(fh: BinaryIO, out: np.ndarray) -> int:
    view, filled = memoryview(out).cast("B"), 0
    while filled < len(view) and (n := fh.readinto(view[filled:])):
        filled += n
    return filled


def read_idx(path: str | Path) -> np.ndarray:
    """Decode one uint8 IDX file (optionally gzipped), checking its size against the header.

    The header is checked against what the file can hold before any memory is set aside, so a header
    declaring 10^9 images or a gzip bomb is refused instead of exhausting memory.
    """
    path = Path(path)
    with open_maybe_gzip(path) as fh:
        magic = fh.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
            raise DataError(f"{path.name}: not a uint8 IDX file (bad magic number)")
        ndim = magic[3]
        shape = fh.read(4 * ndim)
        if len(shape) < 4 * ndim:
            raise DataError(f"{path.name}: truncated IDX header")
        dims = struct.unpack(f">{ndim}I", shape)
        expected = math.prod(dims)
        room = max_content_bytes(path) - (0 if path.suffix == ".gz" else 4 + 4 * ndim)
        if expected > room:
            if path.suffix != ".gz":
                raise DataError(
                    f"{path.name}: truncated or corrupt: header promises {expected} bytes, found {room}"
                )
            raise DataError(
                f"{path.name}: header declares {list(dims)} ({expected} bytes), more than the file can "
                "hold; corrupt or a decompression bomb"
            )
        data = np.empty(dims, dtype=np.uint8)
        found = _read_exactly(fh, data)
        if found != expected:
            raise DataError(
                f"{path.name}: truncated or corrupt: header promises {expected} bytes, found {found}"
            )
        if fh.read(1):
            raise DataError(f"{path.name}: corrupt: more bytes than the header's {expected}")
    return data


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an (uncompressed) IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())


def _read_split(root: Path, split: str) -> Split:
    def patterns(kind: str) -> list[str]:
        return [f"{p}-{kind}-ubyte{s}" for p in SPLIT_PREFIXES[split] for s in ("", ".gz")]

    images_path = find_one(root, patterns("images-idx3"), f"{split} images")
    labels_path = find_one(root, patterns("labels-idx1"), f"{split} labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{images_path.name}/{labels_path.name}: expected [N,H,W] images and [N] labels")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    return Split(labels=labels.astype(np.int64), images=images[..., None])


def read_mnist_like(root: Path, name: str) -> RawDataset:
    """Read ``train-*`` and ``t10k-*`` (or ``test-*``) image/label IDX pairs found under ``root``."""
    splits = {split: _read_split(root, split) for split in ("train", "test")}
    h, w = splits["train"].images.shape[1:3]
    if splits["test"].images.shape[1:3] != (h, w):
        raise DataError(f"train images are {h}x{w} but test images are not")
    return RawDataset(name, CLASS_NAMES[name], (h, w, 1), "raw", splits)
