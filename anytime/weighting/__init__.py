"""Loss-weighting strategies for anytime networks: static schemes, alternating, AdaLoss, no-regret learners.

Every strategy is a :class:`WeightingStrategy` built by name with :func:`create_strategy`; importing this
package registers the built-in ones.
"""

from anytime.weighting.adaloss import AdaLoss, adaloss_weights
from anytime.weighting.alternating import Alternating, EmphasisStrategy
from anytime.weighting.base import (
    WeightingStrategy,
    create_strategy,
    list_strategies,
    register_strategy,
    strategy_hparams,
    takes_eann_weights,
)
from anytime.weighting.noregret import (
    AverageReward,
    Exp3,
    NoRegretStrategy,
    RandomWeightedMajority,
    relative_rewards,
)
from anytime.weighting.static import NORMALISATIONS, SCHEMES, StaticStrategy, eann_first_head, static_weights

__all__ = [
    "NORMALISATIONS",
    "SCHEMES",
    "AdaLoss",
    "Alternating",
    "AverageReward",
    "EmphasisStrategy",
    "Exp3",
    "NoRegretStrategy",
    "RandomWeightedMajority",
    "StaticStrategy",
    "WeightingStrategy",
    "adaloss_weights",
    "create_strategy",
    "eann_first_head",
    "list_strategies",
    "register_strategy",
    "relative_rewards",
    "static_weights",
    "strategy_hparams",
    "takes_eann_weights",
]
