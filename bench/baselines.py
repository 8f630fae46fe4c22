"""The plain-PyTorch baseline every benchmark divides by: the same backbone with only its final head."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anytime.models import AnytimeNet, create_model
from bench.timing import add_compile_flag


def add_model_args(parser: argparse.ArgumentParser, *, n: int, batch: int) -> None:
    """The CIFAR-shaped ResANN flags shared by the timing scripts (defaults: c=16, 3x32x32, 10 classes)."""
    parser.add_argument(
        "--n", type=int, default=n, help=f"units per group: depth 6n+2 ({n} = ResANN-{6 * n + 2})"
    )
    parser.add_argument("--c", type=int, default=16)
    parser.add_argument("--period", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="CUDA only")
    add_compile_flag(parser)


def model_pair(args: argparse.Namespace) -> tuple[AnytimeNet, AnytimeNet]:
    """The ResANN the flags describe, and its plain one-head counterpart."""
    model = create_model(
        "resann",
        num_classes=args.classes,
        in_channels=args.in_channels,
        n=args.n,
        c=args.c,
        period=args.period,
    )
    plain = plain_counterpart(model)
    if args.compile:
        model.compile()
        plain.compile()
    return model, plain


def plain_counterpart(model: AnytimeNet) -> AnytimeNet:
    """The same architecture with a single head after the last unit (a plain ResNet of that depth).

    With N units, a prediction period of N puts the only head after unit N-1 (METHOD.md §1), so the library
    builds the baseline itself and the comparison isolates exactly the cost of the extra heads.
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
