"""What training a network will cost, from its config alone, without allocating it.

The network is built on PyTorch's ``meta`` device (shapes only, no memory) and one sample is traced through
it: parameters, the activations a training step keeps for the backward pass, and FLOPs. Planners use this
to refuse a config that cannot fit before any worker tries (and runs out of memory over and over), and so
never build a full network just to plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from anytime.models import AnytimeNet, create_model

FLOAT_BYTES = 4
# Per parameter in training: the weight, its gradient and the optimiser's momentum buffer (a lower bound).
PARAMETER_COPIES = 3
BACKWARD_FLOPS = 2  # a backward pass costs about twice the forward's FLOPs


def meta_model(config: dict[str, Any]) -> AnytimeNet:
    """``create_model(**config)`` on the meta device: every shape, no storage."""
    with torch.device("meta"):
        return create_model(**config)


@dataclass(frozen=True)
class Footprint:
    """A network's training cost per worker: sizes in numbers of floats, FLOPs per sample."""

    params: int
    activations_per_sample: int  # outputs of every leaf module in one sample's forward (kept for backward)
    forward_flops_per_sample: int

    def train_bytes(self, batch: int) -> int:
        """A lower bound of one worker's memory for a training step of ``batch`` samples."""
        return FLOAT_BYTES * (PARAMETER_COPIES * self.params + batch * self.activations_per_sample)

    def step_flops(self, batch: int) -> int:
        """FLOPs of one training step (forward and backward) of ``batch`` samples."""
        return (1 + BACKWARD_FLOPS) * batch * self.forward_flops_per_sample


def footprint(config: dict[str, Any], input_shape: Sequence[int]) -> Footprint:
    """Estimate :class:`Footprint` of the network ``create_model(**config)`` on ``(C, H, W)`` inputs."""
    model = meta_model(config)
    activations = 0

    def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output[0].numel()

    for module in model.modules():
        if next(module.children(), None) is None:
            module.register_forward_hook(count)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape), device="meta"))
    params = sum(p.numel() for p in model.parameters())
    return Footprint(params, activations, counter.get_total_flops())
