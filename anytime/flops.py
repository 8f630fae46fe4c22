"""Cost of reaching each head, measured with PyTorch's FLOP counter (METHOD.md §6), not estimated by hand.

One forward pass of one sample runs under ``FlopCounterMode``; its per-module breakdown gives the stem, each
unit and each head separately, so the cumulative cost of head k is stem + units up to it + head k only (the
other heads are not on head k's path at test time). Counts follow the counter's convention: 2 FLOPs per
multiply-add of convolutions and matrix products; normalisation, activations and pooling count as zero.
"""

from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from anytime.models import AnytimeNet


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} is invalid: must be one sample's (channels, height, width), "
            "three integers >= 1"
        )
    return shape


def _module_flops(model: AnytimeNet, input_shape: Sequence[int], until: int | None) -> dict[str, int]:
    """FLOPs of ``model(x, until)`` for one sample, per module path (``"Global"`` is the total)."""
    shape = _check_shape(input_shape)
    parameter = next(model.parameters())
    x = torch.zeros((1, *shape), device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()  # per-sample cost at test time; also keeps BN running statistics untouched
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, until=until)
    finally:
        model.train(was_training)
    root = type(model).__name__
    return {
        ("Global" if name == "Global" else name.removeprefix(root).removeprefix(".")): sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
    }


def forward_flops(model: AnytimeNet, input_shape: Sequence[int], until: int | None = None) -> int:
    """Total FLOPs of one sample's forward through heads ``0..until`` (all heads when ``None``).

    Compare with ``head_costs(model, shape)[-1]`` (the final head alone) to see what the extra heads cost.
    """
    return _module_flops(model, input_shape, until).get("Global", 0)


def head_costs(model: AnytimeNet, input_shape: Sequence[int]) -> list[int]:
    """Cumulative FLOPs per sample to reach each head: stem + units up to it + that head (METHOD.md §6)."""
    flops = _module_flops(model, input_shape, None)
    stem = flops.get("stem", 0)
    units = [flops.get(f"units.{i}", 0) for i in range(len(model.units))]
    heads = [flops.get(f"heads.{k}", 0) for k in range(model.num_heads)]
    accounted = stem + sum(units) + sum(heads)
    if accounted != flops.get("Global", 0):
        raise RuntimeError(
            f"{type(model).__name__} does work outside stem/units/heads "
            f"({flops.get('Global', 0) - accounted} FLOPs); head costs would be wrong"
        )
    return [stem + sum(units[: unit + 1]) + heads[k] for k, unit in enumerate(model.head_units)]
