"""Alternating weights (METHOD.md §3): the static B plus extra weight on one sampled head per step.

The emphasis machinery (which head, how much extra, the seeded generator) is shared with the no-regret
learners of METHOD.md §5, which only change the distribution the head is drawn from.
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
from anytime.weighting.static import static_weights


class EmphasisStrategy(WeightingStrategy):
    """Weights B_i + (sum(B) / rho) * [i = s] for the selected head s; step 1 selects the final head.

    The next head is drawn in :meth:`update` (after the step) from a CPU ``torch.Generator`` seeded with
    ``seed``: every data-parallel rank builds the strategy with the same seed and makes the same calls, so
    all ranks draw the same heads. The generator state is part of ``state_dict``, so a resumed run draws
    the same sequence as an uninterrupted one.

    The draw is ``torch.multinomial``'s own for one sample (argmax of p / E, E ~ Exp(1) from the
    generator), the same heads from the same seed, but with p on the training device: the generator's
    numbers go there, the selected head never comes back to the host.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        scheme: str,
        rho: float,
        seed: int,
        normalisation: str,
        eann: bool,
        j: int | None = None,
        min_heads: int = 1,
    ) -> None:
        super().__init__(num_heads, min_heads=min_heads)
        self.rho = check_float("rho", rho, low=0.0, low_open=True)
        self.seed = check_int("seed", seed, low=0, high=2**64 - 1)
        self.base = torch.tensor(
            static_weights(scheme, num_heads, normalisation, eann, j=j), dtype=torch.float64
        )
        self.extra = float(self.base.sum()) / self.rho
        self.heads = torch.arange(num_heads)
        self._selected = torch.tensor(num_heads - 1)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    @property
    def selected(self) -> int:
        """The head emphasised in the coming step (reading it waits for the device)."""
        return int(self._selected)

    def _emphasis(self) -> Tensor:
        """One-hot (bool, K) of the selected head, on the strategy's device."""
        return self.heads == self._selected

    def weights(self) -> Tensor:
        return torch.where(self._emphasis(), self.base + self.extra, self.base).to(torch.float32)

    def _draw(self, probabilities: Tensor) -> None:
        """Select the head for the next step; exactly one generator draw per call on every rank."""
        noise = torch.empty(self.num_heads, dtype=torch.float64).exponential_(1.0, generator=self.generator)
        if self.device.type == "cuda":
            noise = noise.pin_memory()  # copied without waiting for the GPU
        if self.device.type != "cpu":
            noise = noise.to(self.device, non_blocking=True)
        self._selected = torch.argmax(probabilities / noise)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "selected": self.selected, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        selected = state.get("selected")
        check_int("state_dict['selected']", selected, low=0, high=self.num_heads - 1)
        self._selected = torch.tensor(selected, device=self.device)
        expected = tuple(self.generator.get_state().shape)
        self.generator.set_state(check_state_tensor(state, "generator", expected))


@register_strategy("alternating")
class Alternating(EmphasisStrategy):
    """Sample head s with probability B_s / sum(B): in expectation the proportions of B are kept.

    The default base is SIEVE, as in the papers' alternating ANN (AANN, METHOD.md §3).
    """

    def __init__(
        self,
        num_heads: int,
        *,
        scheme: str = "sieve",
        rho: float = 2.0,
        seed: int = 0,
        normalisation: str = "last",
        eann: bool = False,
        j: int | None = None,
    ) -> None:
        super().__init__(
            num_heads, scheme=scheme, rho=rho, seed=seed, normalisation=normalisation, eann=eann, j=j
        )
        self._probabilities = self.base / self.base.sum()

    def update(self, losses: Tensor, *, validate: bool = True) -> None:
        self._check_losses(losses, validate=validate)
        self._draw(self._probabilities)
