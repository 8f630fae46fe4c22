"""scikit-learn's bundled digits, written out as IDX files so they shard like any MNIST-format dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anytime.data.formats.idx import write_idx

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the test split is part of the dataset's definition, not an experiment knob


def materialise_digits(dest: str | Path) -> None:
    """Write the 1797 8x8 digits (pixels 0..16 scaled to 0..255) as a fixed, stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.arange(len(labels))
    train, test = train_test_split(order, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for prefix, idx in (("train", np.sort(train)), ("t10k", np.sort(test))):
        write_idx(dest / f"{prefix}-images-idx3-ubyte", images[idx])
        write_idx(dest / f"{prefix}-labels-idx1-ubyte", labels[idx])
