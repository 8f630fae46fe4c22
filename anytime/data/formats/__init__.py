"""Readers for each supported dataset's original on-disk format, by dataset name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from anytime.data.dataset import RawDataset
from anytime.data.errors import DataError
from anytime.data.formats.cifar import read_cifar10, read_cifar100
from anytime.data.formats.idx import read_mnist_like
from anytime.data.formats.imagefolder import read_imagefolder
from anytime.data.formats.svhn import read_svhn

Reader = Callable[..., RawDataset]

READERS: dict[str, Reader] = {
    "digits": lambda root, **_: read_mnist_like(root, "digits"),
    "mnist": lambda root, **_: read_mnist_like(root, "mnist"),
    "fashion_mnist": lambda root, **_: read_mnist_like(root, "fashion_mnist"),
    "kmnist": lambda root, **_: read_mnist_like(root, "kmnist"),
    "cifar10": lambda root, **_: read_cifar10(root),
    "cifar100": lambda root, **_: read_cifar100(root),
    "svhn": lambda root, **_: read_svhn(root),
    "imagefolder": lambda root, image_size=224, **_: read_imagefolder(root, image_size=image_size),
}
DATASETS = tuple(READERS)


def read_dataset(
    name: str, root: str | Path, *, image_size: int = 224, label: str | None = None
) -> RawDataset:
    """Read dataset ``name`` from the fetched directory ``root`` (e.g. ``data/raw/<name>``).

    Errors name ``label`` (what the user gave, e.g. the location; default ``root``) and the file under it.
    """
    if name not in READERS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: raw data directory not found (run the fetch stage first)")
    try:
        return READERS[name](root, image_size=image_size)
    except DataError as exc:
        raise DataError(f"{label or root}: {exc}") from None
