"""SVHN cropped digits (``train_32x32.mat``, ``test_32x32.mat``) read with scipy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from anytime.data.dataset import RawDataset, Split
from anytime.data.errors import DataError
from anytime.data.formats.files import find_one


def _read_mat(path: Path) -> Split:
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises many types (ValueError, OSError, TypeError) on bad files
        raise DataError(f"{path.name}: corrupt or truncated .mat file ({exc})") from None
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("_"))
        raise DataError(f"{path.name}: expected variables 'X' and 'y', found {found}")
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"{path.name}: X has shape {x.shape}, expected [H, W, 3, N]")
    if x.shape[3] != len(y):
        raise DataError(f"{path.name}: {x.shape[3]} images but {len(y)} labels")
    y[y == 10] = 0  # SVHN stores digit 0 as label 10
    return Split(labels=y, images=np.ascontiguousarray(x.transpose(3, 0, 1, 2), dtype=np.uint8))


def read_svhn(root: Path) -> RawDataset:
    """Read the train and test ``.mat`` files (the ``extra`` set is not used)."""
    splits = {
        "train": _read_mat(find_one(root, ["train_32x32.mat"], "SVHN train")),
        "test": _read_mat(find_one(root, ["test_32x32.mat"], "SVHN test")),
    }
    h, w = splits["train"].images.shape[1:3]
    return RawDataset("svhn", [str(d) for d in range(10)], (h, w, 3), "raw", splits)
