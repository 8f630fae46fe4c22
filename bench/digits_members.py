"""Small anytime networks trained in seconds on scikit-learn's digits (8x8, 10 classes), written as the train
stage's run directories (``anytime.record``): what the serving tests and ``bench_serving.py`` serve.

Pixels are the dataset's raw 0..16 scaled to uint8 as ``anytime.data.digits`` does; train/val/test splits are
fixed by ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anytime.flops import head_costs
from anytime.metrics import head_errors
from anytime.models import AnytimeNet, create_model
from anytime.record import (
    FORMAT_VERSION,
    DatasetInfo,
    RunRecord,
    save_network,
    save_predictions,
    write_record,
)

SHAPE = (1, 8, 8)


@dataclass(frozen=True)
class DigitsSplits:
    """uint8 images ``[N, 1, 8, 8]`` and int64 labels per split."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def digits_splits(seed: int = 0) -> DigitsSplits:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    order = np.random.default_rng(seed).permutation(len(images))
    cuts = {"train": order[:1100], "val": order[1100:1450], "test": order[1450:]}
    return DigitsSplits(
        {k: images[v] for k, v in cuts.items()}, {k: data.target[v].astype(np.int64) for k, v in cuts.items()}
    )


def _probs(model: AnytimeNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.stack([o.softmax(1) for o in model(x)]).numpy()


def train_members(
    dest: str | Path, depths: tuple[int, ...] = (1, 2), *, width: int = 8, epochs: int = 8, seed: int = 0
) -> Path:
    """Train one ResANN per ``n`` in ``depths`` and write ``dest/members/m<i>/``; returns ``dest/members``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only contend on a shared machine
    try:
        return _train(Path(dest), depths, width, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(dest: Path, depths: tuple[int, ...], width: int, epochs: int, seed: int) -> Path:
    splits = digits_splits(seed)
    train = splits.images["train"].astype(np.float32) / 255.0
    dataset = DatasetInfo(
        name="digits",
        input_shape=SHAPE,
        mean=(float(train.mean()),),
        std=(float(train.std()),),
        class_names=tuple(str(c) for c in range(10)),
    )
    root = dest / "members"
    for i, n in enumerate(depths):
        torch.manual_seed(seed + i)
        config = {"name": "resann", "num_classes": 10, "in_channels": 1, "n": n, "c": width, "period": 1}
        model = create_model(**config)
        record = RunRecord(
            format_version=FORMAT_VERSION,
            name=f"m{i}",
            fingerprint=f"digits-demo-{seed}-{i}",
            model=config,
            weighting={"strategy": "const"},
            epochs=epochs,
            flops=[float(f) for f in head_costs(model, SHAPE)],
            head_units=list(model.head_units),
            val_error=[0.0] * model.num_heads,
            test_error=[0.0] * model.num_heads,
            untrained_heads=0,
            dataset=dataset,
        )
        x = {k: record.normalise(torch.from_numpy(v)) for k, v in splits.images.items()}
        y = {k: torch.from_numpy(v) for k, v in splits.labels.items()}
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(y["train"])).split(64):
                loss = sum(
                    torch.nn.functional.cross_entropy(o, y["train"][batch]) for o in model(x["train"][batch])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        probs = {k: _probs(model, x[k]) for k in ("val", "test")}
        errors = {k: head_errors(probs[k], splits.labels[k])["top1"] for k in probs}
        record = record.model_copy(update={"val_error": errors["val"], "test_error": errors["test"]})
        run = root / record.name
        run.mkdir(parents=True, exist_ok=True)
        save_network(run, model)
        for k in probs:
            save_predictions(run, k, probs[k], splits.labels[k])
        write_record(run, record)
    return root
