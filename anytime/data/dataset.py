"""In-memory view of a dataset read from its original format, before sharding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from anytime.data.errors import DataError


@dataclass
class Split:
    """One split: labels plus either decoded uint8 images ``[N, H, W, C]`` or encoded image files.

    Encoded files stay on disk until sharding reads them, so an ImageNet-size folder never has to fit
    in memory at once.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: list[Path] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        count = len(self.images) if self.images is not None else len(self.files or [])
        if count != len(self.labels):
            raise DataError(f"{count} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def image_bytes(self, indices: np.ndarray) -> list[bytes]:
        """Shard cell values for ``indices``: raw pixel bytes (HWC) or the encoded file contents."""
        if self.images is not None:
            return [self.images[i].tobytes() for i in indices]
        assert self.files is not None
        return [self.files[i].read_bytes() for i in indices]


@dataclass
class RawDataset:
    """A dataset's ``train`` and ``test`` splits with the metadata the manifest records."""

    name: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    encoding: Literal["raw", "encoded"]
    splits: dict[str, Split] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split_name, split in self.splits.items():
            if len(split) == 0:
                raise DataError(f"{self.name}: split '{split_name}' has no samples")
            bad = (split.labels < 0) | (split.labels >= len(self.class_names))
            if bad.any():
                raise DataError(
                    f"{self.name}: split '{split_name}' has label {int(split.labels[bad][0])} outside "
                    f"0..{len(self.class_names) - 1}"
                )
