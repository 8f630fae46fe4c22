"""No-regret layer selection (METHOD.md §5): learn which head to emphasise from relative loss reductions.

Each step one head is sampled and gets the extra weight of alternating (METHOD.md §3) on top of a static base;
instead of B's proportions, the sampling distribution p is learned online from rewards. Learning starts
after the first epoch (``start_epoch(1)``); during epoch 0 p stays uniform. Every learner keeps
p = (1 - gamma) q + gamma / K for a probability vector q, so p_i >= gamma / K always.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor

from anytime.weighting.alternating import EmphasisStrategy
from anytime.weighting.base import check_float, check_int, check_state_tensor, register_strategy

# A per-head loss of exactly 0 counts as this, so a ratio 0/0 means "no reduction" rather than NaN.
_MIN_LOSS = 1e-12


def relative_rewards(losses: Tensor, rho_last: float) -> Tensor:
    """r_k = 1 - l_{k+1} / l_k for k < K-1; the final head gets rho_last * max(0, max_k r_k)."""
    lo = losses.to(torch.float64).clamp_min(_MIN_LOSS)
    rewards = 1.0 - lo[1:] / lo[:-1]
    final = rho_last * rewards.max().clamp_min(0.0)  # a tensor: nothing waits for the device
    return torch.cat([rewards, final.view(1)])


class NoRegretStrategy(EmphasisStrategy):
    """Shared loop: reward from the step's losses, learner update (from epoch 1 on), draw the next head."""

    def __init__(
        self,
        num_heads: int,
        *,
        gamma: float = 0.3,
        rho_last: float = 0.85,
        rho: float = 2.0,
        scheme: str = "const",
        seed: int = 0,
        normalisation: str = "last",
        eann: bool = False,
    ) -> None:
        super().__init__(
            num_heads,
            scheme=scheme,
            rho=rho,
            seed=seed,
            normalisation=normalisation,
            eann=eann,
            min_heads=2,
        )
        self.gamma = check_float("gamma", gamma, low=0.0, high=1.0, low_open=True)
        self.rho_last = check_float("rho_last", rho_last, low=0.0)
        self.log_w = torch.full((num_heads,), -math.log(num_heads), dtype=torch.float64)

    def probabilities(self) -> Tensor:
        """p (float64, K): the learner's distribution q mixed with uniform exploration gamma."""
        q = torch.softmax(self.log_w, dim=0)
        return (1.0 - self.gamma) * q + self.gamma / self.num_heads

    def update(self, losses: Tensor, *, validate: bool = True) -> None:
        values = self._check_losses(losses, validate=validate)
        if self.epoch >= 1:
            self._learn(relative_rewards(values, self.rho_last))
        self._draw(self.probabilities())

    @abstractmethod
    def _learn(self, rewards: Tensor) -> None:
        """Update ``log_w`` (log of the normalised q) from this step's rewards."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_w": self.log_w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_w = check_state_tensor(state, "log_w", (self.num_heads,)).to(torch.float64)


@register_strategy("rwm")
class RandomWeightedMajority(NoRegretStrategy):
    """Full information: every head's reward is seen, w <- w * exp(gamma / 2 * r), normalised.

    Kept in log space so that a run of very negative rewards cannot underflow every weight to 0.
    """

    def _learn(self, rewards: Tensor) -> None:
        self.log_w = torch.log_softmax(self.log_w + 0.5 * self.gamma * rewards, dim=0)


@register_strategy("exp3")
class Exp3(NoRegretStrategy):
    """Bandit: only the emphasised head's reward counts, importance-weighted by 1 / (p_s K).

    After normalising, w is mixed with 0.001 * gamma of uniform (reference implementation), so no head's
    weight collapses to 0 and stays there.
    """

    def _learn(self, rewards: Tensor) -> None:
        emphasised = self._emphasis()  # head s as a mask: indexing by s (or a mask) would read it on the host
        p_s = torch.where(emphasised, self.probabilities(), 0.0).sum()
        r_s = torch.where(emphasised, rewards, 0.0).sum()
        log_w = self.log_w + torch.where(emphasised, self.gamma * r_s / (p_s * self.num_heads), 0.0)
        w = torch.softmax(log_w, dim=0)
        mix = 0.001 * self.gamma
        self.log_w = torch.log((1.0 - mix) * w + mix / self.num_heads)


@register_strategy("avgl")
class AverageReward(NoRegretStrategy):
    """AVG-L: q proportional to an EMA of each head's reward clipped at 0 (plain averaging, no exponent).

    The EMA starts at the first reward seen; while every clipped average is 0, q is uniform.
    """

    def __init__(self, num_heads: int, *, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(num_heads, **kwargs)
        self.momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.reward_ema = torch.zeros(num_heads, dtype=torch.float64)
        self.reward_steps = 0

    def _learn(self, rewards: Tensor) -> None:
        self.reward_steps += 1
        if self.reward_steps == 1:
            self.reward_ema = rewards.clone()
        else:
            self.reward_ema = self.momentum * self.reward_ema + (1.0 - self.momentum) * rewards
        clipped = self.reward_ema.clamp_min(0.0)
        total = clipped.sum()
        q = torch.where(total > 0, clipped / total, torch.full_like(clipped, 1.0 / self.num_heads))
        self.log_w = torch.log(q)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "reward_ema": self.reward_ema.clone(),
            "reward_steps": self.reward_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.reward_ema = check_state_tensor(state, "reward_ema", (self.num_heads,)).to(torch.float64)
        self.reward_steps = check_int("state_dict['reward_steps']", state.get("reward_steps"), low=0)
