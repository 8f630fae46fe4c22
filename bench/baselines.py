"""The plain-PyTorch baseline every benchmark divides by: the same backbone with only its final head."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anytime.models import AnytimeNet, create_model


def plain_counterpart(model: AnytimeNet) -> AnytimeNet:
    """The same architecture with a single head after the last unit (a plain ResNet of that depth).

    With N units, a prediction period of N puts the only head after unit N-1 (spec §1), so the library builds
    the baseline itself and the comparison isolates exactly the cost of the extra heads.
    """
    num_units = model.head_units[-1] + 1
    plain = create_model(**{**model.config, "period": num_units})
    if plain.num_heads != 1:
        raise RuntimeError(f"expected one head with period={num_units}, got {plain.num_heads}")
    return plain


def plain_train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    amp: bool,
) -> None:
    """The textbook PyTorch step on the final head only: cross-entropy, backward, (scaled) optimiser step.

    No per-head losses, no weighting strategy and no per-step host sync: everything ``anytime.train`` adds
    on top of this is what the training benchmark charges to anytime.
    """
    model.train()
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            loss = F.cross_entropy(model(images)[-1].float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
