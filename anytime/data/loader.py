"""``ShardLoader``: a :class:`ShardDataset`'s batches on the training device, ready for the model.

The reader's processes only read and decode; what crosses to the device is the uint8 batch (a quarter
of float32's bytes, from pinned memory on CUDA so the copy is asynchronous), and pad-crop, flip and
normalisation run there on the whole batch (:class:`~anytime.data.transforms.BatchTransform`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from anytime.data.reader import ShardDataset
from anytime.data.transforms import BatchTransform


def augment_seed(seed: int, epoch: int, rank: int) -> int:
    """The device-side augmentation seed of one rank's epoch (independent streams per rank and epoch)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


class ShardLoader:
    """Iterates ``(images float32 [B, C, H, W], labels int64 [B])`` on ``device`` from ``dataset``.

    ``workers``: DataLoader worker processes (0 reads in this process); they persist across epochs, and
    :meth:`set_epoch` (or the dataset's) reaches them through shared memory. Augmentation draws come from
    a generator on ``device`` seeded by (seed, epoch, rank), so an epoch's batches are reproducible.
    ``memory_format``: e.g. ``torch.channels_last`` for the model's input.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        *,
        device: torch.device | str,
        workers: int = 0,
        memory_format: torch.memory_format = torch.contiguous_format,
        multiprocessing_context: str | None = None,
    ) -> None:
        self.dataset, self.device, self.workers = dataset, torch.device(device), workers
        self.transform = BatchTransform(
            tuple(dataset.manifest["mean"]), tuple(dataset.manifest["std"]), dataset.augment, memory_format
        )
        self.loader = DataLoader(
            dataset,
            batch_size=None,  # the dataset yields whole batches
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            multiprocessing_context=multiprocessing_context if workers > 0 else None,
        )
        self.generator = torch.Generator(device=self.device)

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle and augmentation for ``epoch``."""
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dataset.num_batches(self.workers)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        data = self.dataset
        self.generator.manual_seed(augment_seed(data.seed, data.epoch, data.rank))
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield self.transform(images, self.generator), labels.to(self.device, non_blocking=True)
