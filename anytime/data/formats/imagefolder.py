"""ImageNet-style folders: ``train/<class>/*.jpg|png`` and ``val/<class>/...`` (or ``test/``).

Images stay encoded (JPEG/PNG bytes go into the shards unchanged); decoding and resizing to
``image_size`` happen in the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anytime.data.dataset import RawDataset, Split
from anytime.data.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _find_root(root: Path) -> Path:
    """The directory holding ``train/``: ``root`` itself or the one folder an archive unpacked into."""
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / "train").is_dir():
            return candidate
    raise DataError("no 'train/' folder of class folders found")


def _read_split(split_dir: Path, classes: list[str]) -> Split:
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise DataError(f"{split_dir.name}/{class_dir.name}: no class '{class_dir.name}' in train/")
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(index[class_dir.name])
    return Split(labels=np.asarray(labels, dtype=np.int64), files=files)


def read_imagefolder(root: Path, *, image_size: int = 224) -> RawDataset:
    """Read class folders; ``val/`` or ``test/`` becomes the test split (validation is carved from train)."""
    base = _find_root(root)
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError("train/: no class folders")
    test_dir = next((base / d for d in ("val", "test") if (base / d).is_dir()), None)
    if test_dir is None:
        raise DataError("no 'val/' or 'test/' folder for the test split")
    splits = {"train": _read_split(base / "train", classes), "test": _read_split(test_dir, classes)}
    return RawDataset("imagefolder", classes, (image_size, image_size, 3), "encoded", splits)
