"""AdaLoss (METHOD.md §4): weights inversely proportional to each head's running-average loss.

Balancing the losses to the same scale minimises, in the limit, the geometric mean of the expected losses
(the gradient of sum_i log l_i is sum_i grad(l_i) / l_i); the final head can be favoured with ``final_extra``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from anytime.weighting.base import (
    WeightingStrategy,
    check_float,
    check_int,
    check_state_tensor,
    register_strategy,
)


def adaloss_weights(lbar: Tensor, gamma: float, final_extra: float) -> Tensor:
    """The reference rule: u = 1/lbar + 1e-8, u /= max, u_K += e, u /= max, w = (1 - gamma) u + gamma.

    An average loss of exactly 0 (a head that fits its minibatches perfectly in float32) counts as 1e-12,
    so it gets the largest weight instead of turning every weight into NaN.
    """
    u = 1.0 / lbar.to(torch.float64).clamp_min(1e-12) + 1e-8
    u = u / u.max()
    u[-1] += final_extra
    u = u / u.max()
    return (1.0 - gamma) * u + gamma


@register_strategy("adaloss")
class AdaLoss(WeightingStrategy):
    """EMA of the per-head losses after every step; weights recomputed from it every ``update_period`` steps.

    The defaults are the papers' run (METHOD.md §4): recomputed every step (U = 1) with ``final_extra`` 0.5,
    not the reference weighting class's own U = 100, e = 0. Weights are 1 (CONST) until the first
    recomputation. Under data-parallel training the loop passes globally averaged losses, so every rank
    holds the same EMA and the same weights.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        gamma: float = 0.07,
        momentum: float = 0.9,
        update_period: int = 1,
        final_extra: float = 0.5,
    ) -> None:
        super().__init__(num_heads)
        self.gamma = check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        self.momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.update_period = check_int("update_period", update_period, low=1)
        self.final_extra = check_float("final_extra", final_extra, low=0.0)
        self.steps = 0
        self.loss_ema = torch.zeros(num_heads, dtype=torch.float64)
        self._weights = torch.ones(num_heads, dtype=torch.float64)

    def weights(self) -> Tensor:
        return self._weights.to(torch.float32)

    def update(self, losses: Tensor, *, validate: bool = True) -> None:
        values = self._check_losses(losses, validate=validate)
        self.steps += 1
        if self.steps == 1:
            self.loss_ema = values
        else:
            self.loss_ema = self.momentum * self.loss_ema + (1.0 - self.momentum) * values
        if self.steps % self.update_period == 0:
            self._weights = adaloss_weights(self.loss_ema, self.gamma, self.final_extra)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "steps": self.steps,
            "loss_ema": self.loss_ema.clone(),
            "weights": self._weights.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = check_int("state_dict['steps']", state.get("steps"), low=0)
        self.loss_ema = check_state_tensor(state, "loss_ema", (self.num_heads,)).to(torch.float64)
        self._weights = check_state_tensor(state, "weights", (self.num_heads,)).to(torch.float64)
